// The proxy listener: admission (slots, queue, body memory), one log line and one count per request, and the
// forwarding plugin (proxy/plugin.ts) with the core's session, gate and upstream pool.

import type { Socket } from 'node:net'
import { waitedSpan } from './proxy/spans.js'
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import type { Core } from './core.js'
import { AuthUnavailableError } from './session/errors.js'
import { sendProxyError } from './proxy/errors.js'
import { afterUpstreamExchange, clientGone, proxyPlugin, sendAuthUnavailable } from './proxy/plugin.js'
import { ForwardPrefixes } from './proxy/paths.js'
import { hardenListener } from './listener/hardening.js'
import type { RequestGuard } from './listener/request-guard.js'
import { Admission } from './listener/admission.js'
import { listenerOptions } from './listener/fastify-options.js'
import { DeferredLines } from './listener/deferred-lines.js'
import { registerCallbackReads } from './callbacks/read-routes.js'

/** Holds each request until admitted: a slot, and room for its body's bytes, before its body is read. */
function admitRequests (
  proxy: FastifyInstance,
  core: Core,
  queued: UnsentRequests['queued'],
  onCutOff: (request: FastifyRequest, reply: FastifyReply) => void
): void {
  const { config, metrics } = core
  const admission = new Admission({
    maxInFlight: config.maxInFlight,
    maxQueued: config.maxQueued,
    queueTimeoutMs: config.queueTimeoutMs,
    bodyBudgetBytes: config.bodyMemoryBytes,
    maxPipelined: config.maxPipelined
  })
  metrics.trackAdmission(admission)
  proxy.addHook('onRequest', (request, reply, done) => {
    // A long poll of the callback inbox may wait a minute: it has its own cap instead of a slot.
    if (request.routeOptions.config.callbackRead === true) {
      done()
      return
    }
    const headers = request.raw.headers
    const length = headers['content-length']
    const bodyBytes =
      length !== undefined
        ? Math.min(Number(length) || 0, config.bodyLimitBytes)
        : headers['transfer-encoding'] !== undefined
          ? config.bodyLimitBytes
          : 0
    const admitted = admission.tryAdmit(request.raw.socket, bodyBytes)
    if (admitted !== undefined) {
      releaseWhenDone(request, reply, admitted, config.upstreamTimeoutMs, onCutOff)
      done()
      return
    }
    let release: (() => void) | undefined
    let settled = false // admitted or refused
    let unanswered = false
    const queuedAt = performance.now()
    const cancel = admission.admit(
      request.raw.socket,
      bodyBytes,
      (granted) => {
        settled = true
        queued.delete(reply)
        release = granted
        const waitedMs = performance.now() - queuedAt
        metrics.waits.observe({ stage: 'queue' }, waitedMs / 1000)
        waitedSpan('m2m.queue.wait', waitedMs)
        done()
      },
      (reason, closeConnection) => {
        settled = true
        queued.delete(reply)
        metrics.overloaded.inc({ reason })
        reply.header('retry-after', String(admission.retryAfterSeconds()))
        if (closeConnection) reply.header('connection', 'close')
        sendProxyError(
          reply,
          'overloaded',
          reason === 'queue-full'
            ? `the proxy has ${config.maxQueued} requests waiting already (M2M_PROXY_MAX_QUEUED); try again shortly`
            : `no slot was free within ${config.queueTimeoutMs} ms (M2M_PROXY_MAX_IN_FLIGHT ${config.maxInFlight}, M2M_PROXY_BODY_MEMORY_BYTES ${config.bodyMemoryBytes}); try again shortly`,
          reason === 'queue-full' ? 'QueueFull' : 'QueueTimeout'
        )
      },
      () => {
        // Pipelined after a request answered with Connection: close; Node drops it when the connection closes.
        unanswered = true
        reply.hijack()
      }
    )
    if (unanswered) return
    if (!settled) queued.set(reply, cancel) // still waiting for a slot
    // The answer sent, or the client gone: the slot and the body's bytes are free again (or its place in the queue
    // given up).
    releaseWhenDone(
      request,
      reply,
      () => {
        queued.delete(reply)
        if (release !== undefined) release()
        else cancel()
      },
      config.upstreamTimeoutMs,
      onCutOff
    )
  })
}

/** The releases of a connection's pipelined requests waiting for its close, run by one listener per connection. */
const releasesOnClose = new WeakMap<Socket, Set<() => void>>()

function releasesOf (socket: Socket): Set<() => void> {
  const known = releasesOnClose.get(socket)
  if (known !== undefined) return known
  const releases = new Set<() => void>()
  releasesOnClose.set(socket, releases)
  socket.once('close', () => {
    for (const release of releases) release()
  })
  return releases
}

/**
 * Runs `release` when `socket` closes; returns what stops watching. One 'close' listener per connection, however many
 * requests it pipelined: one each put Node's "possible EventEmitter memory leak" warning in the proxy's output as soon
 * as a client pipelined more than ten.
 */
