// What both listeners share against hostile or broken clients: time limits, a connection cap, the request guard, raw
// answers for what never becomes a request.

import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { IncomingMessage, ServerOptions } from 'node:http'
import { headLateBehindAnswers } from './admission.js'
import { rawProxyError, sendProxyError } from '../proxy/errors.js'
import type { RequestGuard } from './request-guard.js'

/** Node's default headers timeout; a shorter request timeout lowers it (it must never be the longer one). */
const NODE_HEADERS_TIMEOUT_MS = 60_000
/** How often Node looks for requests past their time; Node's default of 30 s would let a 1 s limit run for 31. */
const MAX_TIMEOUT_CHECK_INTERVAL_MS = 1000
const DROP_WARNING_INTERVAL_MS = 10_000

/** A connection opened this long ago with no answer in progress may be closed to make room for a new one. */
const EVICTABLE_AFTER_MS = 1000

/**
 * Fastify sets `requestTimeout` and `connectionTimeout` to 0 (none) unless told: a client that stalls
 * its body would hold a socket and its buffered bytes for ever. The request timeout covers headers
 * and body; the socket idle timeout stays off, since an answer may take the upstream timeout.
 * `idleTimeoutMs`: a connection must send a whole request head within this of opening, or of its
 * previous answer (Node's headers and keep-alive timeouts): one that sends nothing is closed after
 * seconds, not after the full request timeout.
 */
export function listenerTimeouts (
  requestTimeoutMs: number,
  idleTimeoutMs: number
): { requestTimeout: number; keepAliveTimeout: number; http: ServerOptions } {
  const headersTimeout = Math.min(NODE_HEADERS_TIMEOUT_MS, requestTimeoutMs, idleTimeoutMs)
  return {
    requestTimeout: requestTimeoutMs,
    keepAliveTimeout: idleTimeoutMs,
    http: {
      requestTimeout: requestTimeoutMs,
      headersTimeout,
      connectionsCheckingInterval: Math.min(MAX_TIMEOUT_CHECK_INTERVAL_MS, headersTimeout)
    }
  }
}

/** Fastify's clientErrorHandler: Node's parser refused the request, or the client ran out of time to send it. */
export function answerClientError (error: Error & { code?: string }, socket: Socket): void {
  if (error.code === 'ERR_HTTP_REQUEST_TIMEOUT' && headLateBehindAnswers(socket)) return
  // Something was already answered on this connection (or it is gone): nothing more can be written.
  const response = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage
  if (!socket.writable || response?.headersSent === true || error.code === 'ECONNRESET') {
    socket.destroy()
    return
  }
  const answer =
    error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? rawProxyError(
        'requestTimeout',
        'the request (headers and body) was not received in time (M2M_PROXY_REQUEST_TIMEOUT_MS)'
      )
      : rawProxyError('badRequest', `malformed HTTP request (${error.code ?? 'parse error'})`)
  // Destroyed once written: a stalled client would otherwise keep its half of the connection open.
  socket.end(answer, () => socket.destroy())
}

export interface HardeningOptions {
  /** The Host and origin checks; none on the callback listener, which answers a public name behind an ingress. */
  guard: RequestGuard | undefined
  maxConnections: number
  /** The setting to name in the warning when connections are refused. */
  maxConnectionsSetting: string
  /** A client that takes none of its answer for this long is cut off (M2M_PROXY_REQUEST_TIMEOUT_MS). */
  stalledReaderTimeoutMs: number
  log: FastifyBaseLogger
  /** A CONNECT was answered (without Fastify, so without its hooks). */
  onConnectRefused?: () => void
}

/**
 * At most `maxConnections` open connections. A new one beyond that closes the oldest connection that
 * has had no answer in progress and was opened over a second ago (an idle keep-alive, or one that never
 * sent a whole request head) instead of being refused: idle or stalled connections cannot lock probes
 * and clients out. Only when none is idle is the new one closed, with a warning (at most one per 10 s).
 * Nothing is done per request: a connection's answer in progress is Node's own `_httpMessage`. Returns the open
 * connections (closeStalledReaders looks at the same ones).
 */
function limitConnections (server: FastifyInstance['server'], options: HardeningOptions): ReadonlyMap<Socket, number> {
  const openedAt = new Map<Socket, number>() // in the order they opened: the first evictable is the oldest
  let refusedSinceWarning = 0
  let evictedSinceWarning = 0
  let lastWarningAt = -Infinity
  const warn = (): void => {
    const now = performance.now()
    if (now - lastWarningAt < DROP_WARNING_INTERVAL_MS) return
    if (refusedSinceWarning > 0) {
      options.log.warn(
        { refusedConnections: refusedSinceWarning, maxConnections: options.maxConnections },
        `connections refused: ${options.maxConnectionsSetting} (${options.maxConnections}) are open, each with a request in progress`
      )
    } else {
      options.log.warn(
        { closedIdleConnections: evictedSinceWarning, maxConnections: options.maxConnections },
        `idle connections closed to make room: ${options.maxConnectionsSetting} (${options.maxConnections}) were open`
      )
    }
    refusedSinceWarning = 0
    evictedSinceWarning = 0
    lastWarningAt = now
  }
  server.on('connection', (socket: Socket) => {
    const now = performance.now()
    if (openedAt.size >= options.maxConnections) {
      let evicted = false
      for (const [candidate, opened] of openedAt) {
        const answering = (candidate as Socket & { _httpMessage?: unknown })._httpMessage != null
        if (!answering && now - opened >= EVICTABLE_AFTER_MS) {
          openedAt.delete(candidate)
          candidate.destroy()
          evicted = true
          break
        }
      }
      if (evicted) evictedSinceWarning++
      else {
        refusedSinceWarning++
        warn()
        socket.destroy()
        return
      }
      warn()
    }
    openedAt.set(socket, now)
    socket.once('close', () => {
      openedAt.delete(socket)
    })
  })
  return openedAt
}

