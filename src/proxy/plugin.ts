// Forwarding under /api/ (or the configured prefixes): tokens attached, expired tokens renewed and the request replayed
// (once per token), errors in ThingSpace's shape.

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import replyFrom, { type FastifyReplyFromHooks } from '@fastify/reply-from'
import type { Dispatcher } from 'undici'
import type { IncomingHttpHeaders } from 'node:http'
import { Readable } from 'node:stream'
import { AuthUnavailableError } from '../session/errors.js'
import type { UpstreamTokens, SessionManager } from '../session/session-manager.js'
import { classifyUpstreamFailure, MAY_HAVE_BEEN_PROCESSED, sendProxyError } from './errors.js'
import { withoutHopByHop, withUpstreamAuth } from './headers.js'
import {
  DEFAULT_FORWARD_RULE,
  inReservedNamespace,
  locallyAnsweredEndpoint,
  RESERVED_NAMESPACE_MESSAGE,
  targetRefusal,
  type ForwardPrefixes
} from './paths.js'
import { peekBody, peekBodyAsync } from './response-body.js'
import { decodeContent } from './content-decoding.js'
import { mayBeTokenRejection, tokenRejectionOf, type TokenRejection } from './upstream-errors.js'
import { answerLocally, registerSessionControllerStubs } from './session-stubs.js'
import { REQUEST_ID_HEADER } from './request-id.js'
import { isThrottledAnswer, type UpstreamGate } from './upstream-gate.js'
import { lazyRequestLoggerWithWarningsAtDebug } from '../logging.js'
import { inSpan, markSpan } from './spans.js'
import { carryExchange, ClientBoundDispatcher, type UpstreamExchange } from './client-left.js'

/**
 * Answers up to this size are read whole: error answers to look for a token rejection, others of
 * declared length to be sent as one buffer. Larger ones stream through.
 */
const MAX_BUFFERED_ANSWER_BYTES = 64 * 1024

/** The methods forwarded (those of ThingSpace's API, and OPTIONS, HEAD); others get the proxy's not-found answer. */
const FORWARDED_METHODS = ['DELETE', 'GET', 'HEAD', 'PATCH', 'POST', 'PUT', 'OPTIONS']

/**
 * @fastify/reply-from's own warning about every failed upstream call, with the error's stack, just
 * before it calls onError, which logs the failure in one line: written at debug instead.
 */
const REPLY_FROM_FAILURE_WARNINGS: ReadonlySet<string> = new Set(['response errored'])

export type TokenProvider = Pick<
  SessionManager,
  'currentTokens' | 'acquireTokens' | 'tokensAfterRejection' | 'replayServed' | 'loginInProgress'
>

export interface ProxyPluginOptions {
  upstream: string
  session: TokenProvider
  dispatcher: Dispatcher
  upstreamTimeoutMs: number
  bodyLimitBytes: number
  /** Path prefixes forwarded, as parsed by the configuration (M2M_PROXY_FORWARD_PREFIXES); default all of /api/. */
  forwardPrefixes?: ForwardPrefixes
  /**
   * ThingSpace's throttling: pauses, the contracted rate; absent: requests are sent at once, and a 429 goes on to the
   * client.
   */
  gate?: UpstreamGate
  /**
   * Longest a request waits for throttling pauses and rate slots, from its arrival, before the client gets ThingSpace's
   * 429 or a 503.
   */
  throttleMaxWaitMs?: number
  /**
   * A throttled answer was sent again after the pause (`retried`) or passed on (`passed-on`: the wait would pass the
   * deadline).
   */
  onThrottled?: (outcome: 'retried' | 'passed-on') => void
  /** A request got 503 Proxy.Overloaded: it would have waited past its deadline. */
  onOverloaded?: () => void
  /** A request waited for a throttling pause or a rate slot this long before it was sent. */
  onGateWait?: (seconds: number) => void
  onReplay?: (rejection: TokenRejection) => void
  /** Each upstream exchange: its status (undefined when it failed) and how long until the headers came. */
  onUpstreamResult?: (statusCode: number | undefined, seconds: number) => void
  /** OpenTelemetry is on (tracing.ts): the client's trace context is replaced by the upstream call's. */
  traced?: boolean
  /**
   * Filled with the requests waiting before they are sent (for a login, a renewal, a throttling pause or a rate slot):
   * a shutdown answers them rather than cutting their connections (answerWaitingRequests in proxy-listener.ts).
   */
  waiting?: Set<FastifyReply>
}

