// What both listeners share against hostile or broken clients: time limits, a connection cap, the request guard, raw answers for what never becomes a request.

import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { IncomingMessage, ServerOptions } from 'node:http'
import { rawProxyError, sendProxyError } from '../proxy/errors.js'
import type { RequestGuard } from './request-guard.js'

/** Node's default headers timeout; a shorter request timeout lowers it (it must never be the longer one). */
const NODE_HEADERS_TIMEOUT_MS = 60_000
/** How often Node looks for requests past their time; Node's default of 30 s would let a 1 s limit run for 31. */
const MAX_TIMEOUT_CHECK_INTERVAL_MS = 1000
const DROP_WARNING_INTERVAL_MS = 10_000

/**
 * Fastify sets `requestTimeout` and `connectionTimeout` to 0 (none) unless told: a client that stalls
 * its body would hold a socket and its buffered bytes for ever. The request timeout covers headers
 * and body; the socket idle timeout stays off, since an answer may take the upstream timeout.
 */
export function listenerTimeouts (requestTimeoutMs: number): { requestTimeout: number, http: ServerOptions } {
  return {
    requestTimeout: requestTimeoutMs,
    http: {
      requestTimeout: requestTimeoutMs,
      headersTimeout: Math.min(NODE_HEADERS_TIMEOUT_MS, requestTimeoutMs),
      connectionsCheckingInterval: Math.min(MAX_TIMEOUT_CHECK_INTERVAL_MS, requestTimeoutMs)
    }
  }
}

/** Fastify's clientErrorHandler: Node's parser refused the request, or the client ran out of time to send it. */
export function answerClientError (error: Error & { code?: string }, socket: Socket): void {
  // Something was already answered on this connection (or it is gone): nothing more can be written.
  const response = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage
  if (!socket.writable || response?.headersSent === true || error.code === 'ECONNRESET') {
    socket.destroy()
    return
  }
  const answer = error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
    ? rawProxyError('requestTimeout', 'the request (headers and body) was not received in time (M2M_PROXY_REQUEST_TIMEOUT_MS)')
    : rawProxyError('badRequest', `malformed HTTP request (${error.code ?? 'parse error'})`)
  // Destroyed once written: a stalled client would otherwise keep its half of the connection open.
  socket.end(answer, () => socket.destroy())
}

export interface HardeningOptions {
  guard: RequestGuard
  maxConnections: number
  /** The setting to name in the warning when connections are refused. */
  maxConnectionsSetting: string
  log: FastifyBaseLogger
  /** A CONNECT was answered (without Fastify, so without its hooks). */
  onConnectRefused?: () => void
}

/** Call before the listener's routes are registered: the guard is an onRequest hook of the root context. */
export function hardenListener (app: FastifyInstance, options: HardeningOptions): void {
  const { guard } = options
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

  const server = app.server
  server.maxConnections = options.maxConnections
  let droppedSinceWarning = 0
  let lastWarningAt = -Infinity
  server.on('drop', () => {
    droppedSinceWarning++
    const now = performance.now()
    if (now - lastWarningAt < DROP_WARNING_INTERVAL_MS) return
    options.log.warn({ refusedConnections: droppedSinceWarning, maxConnections: options.maxConnections },
      `connections refused: ${options.maxConnectionsSetting} (${options.maxConnections}) are open`)
    droppedSinceWarning = 0
    lastWarningAt = now
  })

  // A client that takes this server for a forward proxy (axios `proxy`, HTTPS_PROXY) would wait for
  // ever on a connection Node closes without a word: tell it what this is.
  server.on('connect', (request: IncomingMessage, socket: Duplex) => {
    socket.on('error', () => { /* the client went away: nothing to tell it */ })
    socket.end(rawProxyError('methodNotAllowed', 'CONNECT is not supported: this is a reverse proxy for ThingSpace, not a forward proxy; send requests to it as to ThingSpace (http://<proxy>/api/...)'))
    options.log.info({ method: request.method, status: 405 }, 'CONNECT refused')
    options.onConnectRefused?.()
  })
}