function onConnectionClose (socket: Socket, release: () => void): () => void {
  const releases = releasesOf(socket)
  releases.add(release)
  return () => { releases.delete(release) }
}

/**
 * Calls `release` once, when the answer is sent or the client is gone (and ThingSpace done with its request:
 * afterUpstreamExchange). A pipelined request's response has no socket until those before it are answered, and Node
 * never closes such a response when the client leaves: the connection's own close is watched for it. `onCutOff`: the
 * answer was begun and never finished (ThingSpace's broke off, or the client left), or the client left before it
 * began: Fastify's onResponse never runs.
 */
function releaseWhenDone (
  request: FastifyRequest,
  reply: FastifyReply,
  release: () => void,
  limitMs: number,
  onCutOff: (request: FastifyRequest, reply: FastifyReply) => void
): void {
  const socket = reply.raw.socket === null ? request.raw.socket : null
  let released = false
  let stopWatching: (() => void) | undefined
  const done = (): void => {
    if (released) return
    released = true
    stopWatching?.()
    // Cut off: the answer begun and not finished, or not begun: the client left while its request waited (a slot, a
    // login, a throttling pause) or was at ThingSpace (aborted or dropped unsent: client-left.ts).
    if (!reply.raw.writableFinished) onCutOff(request, reply)
    afterUpstreamExchange(request, release, limitMs)
  }
  reply.raw.once('close', done)
  if (socket !== null) stopWatching = onConnectionClose(socket, done)
}

/** The requests of a proxy listener not sent to ThingSpace yet, for answerWaitingRequests. */
interface UnsentRequests {
  /** Admitted, and waiting for a login, a renewal, a throttling pause or a rate slot (the forwarding fills it). */
  waiting: Set<FastifyReply>
  /** Waiting in the admission queue, with what gives up their place. */
  queued: Map<FastifyReply, () => void>
}

const unsentRequests = new WeakMap<FastifyInstance, UnsentRequests>()

/**
 * At the end of a shutdown's grace: the requests still waiting to be sent (for a login, a renewal, a throttling pause
 * or a rate slot) get 503 with Retry-After and Connection: close, not a cut connection: ThingSpace never saw them, and
 * the client may send them again safely. Returns how many.
 */
export function answerWaitingRequests (proxy: FastifyInstance): number {
  const unsent = unsentRequests.get(proxy)
  if (unsent === undefined) return 0
  const { waiting, queued } = unsent
  for (const [reply, cancel] of queued) {
    cancel() // its place in the admission queue given up: it is answered here
    waiting.add(reply)
  }
  queued.clear()
  let answered = 0
  for (const reply of waiting) {
    if (reply.sent || clientGone(reply.request, reply)) continue
    reply.header('retry-after', String(SHUTDOWN_RETRY_AFTER_SECONDS)).header('connection', 'close')
    sendProxyError(
      reply,
      'overloaded',
      'the proxy is shutting down: this request was not sent to ThingSpace; send it again',
      'ShuttingDown'
    )
    answered++
  }
  waiting.clear()
  return answered
}

/** Another replica, or this one restarted, is expected to serve within a few seconds. */
const SHUTDOWN_RETRY_AFTER_SECONDS = 5

/** @fastify/reply-from's error for a path or query holding `/..` or `../` once decoded (lib/utils.js, buildURL). */
const REPLY_FROM_DOTS_REFUSAL = 'source/request contain invalid characters'

/** The status logged and counted for a client that left before its answer began (nginx's). */
const CLIENT_CLOSED_REQUEST = 499

/** The request line's fields (docs/reference.md). */
interface RequestLine {
  reqId: string
  method: string
  path: string | undefined
  status: number
  upstreamStatus: number | null
  durationMs: number
  replayed: boolean
  /** The answer was begun and never finished. */
  cutOff?: true
}