/** Per-request bookkeeping of the forwarding (`clientLeft` and `abortUpstream`: the dispatcher's, client-left.ts). */
export interface ProxyState extends UpstreamExchange {
  tokens: UpstreamTokens
  /** Token kinds already renewed for this request: each at most once, so nothing is replayed twice for one cause. */
  replayedFor: TokenRejection['cause'] | 'both' | undefined
  upstreamStatus: number | undefined
  upstreamStartedAt: number
  /** Until when (the gate's clock) it may wait for throttling pauses and rate slots. */
  deadline: number
  /** When it started waiting for the gate (performance.now()); 0 while it has not waited. */
  gateWaitStartedAt: number
  /** Sent upstream, and neither answered nor failed yet. */
  atUpstream: boolean
  /** Its client left while it was at the upstream: what to do once that exchange ends (afterUpstreamExchange). */
  afterUpstream: (() => void) | undefined
}

/**
 * Called when the client left or its answer is sent. Runs `release` now, or, when the request is still at the upstream
 * (its client left meanwhile), once that exchange ends, which the abort makes at once for a request ThingSpace is
 * working on (client-left.ts). One still waiting in undici's queue for a connection keeps its slot until undici drops
 * it, unsent, when a connection is free: its body is held by undici until then, and slots given back sooner would let
 * such requests pile up there without bound. At most `limitMs` later in any case.
 */
export function afterUpstreamExchange (request: FastifyRequest, release: () => void, limitMs: number): void {
  const state = request.proxyState // undefined outside the forwarding routes (their plugin decorates requests)
  if (state?.atUpstream !== true) {
    release()
    return
  }
  state.clientLeft = true
  let released = false
  const once = (): void => {
    if (released) return
    released = true
    clearTimeout(timer)
    release()
  }
  const timer = setTimeout(once, limitMs)
  timer.unref() // nothing to wait for at exit
  state.afterUpstream = once
  state.abortUpstream?.() // ends the exchange: reply-from's onError, then `once`
}

function upstreamExchangeEnded (state: ProxyState): void {
  state.atUpstream = false
  const then = state.afterUpstream
  state.afterUpstream = undefined
  then?.()
}

declare module 'fastify' {
  interface FastifyRequest {
    proxyState: ProxyState | null
  }
}

interface UpstreamResponse {
  statusCode: number
  headers: IncomingHttpHeaders
  stream: Readable
}

