// Reading the inbox from the proxy listener (loopback, like the rest of it): the callbacks of one asynchronous
// request, or the whole stream by cursor; both may wait (long poll) for the first one. Not under /api/: never
// confused with ThingSpace's paths, never forwarded.

import type { FastifyInstance, FastifyReply } from 'fastify'
import { sendProxyError } from '../proxy/errors.js'
import {
  INBOX_UNAVAILABLE_RETRY_AFTER_SECONDS,
  InboxUnavailableError,
  waitForCallbacks,
  type CallbackInbox
} from './inbox.js'

/** Longest a long poll may wait; a client wanting longer asks again. */
export const MAX_WAIT_SECONDS = 60
const MAX_LIMIT = 1000

declare module 'fastify' {
  interface FastifyContextConfig {
    /** A callback read: it may wait long and holds no admission slot (its own cap: M2M_PROXY_CALLBACK_MAX_WAITING). */
    callbackRead?: boolean
  }
}

function integerParameter (raw: unknown, name: string, min: number, max: number, fallback: number): number | string {
  if (raw === undefined) return fallback
  // Up to 16 digits: a fleet's cursors are the Redis clock in ms times 1000 (fleet/redis-inbox.ts).
  const value = typeof raw === 'string' && /^\d{1,16}$/.test(raw) ? Number(raw) : NaN
  if (!Number.isInteger(value) || value < min || value > max) return `${name} must be an integer from ${min} to ${max}`
  return value
}

/** Registers the reads; returns how many wait now (for the metrics). */
export function registerCallbackReads (app: FastifyInstance, inbox: CallbackInbox, maxWaiting: number): () => number {
  let waiting = 0
  /** The long polls under way: ended with what they have when the listener closes, so that they do not hold it. */
  const polls = new Set<AbortController>()
  app.addHook('preClose', (done) => {
    for (const poll of polls) poll.abort()
    done()
  })

  /** Runs a read that may wait, within the cap of waiting reads, until the client leaves at the latest. */
  const longPoll = async <T>(reply: FastifyReply, waitSeconds: number, read: (signal: AbortSignal) => Promise<T>) => {
    if (waitSeconds > 0 && waiting >= maxWaiting) {
      reply.header('retry-after', '1')
      sendProxyError(
        reply,
        'overloaded',
        `${maxWaiting} callback reads are waiting already (M2M_PROXY_CALLBACK_MAX_WAITING); try again shortly`,
        'TooManyWaiting'
      )
      return undefined
    }
    const gone = new AbortController()
    const onClose = (): void => { gone.abort() }
    reply.raw.once('close', onClose)
    polls.add(gone)
    if (waitSeconds > 0) waiting++
    try {
      return await read(gone.signal)
    } catch (error) {
      if (!(error instanceof InboxUnavailableError)) throw error
      reply.header('retry-after', String(INBOX_UNAVAILABLE_RETRY_AFTER_SECONDS))
      sendProxyError(reply, 'fleetStoreUnreachable', `the callbacks cannot be read now: ${error.message}`)
      return undefined
    } finally {
      if (waitSeconds > 0) waiting--
      polls.delete(gone)
      reply.raw.off('close', onClose)
    }
  }

  app.get<{ Params: { requestId: string }; Querystring: Record<string, string> }>(
    '/callbacks/requests/:requestId',
    { config: { callbackRead: true } },
    async (request, reply) => {
      const wait = integerParameter(request.query.wait, 'wait', 0, MAX_WAIT_SECONDS, 0)
      if (typeof wait === 'string') return sendProxyError(reply, 'badRequest', wait)
      const { requestId } = request.params
      const callbacks = await longPoll(reply, wait, async (signal) =>
        await waitForCallbacks(inbox, () => inbox.forRequest(requestId), wait * 1000, signal))
      if (callbacks === undefined) return reply
      if (callbacks.length === 0) return reply.code(204).send()
      return { requestId, callbacks }
    }
  )

  app.get<{ Querystring: Record<string, string> }>(
    '/callbacks',
    { config: { callbackRead: true } },
    async (request, reply) => {
      const wait = integerParameter(request.query.wait, 'wait', 0, MAX_WAIT_SECONDS, 0)
      const after = integerParameter(request.query.after, 'after', 0, Number.MAX_SAFE_INTEGER, 0)
      const limit = integerParameter(request.query.limit, 'limit', 1, MAX_LIMIT, 100)
      for (const value of [wait, after, limit]) {
        if (typeof value === 'string') return sendProxyError(reply, 'badRequest', value)
      }
      const [waitSeconds, cursor, count] = [wait, after, limit] as number[] as [number, number, number]
      const callbacks = await longPoll(reply, waitSeconds, async (signal) =>
        await waitForCallbacks(inbox, () => inbox.after(cursor, count), waitSeconds * 1000, signal))
      if (callbacks === undefined) return reply
      // At-least-once: the client keeps `next` and asks from it; nothing is removed by reading.
      return { callbacks, next: callbacks.at(-1)?.seq ?? cursor }
    }
  )
  return () => waiting
}