export async function buildProxyListener (core: Core, guard: RequestGuard): Promise<FastifyInstance> {
  const { config, metrics } = core
  const log = core.logger.child({ listener: 'proxy' })
  const requestLines = new DeferredLines<RequestLine>(log, 'request')
  /** One log line and one count for every request the proxy listener answers. */
  const recordRequest = (request: FastifyRequest, reply: FastifyReply, cutOff = false): void => {
    const state = request.proxyState
    // A client that left before its answer began: nginx's 499 (client closed request), not the 200 Fastify presets.
    const status = cutOff && !reply.raw.headersSent ? CLIENT_CLOSED_REQUEST : reply.statusCode
    metrics.countRequest(request.method, status)
    if (!config.logRequests) return
    // From the listener's logger: the request's own would be made just for this line.
    const line: RequestLine = {
      reqId: request.id,
      method: request.method,
      path: request.url.split('?', 1)[0],
      status,
      upstreamStatus: state?.upstreamStatus ?? null,
      durationMs: Math.round(reply.elapsedTime * 10) / 10,
      replayed: state?.replayedFor !== undefined
    }
    // Set only then: a spread in the literal would cost every request.
    if (cutOff) line.cutOff = true
    requestLines.add(line)
  }
  const proxy = Fastify({
    ...listenerOptions(config, log),
    bodyLimit: config.bodyLimitBytes,
    return503OnClosing: true,
    // Requests refused before routing answer in the same {"errorCode","errorMessage"} shape as the rest.
    // Fastify runs no hooks for these, so they are logged and counted here.
    frameworkErrors: (error, request, reply) => {
      sendProxyError(reply, 'badRequest', error.message)
      recordRequest(request, reply)
    }
  })
  // First, so that a request's span holds everything done for it (the client's traceparent its parent).
  if (core.tracing !== undefined) await proxy.register(core.tracing.fastifyPlugin())
  hardenListener(proxy, {
    guard,
    maxConnections: config.maxConnections,
    maxConnectionsSetting: 'M2M_PROXY_MAX_CONNECTIONS',
    stalledReaderTimeoutMs: config.requestTimeoutMs,
    log: proxy.log,
    onConnectRefused: () => {
      metrics.countRequest('CONNECT', 405)
    }
  })
  const unsent: UnsentRequests = { waiting: new Set(), queued: new Map() }
  unsentRequests.set(proxy, unsent)
  // After the request guard (hardenListener's onRequest hook).
  // An answer cut off after its headers (ThingSpace's broke off, or its client left) gets its line and count too.
  admitRequests(proxy, core, unsent.queued, (request, reply) => {
    recordRequest(request, reply, true)
  })
  proxy.setErrorHandler<FastifyError>((error, request, reply) => {
    if (error instanceof AuthUnavailableError) return sendAuthUnavailable(reply, error)
    if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return sendProxyError(
        reply,
        'bodyTooLarge',
        `request body larger than ${config.bodyLimitBytes} bytes (M2M_PROXY_BODY_LIMIT_BYTES)`
      )
    }
    if (error.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      return sendProxyError(reply, 'unsupportedMediaType', 'malformed Content-Type header')
    }
    if (error.message === REPLY_FROM_DOTS_REFUSAL) {
      return sendProxyError(
        reply,
        'badRequest',
        "a '..' beside a '/' (a name beginning or ending with '..') cannot be forwarded: @fastify/reply-from, " +
          'which the proxy forwards with, refuses such paths'
      )
    }
    if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) {
      return sendProxyError(reply, 'badRequest', error.message)
    }
    request.log.error({ err: error }, 'unexpected error')
    return sendProxyError(reply, 'internal', 'internal error of the proxy')
  })
  const forwardPrefixes = new ForwardPrefixes(config.forwardPrefixes)
  proxy.setNotFoundHandler((_request, reply) => sendProxyError(reply, 'notFound', forwardPrefixes.notForwardedMessage))
  // While closing, the keep-alive connection each answer leaves idle is closed: Fastify's close() closed the idle
  // ones when it began, and those busy then would otherwise hold the drain until the grace period ran out.
  let closing = false
  proxy.addHook('preClose', (done) => {
    closing = true
    done()
  })
  proxy.addHook('onClose', (_instance, done) => {
    requestLines.write()
    done()
  })
  const closeIdleConnections = (): void => {
    proxy.server.closeIdleConnections()
  }
  proxy.addHook('onResponse', (request, reply, done) => {
    recordRequest(request, reply)
    if (closing) setImmediate(closeIdleConnections)
    done()
  })
  if (core.callbacks !== undefined && config.callbacks !== undefined) {
    const waiting = registerCallbackReads(proxy, core.callbacks.inbox, config.callbacks.maxWaiting)
    metrics.trackCallbacks(core.callbacks.inbox, waiting)
  }
  const sessionLog = core.logger.child({ component: 'session' })
  await proxy.register(proxyPlugin, {
    waiting: unsent.waiting,
    traced: core.tracing !== undefined,
    upstream: config.upstream,
    session: core.session,
    gate: core.gate,
    throttleMaxWaitMs: config.throttleMaxWaitMs,
    onThrottled: (outcome) => {
      metrics.upstreamThrottled.inc({ outcome })
      proxy.log.debug({ outcome }, 'ThingSpace throttled a request: sending paused')
    },
    onOverloaded: () => {
      metrics.overloaded.inc({ reason: 'upstream-throttled' })
    },
    onGateWait: (seconds) => {
      metrics.waits.observe({ stage: 'throttle' }, seconds)
      waitedSpan('m2m.throttle.wait', seconds * 1000)
    },
    dispatcher: core.dispatcher,
    upstreamTimeoutMs: config.upstreamTimeoutMs,
    bodyLimitBytes: config.bodyLimitBytes,
    forwardPrefixes,
    onReplay: (rejection) => {
      metrics.replays.inc({ reason: rejection.cause })
      sessionLog.debug(
        { cause: rejection.cause, reason: rejection.reason },
        'replaying a request after a token rejection'
      )
    },
    onUpstreamResult: metrics.observeUpstream
  })
  return proxy
}