export async function proxyPlugin (app: FastifyInstance, options: ProxyPluginOptions): Promise<void> {
  const { session, gate } = options
  const throttleMaxWaitMs = options.throttleMaxWaitMs ?? 0
  const forwardPrefixes = options.forwardPrefixes ?? DEFAULT_FORWARD_RULE
  const { narrowed, notForwardedMessage } = forwardPrefixes
  app.decorateRequest('proxyState', null)
  // Scoped to this plugin, so to the forwarding routes: every failed upstream call logs one warning.
  app.setChildLoggerFactory(lazyRequestLoggerWithWarningsAtDebug(REPLY_FROM_FAILURE_WARNINGS))

  // Bodies are kept as raw bytes (never parsed and re-serialised) so that a replay is byte-identical.
  app.removeAllContentTypeParsers()
  const asRawBytes = { parseAs: 'buffer', bodyLimit: options.bodyLimitBytes } as const
  const keepBytes = (_request: FastifyRequest, body: Buffer, done: (error: null, body: Buffer) => void): void => {
    done(null, body)
  }
  app.addContentTypeParser('*', asRawBytes, keepBytes)
  // The same for JSON, nearly every body here: Fastify remembers the parser found for a Content-Type,
  // but not when it is the catch-all, which cost a Content-Type parse per request (docs/performance.md).
  app.addContentTypeParser('application/json', asRawBytes, keepBytes)

  registerSessionControllerStubs(app)

  const retryDelay = (): null => null // never retried by reply-from: replays are decided here, once per token kind
  const queryString = (_search: string | undefined, rawUrl: string): string => {
    const queryStart = rawUrl.indexOf('?')
    return queryStart === -1 ? '' : rawUrl.slice(queryStart + 1)
  }
  // The upstream's Connection, Keep-Alive or Transfer-Encoding must not steer the client's connection.
  // The request id is set here and in sendProxyError rather than in an onSend hook, which would run for every answer.
  const rewriteHeaders: NonNullable<FastifyReplyFromHooks['rewriteHeaders']> = (headers, request) => {
    // Called for every answer, even one reply-from then drops because its client aborted (onResponse is not called).
    upstreamExchangeEnded((request as FastifyRequest).proxyState as ProxyState)
    const answered = withoutHopByHop(headers as IncomingHttpHeaders)
    answered[REQUEST_ID_HEADER] = (request as FastifyRequest).id
    return answered
  }
  const rewriteRequestHeaders: NonNullable<FastifyReplyFromHooks['rewriteRequestHeaders']> = (request, headers) => {
    const forwarded = withUpstreamAuth(headers as IncomingHttpHeaders, (request.proxyState as ProxyState).tokens)
    forwarded[REQUEST_ID_HEADER] = request.id
    carryExchange(forwarded, request.proxyState as ProxyState) // for the dispatcher, never sent (client-left.ts)
    // Traced: the upstream call's own span is the parent ThingSpace is told of (undici's instrumentation adds it), the
    // client's traceparent being the parent of the proxy's request span. Untraced, the client's goes on as it came.
    if (options.traced === true) {
      forwarded.traceparent = undefined
      forwarded.tracestate = undefined
    }
    // A body Fastify did not read (GET, HEAD) is not forwarded, so neither is its length (undici skips undefined).
    if (!Buffer.isBuffer(request.body) && forwarded['content-length'] !== undefined) {
      forwarded['content-length'] = undefined
    }
    // reply-from needs a type to send a Buffer as it is (send() gives one), and would declare it: not the client's.
    if (request.headers['content-type'] === undefined) forwarded['content-type'] = undefined
    return forwarded
  }
  const onResponse: NonNullable<FastifyReplyFromHooks['onResponse']> = (anyRequest, anyReply, raw) => {
    // This server is HTTP/1 only; and reply-from hands over {statusCode, headers, stream}, whatever its type says.
    const request = anyRequest as FastifyRequest
    const reply = anyReply as FastifyReply
    const response = raw as unknown as UpstreamResponse
    if (reply.sent) {
      // reply-from refused the answer (a status code HTTP does not have) and onError answered: nobody reads it.
      response.stream.destroy()
      return
    }
    const state = request.proxyState as ProxyState
    state.upstreamStatus = response.statusCode
    options.onUpstreamResult?.(response.statusCode, (performance.now() - state.upstreamStartedAt) / 1000)
    if (gate !== undefined) {
      if (!isThrottledAnswer(response.statusCode, response.headers['retry-after'])) gate.accepted()
      else if (throttledAgain(request, reply, response)) return
    }
    if (state.replayedFor !== undefined && response.statusCode < 400) session.replayServed(state.tokens)
    if (state.replayedFor !== 'both' && mayBeTokenRejection(response.statusCode)) {
      inspectAndReplay(request, reply, response).catch((error: unknown) => {
        request.log.error({ err: error }, 'replay failed')
        if (!reply.sent) sendProxyError(reply, 'internal', 'the proxy failed to replay the request')
      })
      return
    }
    if (isSmallWholeAnswer(request, response)) {
      peekBody(
        response.stream,
        MAX_BUFFERED_ANSWER_BYTES,
        (peeked) => {
          reply.send(peeked.complete ? peeked.body : peeked.stream)
        },
        (error) => {
          sendBrokenAnswer(reply, error)
        }
      )
      return
    }
    reply.send(response.stream)
  }
  const upstreamHost = new URL(options.upstream).host
  const onError: NonNullable<FastifyReplyFromHooks['onError']> = (anyReply, { error }) => {
    const reply = anyReply as FastifyReply
    const state = reply.request.proxyState
    if (state !== null) {
      upstreamExchangeEnded(state)
      // Aborted because its client left (client-left.ts): no ThingSpace failure, and nobody to answer. Its request line
      // is written when the client leaves (cutOff).
      if (state.clientLeft) {
        reply.request.log.debug('the client left: its request to ThingSpace was aborted')
        return
      }
      options.onUpstreamResult?.(undefined, (performance.now() - state.upstreamStartedAt) / 1000)
    }
    const failure = classifyUpstreamFailure(error)
    // A timeout, reset or refused connection is expected on a network: its code says it all, no stack.
    // Anything without a code of its own is not, and keeps its stack.
    if (failure.detail === 'unknown error' || failure.detail.startsWith('FST_')) { reply.request.log.warn({ upstreamError: failure.detail, err: error }, 'upstream request failed') } else reply.request.log.warn({ upstreamError: failure.detail }, 'upstream request failed')
    const message = !failure.sent
      ? `ThingSpace at ${upstreamHost} could not be reached (${failure.detail}): the request was not sent`
      : failure.kind === 'upstreamTimeout'
        ? `ThingSpace did not answer within ${options.upstreamTimeoutMs} ms; ${MAY_HAVE_BEEN_PROCESSED}`
        : failure.detail === INVALID_STATUS_FAILURE
          ? `ThingSpace at ${upstreamHost} answered with an invalid HTTP status code; ${MAY_HAVE_BEEN_PROCESSED}`
          : `the connection to ThingSpace at ${upstreamHost} failed (${failure.detail}); ${MAY_HAVE_BEEN_PROCESSED}`
    // reply-from copies the answer's headers before it checks the status code: none of them belongs on this answer.
    clearHeaders(reply)
    sendProxyError(reply, failure.kind, message)
  }

  /**
   * Written out field by field on purpose: `{ ...shared, body }` over these function-valued fields is
   * slow in V8 and leaves reply-from's option reads megamorphic (measured: docs/performance.md).
   */
  function replyOptions (
    body: Buffer | undefined,
    contentType: string | undefined
  ): FastifyReplyFromHooks & { body: Buffer | undefined; contentType: string | undefined } {
    return {
      timeout: options.upstreamTimeoutMs,
      retryDelay,
      queryString,
      rewriteHeaders,
      rewriteRequestHeaders,
      onResponse,
      onError,
      body,
      contentType
    }
  }
  const bodilessReplyOptions = replyOptions(undefined, undefined)

  /**
   * A throttled answer (not processed, in ThingSpace's words): every request pauses, and this one is sent
   * again after the pause when its deadline allows (true); its body is buffered, so the same bytes go again.
   */
  function throttledAgain (request: FastifyRequest, reply: FastifyReply, response: UpstreamResponse): boolean {
    const gated = gate as UpstreamGate
    const pauseMs = gated.throttled(response.headers['retry-after'])
    if (gated.now() + pauseMs >= (request.proxyState as ProxyState).deadline) {
      options.onThrottled?.('passed-on')
      return false
    }
    options.onThrottled?.('retried')
    response.stream.resume() // the throttled answer is dropped
    clearHeaders(reply)
    forward(request, reply)
    return true
  }

  /**
   * Sends the request upstream now, or once a throttling pause is over and the rates give it a slot, or
   * answers 503 when that would pass its deadline. A request that waited for a pause asks for its slot
   * only then, and one whose slot a new pause overtook asks again: the waiting requests never all go at once.
   */
  function forward (request: FastifyRequest, reply: FastifyReply): FastifyReply {
    if (gate === undefined) return send(request, reply)
    const pauseLeftMs = gate.pauseLeftMs()
    if (pauseLeftMs > 0) return later(request, reply, pauseLeftMs, forward)
    const delay = gate.delayFor((request.proxyState as ProxyState).deadline)
    if (delay === 0) return sendSpaced(request, reply)
    if (typeof delay === 'number') return later(request, reply, delay, sendUnlessPaused)
    delay.then(
      (waitMs) => later(request, reply, waitMs, sendUnlessPaused),
      (error: unknown) => {
        request.log.error({ err: error }, 'the upstream gate failed')
        if (!reply.sent) sendProxyError(reply, 'internal', 'the proxy failed to schedule the request')
      }
    )
    return reply
  }

  /** Sends once the gate's spacing allows (at once, unless slot timers fired late together). */
  function sendSpaced (request: FastifyRequest, reply: FastifyReply): FastifyReply {
    const spacingMs = (gate as UpstreamGate).spacingLeftMs()
    if (spacingMs === 0) return send(request, reply)
    return waitThen(request, reply, spacingMs, sendUnlessPaused)
  }

  function sendUnlessPaused (request: FastifyRequest, reply: FastifyReply): FastifyReply {
    return (gate as UpstreamGate).pauseLeftMs() > 0 ? forward(request, reply) : sendSpaced(request, reply)
  }

  /**
   * Runs `next` after `waitMs` (-1: refused, 503) unless that passes the request's deadline (a client gone by then is
   * not sent: send()).
   */
  function later (
    request: FastifyRequest,
    reply: FastifyReply,
    waitMs: number,
    next: (request: FastifyRequest, reply: FastifyReply) => FastifyReply
  ): FastifyReply {
    const gated = gate as UpstreamGate
    if (waitMs < 0 || gated.now() + waitMs > (request.proxyState as ProxyState).deadline) {
      options.onOverloaded?.()
      reply.header('retry-after', String(Math.max(1, Math.ceil(gated.pauseLeftMs() / 1000))))
      return sendProxyError(
        reply,
        'overloaded',
        `ThingSpace is throttling requests and this one could not be sent within ${throttleMaxWaitMs} ms (M2M_PROXY_THROTTLE_MAX_WAIT_MS)`,
        'UpstreamThrottled'
      )
    }
    if (waitMs === 0) return next(request, reply)
    const state = request.proxyState as ProxyState
    if (state.gateWaitStartedAt === 0) {
      state.gateWaitStartedAt = performance.now()
      dropBodyIfClientLeaves(request, reply)
    }
    return waitThen(request, reply, waitMs, next)
  }

  /** Runs `next` in `waitMs`, the request counted meanwhile among those waiting to be sent (options.waiting). */
  function waitThen (
    request: FastifyRequest,
    reply: FastifyReply,
    waitMs: number,
    next: (request: FastifyRequest, reply: FastifyReply) => FastifyReply
  ): FastifyReply {
    options.waiting?.add(reply)
    setTimeout(() => {
      options.waiting?.delete(reply)
      next(request, reply)
    }, waitMs)
    return reply
  }

  /** Awaits `work` (a login, a renewal), the request counted meanwhile among those waiting to be sent. */
  async function whileWaiting<T> (reply: FastifyReply, work: () => Promise<T>): Promise<T> {
    options.waiting?.add(reply)
    try {
      return await work()
    } finally {
      options.waiting?.delete(reply)
    }
  }

  function send (request: FastifyRequest, reply: FastifyReply): FastifyReply {
    // A client that left while this request waited (a login, a throttling pause, a rate slot) is not sent: it will
    // send it again, and ThingSpace would do it twice.
    if (reply.sent || clientGone(request, reply)) return reply // answered by a shutdown meanwhile, or gone
    // The path (checked by targetRefusal) goes to reply-from, the query as received through
    // queryString: reply-from would decode a query with a stray % and fail.
    const state = request.proxyState as ProxyState
    state.upstreamStartedAt = performance.now()
    state.atUpstream = true
    state.abortUpstream = undefined // that of an earlier exchange (a replay's first), ended
    if (state.gateWaitStartedAt !== 0) {
      options.onGateWait?.((state.upstreamStartedAt - state.gateWaitStartedAt) / 1000)
      state.gateWaitStartedAt = 0
    }
    const queryStart = request.url.indexOf('?')
    const path = queryStart === -1 ? request.url : request.url.slice(0, queryStart)
    const body = request.body
    // Always given explicitly, even empty: left to reply-from, a Buffer would be re-encoded as JSON.
    if (Buffer.isBuffer(body)) {
      return reply.from(path, replyOptions(body, request.headers['content-type'] ?? 'application/octet-stream'))
    }
    return reply.from(path, bodilessReplyOptions)
  }

  async function inspectAndReplay (
    request: FastifyRequest,
    reply: FastifyReply,
    response: UpstreamResponse
  ): Promise<void> {
    let peeked
    try {
      peeked = await peekBodyAsync(response.stream, MAX_BUFFERED_ANSWER_BYTES)
    } catch (error) {
      sendBrokenAnswer(reply, error)
      return
    }
    if (!peeked.complete) {
      reply.send(peeked.stream)
      return
    }
    const state = request.proxyState as ProxyState
    // A compressed answer is read decoded and, unless it is a refusal, sent on as it came (peeked.body).
    const contentEncoding = response.headers['content-encoding']
    const readable =
      contentEncoding === undefined || peeked.body.length === 0
        ? peeked.body
        : await decodedForInspection(request, contentEncoding, peeked.body)
    const rejection = readable === undefined ? undefined : tokenRejectionOf(response.statusCode, readable)
    // A gateway refusal of the bearer hides the state of the session: when both expired together, the
    // replay after the OAuth renewal meets the expired session and may be replayed once more for it.
    if (rejection === undefined || state.replayedFor === rejection.cause) {
      sendAsReceived(reply, response, peeked.body)
      return
    }
    let renewed: UpstreamTokens | undefined
    try {
      renewed = await whileWaiting(reply, async () => await inSpan(
        'm2m.session.renew',
        { 'm2m.renewal.cause': rejection.cause, 'm2m.login.joined': session.loginInProgress },
        async () => await session.tokensAfterRejection(state.tokens, rejection.cause, rejection.reason)
      ))
    } catch (error) {
      if (!(error instanceof AuthUnavailableError)) throw error
      if (reply.sent) return
      clearHeaders(reply)
      sendAuthUnavailable(reply, error)
      return
    }
    if (reply.sent) return
    if (renewed === undefined) {
      // the session was refused right after its login: not renewed again so soon, ThingSpace's answer goes on
      sendAsReceived(reply, response, peeked.body)
      return
    }
    state.tokens = renewed
    state.replayedFor = state.replayedFor === undefined ? rejection.cause : 'both'
    markSpan('m2m.replay', { 'm2m.replay.cause': rejection.cause })
    options.onReplay?.(rejection)
    clearHeaders(reply) // those of the refused answer must not leak into the replay's
    forward(request, reply)
  }

  /**
   * The route: refusals and the session calls answered here, everything else forwarded with the tokens. The hot path
   * stays synchronous: with both tokens cached there is no await and no promise. Returning undefined tells Fastify that
   * reply-from answers; the slow path returns the reply, which Fastify awaits (its errors go to the error handler).
   */
  function handler (request: FastifyRequest, reply: FastifyReply): undefined | Promise<FastifyReply> {
    // Traversal and other malformed targets first, under all of /api/: refused whatever they spell, saying why.
    const refusal = targetRefusal(request.url)
    if (refusal !== undefined) {
      if (refusal.code === 'OutsidePrefixes') sendProxyError(reply, 'notFound', notForwardedMessage)
      else sendProxyError(reply, 'notFound', refusal.message, refusal.code)
      return undefined
    }
    // Other spellings of the session and token calls (`logout/`, `logout;x`, `LOGOUT`, `token/`, ...) than
    // the router's: a lenient upstream would take them for the real ones. Answered locally before the
    // configured prefixes are applied, so that narrowing them never turns a client's login into a 404.
    const localEndpoint = locallyAnsweredEndpoint(request.url)
    if (localEndpoint !== undefined) {
      answerLocally(localEndpoint, reply)
      return undefined
    }
    // Deny by default: nothing else in the session controller's namespace or at the token endpoint, in any spelling.
    if (inReservedNamespace(request.url)) {
      sendProxyError(reply, 'notFound', RESERVED_NAMESPACE_MESSAGE, 'SessionNamespace')
      return undefined
    }
    if (narrowed && !forwardPrefixes.admits(request.url)) {
      sendProxyError(reply, 'notFound', notForwardedMessage)
      return undefined
    }
    const tokens = session.currentTokens()
    if (tokens === undefined) return authenticateThenForward(request, reply)
    startForwarding(request, reply, tokens)
    return undefined
  }

  async function authenticateThenForward (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
    dropBodyIfClientLeaves(request, reply)
    let tokens: UpstreamTokens
    try {
      // Traced (tracing.ts): the wait for the login, and whether it joined one already under way (single flight).
      tokens = await whileWaiting(reply, async () =>
        await inSpan('m2m.session.acquire', { 'm2m.login.joined': session.loginInProgress }, async () =>
          await session.acquireTokens()))
    } catch (error) {
      if (reply.sent) return reply
      throw error
    }
    if (reply.sent) return reply // answered by a shutdown meanwhile
    return startForwarding(request, reply, tokens)
  }

  function startForwarding (request: FastifyRequest, reply: FastifyReply, tokens: UpstreamTokens): FastifyReply {
    request.proxyState = {
      tokens,
      replayedFor: undefined,
      upstreamStatus: undefined,
      upstreamStartedAt: 0,
      deadline: gate === undefined ? 0 : gate.now() + throttleMaxWaitMs,
      gateWaitStartedAt: 0,
      atUpstream: false,
      afterUpstream: undefined,
      clientLeft: false,
      abortUpstream: undefined
    }
    return forward(request, reply)
  }

  // reply-from, the engine of @fastify/http-proxy, under routes of our own: the handler has checked the target
  // (targetRefusal) before anything is sent; @fastify/http-proxy's route would resolve it again with three URL
  // objects and parse its query on every request, which cost 9 to 10% more CPU per request (npm run bench,
  // docs/performance.md).
  await app.register(replyFrom, {
    base: options.upstream,
    // The core's undici Agent (shared pool, TLS verification on), told when a client leaves (client-left.ts).
    undici: new ClientBoundDispatcher(options.dispatcher) as never,
    disableRequestLogging: true
  })
  // All of /api: the handler decides, by the configured prefixes, what is forwarded.
  for (const url of ['/api', '/api/*']) app.route({ method: FORWARDED_METHODS, url, handler })
}