/**
 * The bytes of the writes under way (handed to libuv) that the kernel has not taken yet. writableLength and
 * bytesWritten count a write whole until it is done: a large one (a page of callbacks, one chunk read slowly) leaves
 * both unchanged while a client reads it steadily, and only this goes down. Node's own Socket.bufferSize reads it too.
 */
function unsentOfWritesUnderWay (socket: Socket): number {
  return (socket as Socket & { _handle?: { writeQueueSize?: number } | null })._handle?.writeQueueSize ?? 0
}

/**
 * A client that takes none of its answer for `timeoutMs` (it stopped reading: a hung process, a full disk) has its
 * connection closed. No other time limit runs while an answer is written: such a client would hold its slot, and the
 * upstream connection paused behind its answer, for ever, and M2M_PROXY_MAX_IN_FLIGHT of them would stop the proxy.
 * A sweep, nothing per request: a connection is stalled while bytes wait to be sent to it (the kernel's buffers are
 * full) and none have left since the previous look; a connection waiting for ThingSpace has nothing waiting to be sent.
 */
function closeStalledReaders (
  server: FastifyInstance['server'],
  open: ReadonlyMap<Socket, number>,
  timeoutMs: number,
  log: FastifyBaseLogger
): void {
  // Weak: a closed connection's entry goes with it.
  const stalledSince = new WeakMap<Socket, { written: number; waiting: number; queued: number; since: number }>()
  let closedSinceWarning = 0
  let lastWarningAt = -Infinity
  const sweep = (): void => {
    const now = performance.now()
    for (const socket of open.keys()) {
      const waiting = socket.writableLength
      if (waiting === 0) {
        stalledSince.delete(socket)
        continue
      }
      const written = socket.bytesWritten
      const queued = unsentOfWritesUnderWay(socket)
      const seen = stalledSince.get(socket)
      if (seen === undefined || seen.written !== written || seen.waiting !== waiting || seen.queued !== queued) {
        stalledSince.set(socket, { written, waiting, queued, since: now })
      } else if (now - seen.since >= timeoutMs) {
        stalledSince.delete(socket)
        socket.destroy()
        closedSinceWarning++
      }
    }
    if (closedSinceWarning > 0 && now - lastWarningAt >= DROP_WARNING_INTERVAL_MS) {
      log.warn(
        { closedConnections: closedSinceWarning, timeoutMs },
        'connections closed whose clients took none of their answer for M2M_PROXY_REQUEST_TIMEOUT_MS'
      )
      closedSinceWarning = 0
      lastWarningAt = now
    }
  }
  const timer = setInterval(sweep, Math.min(MAX_TIMEOUT_CHECK_INTERVAL_MS, timeoutMs))
  timer.unref()
  server.once('close', () => clearInterval(timer))
}

/** Call before the listener's routes are registered: the guard is an onRequest hook of the root context. */
export function hardenListener (app: FastifyInstance, options: HardeningOptions): void {
  const { guard } = options
  if (guard !== undefined) {
    app.addHook('onRequest', (request, reply, done) => {
      const refusal = guard.check(request.raw.url ?? '', request.headers)
      if (refusal === undefined) {
        done()
        return
      }
      // Answered from the hook: no route runs. The connection is closed too, instead of reading a body nobody wants.
      reply.header('connection', 'close')
      sendProxyError(reply, refusal.kind, refusal.message, refusal.codeSuffix)
    })
  }

  const open = limitConnections(app.server, options)
  closeStalledReaders(app.server, open, options.stalledReaderTimeoutMs, options.log)

  // A client that takes this server for a forward proxy (axios `proxy`, HTTPS_PROXY) would wait for
  // ever on a connection Node closes without a word: tell it what this is.
  app.server.on('connect', (request: IncomingMessage, socket: Duplex) => {
    socket.on('error', () => {
      /* the client went away: nothing to tell it */
    })
    socket.end(
      rawProxyError(
        'methodNotAllowed',
        'CONNECT is not supported: this is a reverse proxy for ThingSpace, not a forward proxy; send requests to it as to ThingSpace (http://<proxy>/api/...)'
      )
    )
    options.log.info({ method: request.method, status: 405 }, 'CONNECT refused')
    options.onConnectRefused?.()
  })
}