/**
 * The client left: its response was destroyed with the connection or, for a pipelined request whose response has no
 * socket yet (Node never closes those), the connection itself is gone. (request.raw.destroyed is no sign: Node sets it
 * once a body is read, the client still there.)
 */
export function clientGone (request: FastifyRequest, reply: FastifyReply): boolean {
  return reply.raw.destroyed || request.raw.socket?.destroyed === true
}

/**
 * A buffered answer as ThingSpace sent it: Fastify gives a Buffer without a Content-Type one of its own
 * (application/octet-stream), a stream it leaves alone.
 */
function sendAsReceived (reply: FastifyReply, response: UpstreamResponse, body: Buffer): void {
  reply.send(response.headers['content-type'] === undefined ? Readable.from([body]) : body)
}

/**
 * While a request waits (a login, a throttling pause), a client that leaves takes its body with it: the admission
 * budget counts its bytes free from then (proxy-listener.ts), so they must not stay held until the wait ends.
 */
function dropBodyIfClientLeaves (request: FastifyRequest, reply: FastifyReply): void {
  reply.raw.once('close', () => {
    if (!reply.sent) request.body = undefined
  })
}

/**
 * Small answers of declared length are read whole and sent as one buffer: cheaper than piping a
 * stream through (stream, end-of-stream and listener bookkeeping per answer), and an answer cut
 * off upstream becomes a clean 502 instead of a cut connection. Without a Content-Type, Fastify
 * would add one to a buffer, so those stream.
 */
function isSmallWholeAnswer (request: FastifyRequest, response: UpstreamResponse): boolean {
  const length = Number(response.headers['content-length'])
  return (
    request.method !== 'HEAD' &&
    length > 0 &&
    length <= MAX_BUFFERED_ANSWER_BYTES &&
    response.headers['content-type'] !== undefined
  )
}

/**
 * A compressed error answer decoded to be read, never past MAX_BUFFERED_ANSWER_BYTES (a few KB of
 * gzip can expand to gigabytes); undefined when it cannot be (unknown coding such as `compress`,
 * corrupt, or too large): then it is not a refusal the proxy can see, and goes on untouched.
 */
async function decodedForInspection (
  request: FastifyRequest,
  contentEncoding: string | string[],
  body: Buffer
): Promise<Buffer | undefined> {
  const result = await decodeContent(body, contentEncoding, MAX_BUFFERED_ANSWER_BYTES)
  if (result.decoded) return result.body
  request.log.warn(
    { contentEncoding, reason: result.reason },
    'compressed error answer not decoded: passed on without looking for a token refusal'
  )
  return undefined
}

/** reply-from's error for an answer whose status code Fastify refuses to send (outside 100 to 599). */
const INVALID_STATUS_FAILURE = 'FST_REPLY_FROM_BAD_GATEWAY'

/** The upstream answer broke off (reset, or shorter than its Content-Length) before any of it was sent on. */
function sendBrokenAnswer (reply: FastifyReply, error: unknown): void {
  const detail = (error as { code?: string }).code ?? 'connection closed'
  reply.request.log.warn({ upstreamError: detail }, 'upstream answer broke off')
  if (reply.sent) return
  clearHeaders(reply) // those of the broken answer, Content-Length included
  // A stall in the middle of the answer is a timeout like one before it (504), as docs/reference.md says.
  const kind = classifyUpstreamFailure(error).kind
  sendProxyError(reply, kind, `ThingSpace's answer broke off before its end (${detail}); ${MAY_HAVE_BEEN_PROCESSED}`)
}

function clearHeaders (reply: FastifyReply): void {
  for (const name of Object.keys(reply.getHeaders())) reply.removeHeader(name)
}

export function sendAuthUnavailable (reply: FastifyReply, error: AuthUnavailableError): FastifyReply {
  reply.header('retry-after', String(Math.max(1, error.retryAfterSeconds)))
  return sendProxyError(
    reply,
    'authUnavailable',
    `the proxy cannot authenticate to ThingSpace: ${error.message}`,
    reasonCode(error.reason)
  )
}

function reasonCode (reason: AuthUnavailableError['reason']): string {
  return reason
    .split('-')
    .map((word) => word.charAt(0).toUpperCase() + word.slice(1))
    .join('')
}
