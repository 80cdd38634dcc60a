// Wires the modules into two Fastify listeners (proxy and admin) around one session manager.

import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import { setTimeout as sleep } from 'node:timers/promises'
import type { ProxyConfig } from './config/load.js'
import type { Credentials } from './credentials/credentials.js'
import { CredentialsFile } from './credentials/credentials-file.js'
import { CredentialOperations, OperationError } from './credentials/operations.js'
import { watchCredentialsFile } from './credentials/watcher.js'
import { PasswordAge } from './credentials/password-age.js'
import { DAY_MS, RotationScheduler } from './credentials/rotation-schedule.js'
import { PasswordSync } from './fleet/password-sync.js'
import { FleetLedger } from './fleet/ledger.js'
import { ThingSpaceAuthClient, type ThingSpaceAuthApi } from './session/auth-client.js'
import { systemClock, type Clock } from './clock.js'
import { AuthUnavailableError } from './session/errors.js'
import type { LoginGuard } from './session/login-guard.js'
import { SessionManager } from './session/session-manager.js'
import { sendProxyError } from './proxy/errors.js'
import { proxyPlugin, sendAuthUnavailable } from './proxy/plugin.js'
import { ForwardPrefixes } from './proxy/paths.js'
import { UpstreamGate } from './proxy/upstream-gate.js'
import { shareSendingWithFleet } from './fleet/shared-sending.js'
import { REQUEST_ID_HEADER, requestIdFrom } from './proxy/request-id.js'
import { auditLine, registerAdminRoutes } from './admin/plugin.js'
import { ProxyMetrics } from './metrics.js'
import { createUpstreamDispatcher } from './upstream.js'
import { lazyRequestLogger } from './logging.js'
import { answerClientError, hardenListener, listenerTimeouts } from './listener/hardening.js'
import { RequestGuard } from './listener/request-guard.js'
import { Admission } from './listener/admission.js'
import type { FleetStore } from './fleet/store.js'
import { messageOf } from './errors.js'

export interface AppDependencies {
  logger: Logger
  guard: LoginGuard
  clock?: Clock
  /** Replaces the HTTP client of the auth calls (tests). */
  authApi?: ThingSpaceAuthApi
  /** Replaces the Redis fleet store that config.fleet would open (tests). */
  fleetStore?: FleetStore
}

export interface ProxyApp {
  proxy: FastifyInstance
  admin: FastifyInstance
  session: SessionManager
  operations: CredentialOperations
  metrics: ProxyMetrics
  /** Fleet mode: the store the replicas share; undefined in single-process mode. */
  fleetStore: FleetStore | undefined
  readonly shuttingDown: boolean
  /** Graceful stop: readiness 503, no new connections, in-flight requests finish (bounded), session logged out. */
  shutdown: () => Promise<void>
  /** Immediate stop (tests, a failed start): the same steps, no grace, no logout. */
  close: () => Promise<void>
}

export const LOGOUT_ON_SHUTDOWN_TIMEOUT_MS = 3_000
/** Largest admin request body; every admin route takes a few bytes of JSON at most. */
const ADMIN_BODY_LIMIT_BYTES = 64 * 1024
/** Margin of the fleet's login lock beyond a login and its OAuth token fetch, each bounded by M2M_PROXY_UPSTREAM_TIMEOUT_MS. */
const FLEET_LOCK_MARGIN_MS = 5_000
/** The rotation lock covers a catch-up, a token fetch, the login lock's wait and hold, and the login that verifies: a few login locks. */
const ROTATION_LOCK_TTL_FACTOR = 4

/** The login lock outlives what one login can take (OAuth token fetch, then the login), so that it never expires under a live holder. */
export function fleetLockTtlMs (upstreamTimeoutMs: number): number {
  return 2 * upstreamTimeoutMs + FLEET_LOCK_MARGIN_MS
}

function fastifyOptions (config: ProxyConfig, logger: Logger, listener: string) {
  return {
    loggerInstance: logger.child({ listener }) as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }), // the proxy writes one line per request itself
    childLoggerFactory: lazyRequestLogger,
    genReqId: (request: { headers: Record<string, string | string[] | undefined> }) => requestIdFrom(request.headers[REQUEST_ID_HEADER]),
    requestIdHeader: false as const,
    ...listenerTimeouts(config.requestTimeoutMs, config.idleConnectionTimeoutMs),
    clientErrorHandler: answerClientError
  }
}

export async function buildApp (config: ProxyConfig, credentials: Credentials, deps: AppDependencies): Promise<ProxyApp> {
  const { logger } = deps
  const dispatcher = createUpstreamDispatcher(config)
  const sessionLog = logger.child({ component: 'session' })
  const api = deps.authApi ?? new ThingSpaceAuthClient(config.upstream, dispatcher, config.upstreamTimeoutMs)
  const clock = deps.clock ?? systemClock
  const credentialsLog = logger.child({ component: 'credentials' })
  const credentialsFile = new CredentialsFile(config.credentialsFile)
  const passwordAge = PasswordAge.open(config.stateDir, credentials.password, clock.now(), (message) => credentialsLog.warn(message))
  // Read only when scraped, by then `session` and `operations` below exist.
  const metrics = new ProxyMetrics(() => session, {
    upstreamPaused: () => gate.paused,
    upstreamLearnedRate: () => gate.learnedRate,
    admission: () => admission,
    fleet: config.fleet !== undefined || deps.fleetStore !== undefined,
    passwordAgeSeconds: () => operations.passwordStatus().ageSeconds ?? undefined,
    clock
  })
  const fleetLog = logger.child({ component: 'fleet' })
  // Connects in the background: until it does, no login is sent (fleet-store-unreachable) and start-up waits a little (server.ts).
  // The Redis client is loaded in fleet mode only: in single-process mode it was a third of the start-up.
  const fleetStore = deps.fleetStore ?? (config.fleet === undefined
    ? undefined
    : new (await import('./fleet/redis-store.js')).RedisFleetStore({
      url: config.fleet.redisUrl,
      fleetKey: config.fleet.fleetKey,
      keyPrefix: config.fleet.keyPrefix,
      username: credentials.username,
      log: (level, message) => fleetLog[level](message)
    }))
  // What this replica verified of the fleet, on disk: Redis alone can never set it back.
  const ledger = fleetStore === undefined ? undefined : FleetLedger.open(config.stateDir, credentials.username)
  const session = new SessionManager({
    api,
    credentials,
    guard: deps.guard,
    sessionIdleSeconds: config.sessionIdleSeconds,
    clock,
    fleet: fleetStore === undefined
      ? undefined
      // No login before this replica holds the fleet's newest password generation.
      : { store: fleetStore, ledger, lockTtlMs: fleetLockTtlMs(config.upstreamTimeoutMs), beforeLogin: async (): Promise<void> => { await passwordSync?.catchUp() } },
    events: {
      // Failures carry their cause (status, errorCode, networkError, tlsError): codes only, never a body or a secret.
      onLogin: (outcome, detail) => {
        metrics.logins.inc({ outcome })
        if (outcome === 'success') sessionLog.info('logged in to ThingSpace')
        else sessionLog.error({ outcome, ...detail.cause, consecutiveLoginFailures: detail.consecutiveRejections, maxLoginFailures: config.maxLoginFailures }, `login failed: ${detail.message ?? outcome}`)
      },
      onOAuthFetch: (outcome, cause) => {
        metrics.oauthFetches.inc({ outcome })
        if (outcome === 'success') sessionLog.debug({ outcome }, 'OAuth token fetch')
        else sessionLog.error({ outcome, ...cause }, `OAuth token fetch failed${outcome === 'rejected' ? ': the app key or secret was rejected' : ''}`)
      },
      onLogoutFailed: (detail) => sessionLog.warn({ ...detail.cause, replacedSession: detail.replaced }, detail.message),
      onBackgroundRetry: (delayMs, cause) => sessionLog.info({ delayMs, cause }, cause === 'fleet-store-unreachable'
        ? 'not ready while the fleet store cannot be reached: logging in again in the background once it answers'
        : 'not ready while ThingSpace is failing: logging in again in the background'),
      onRenewal: (reason) => {
        metrics.renewals.inc({ reason })
        sessionLog.info({ reason }, 'session renewed')
      },
      onWarning: (message) => sessionLog.warn(message),
      onFleetLoginAvoided: () => {
        metrics.fleetLoginsAvoided.inc()
        sessionLog.info('took up the session another replica logged in: no login sent')
      },
      onFleetLockWait: () => {
        metrics.fleetLockWaits.inc()
        sessionLog.debug('another replica holds the login lock: waiting for its login')
      }
    }
  })

  // Set once the rotation schedule exists (below): a generation's change time moves its next check.
  let rescheduleRotation = (): void => {}
  const passwordSync: PasswordSync | undefined = fleetStore === undefined || ledger === undefined
    ? undefined
    : new PasswordSync({
      store: fleetStore,
      ledger,
      session,
      file: credentialsFile,
      localChangedAt: () => passwordAge.changedAt,
      events: {
        onInfo: (message) => credentialsLog.info(message),
        onWarning: (message) => credentialsLog.warn(message),
        onError: (message) => credentialsLog.error(message),
        onGeneration: (generation) => {
          passwordAge.observe(generation.password, clock.now(), generation.changedAt, 'fleet')
          rescheduleRotation()
        }
      }
    })
  // Subscribed before anything awaits: the store's first 'connected' must not be missed.
  passwordSync?.start()

  /** One log line and one count for every request the proxy listener answers. */
  const recordRequest = (request: FastifyRequest, reply: FastifyReply): void => {
    const state = request.proxyState
    metrics.countRequest(request.method, reply.statusCode)
    // From the listener's logger: the request's own would be made just for this line.
    proxy.log.info({
      reqId: request.id,
      method: request.method,
      path: request.url.split('?', 1)[0],
      status: reply.statusCode,
      upstreamStatus: state?.upstreamStatus ?? null,
      durationMs: Math.round(reply.elapsedTime * 10) / 10,
      replayed: state?.replayedFor !== undefined
    }, 'request')
  }
  // Both listeners: a Host from the allow-list, no cross-site browser requests, origin-form targets only.
  const guard = new RequestGuard([config.host, config.adminHost, ...config.allowedHosts])
  const proxy = Fastify({
    ...fastifyOptions(config, logger, 'proxy'),
    bodyLimit: config.bodyLimitBytes,
    return503OnClosing: true,
    // Requests refused before routing answer in the same {"errorCode","errorMessage"} shape as the rest.
    // Fastify runs no hooks for these, so they are logged and counted here.
    frameworkErrors: (error, request, reply) => {
      sendProxyError(reply, 'badRequest', error.message)
      recordRequest(request, reply)
    }
  })
  hardenListener(proxy, {
    guard,
    maxConnections: config.maxConnections,
    maxConnectionsSetting: 'M2M_PROXY_MAX_CONNECTIONS',
    log: proxy.log,
    onConnectRefused: () => { metrics.countRequest('CONNECT', 405) }
  })
  // After the request guard: a request waits here for a slot (and its body's bytes) before its body is read.
  const admission = new Admission({
    maxInFlight: config.maxInFlight,
    maxQueued: config.maxQueued,
    queueTimeoutMs: config.queueTimeoutMs,
    bodyBudgetBytes: config.bodyMemoryBytes,
    maxPipelined: config.maxPipelined
  })
  proxy.addHook('onRequest', (request, reply, done) => {
    const headers = request.raw.headers
    const length = headers['content-length']
    const bodyBytes = length !== undefined ? Math.min(Number(length) || 0, config.bodyLimitBytes) : headers['transfer-encoding'] !== undefined ? config.bodyLimitBytes : 0
    const admitted = admission.tryAdmit(request.raw.socket, bodyBytes)
    if (admitted !== undefined) {
      // The answer sent, or the client gone: the slot and the body's bytes are free again. A response
      // closes once: `on` spares the wrapper `once` would add to every request.
      reply.raw.on('close', admitted)
      done()
      return
    }
    let release: (() => void) | undefined
    const queuedAt = performance.now()
    const cancel = admission.admit(request.raw.socket, bodyBytes, (granted) => {
      release = granted
      metrics.waits.observe({ stage: 'queue' }, (performance.now() - queuedAt) / 1000)
      done()
    }, (reason) => {
      metrics.overloaded.inc({ reason })
      reply.header('retry-after', String(admission.retryAfterSeconds()))
      sendProxyError(reply, 'overloaded', reason === 'queue-full'
        ? `the proxy has ${config.maxQueued} requests waiting already (M2M_PROXY_MAX_QUEUED); try again shortly`
        : `no slot was free within ${config.queueTimeoutMs} ms (M2M_PROXY_MAX_IN_FLIGHT ${config.maxInFlight}, M2M_PROXY_BODY_MEMORY_BYTES ${config.bodyMemoryBytes}); try again shortly`,
      reason === 'queue-full' ? 'QueueFull' : 'QueueTimeout')
    })
    // The answer sent, or the client gone: the slot and the body's bytes are free again (or its place in the queue given up).
    reply.raw.once('close', () => {
      if (release !== undefined) release()
      else cancel()
    })
  })
  proxy.setErrorHandler<FastifyError>((error, request, reply) => {
    if (error instanceof AuthUnavailableError) return sendAuthUnavailable(reply, error)
    if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return sendProxyError(reply, 'bodyTooLarge', `request body larger than ${config.bodyLimitBytes} bytes (M2M_PROXY_BODY_LIMIT_BYTES)`)
    }
    if (error.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return sendProxyError(reply, 'unsupportedMediaType', 'malformed Content-Type header')
    if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) {
      return sendProxyError(reply, 'badRequest', error.message)
    }
    request.log.error({ err: error }, 'unexpected error')
    return sendProxyError(reply, 'internal', 'internal error of the proxy')
  })
  const forwardPrefixes = new ForwardPrefixes(config.forwardPrefixes)
  proxy.setNotFoundHandler((_request, reply) => sendProxyError(reply, 'notFound', forwardPrefixes.notForwardedMessage))
  proxy.addHook('onResponse', (request, reply, done) => {
    recordRequest(request, reply)
    // While draining, the keep-alive connection this answer leaves idle is closed (see shutdown).
    if (shuttingDown) setImmediate(closeIdleProxyConnections)
    done()
  })
  const gate = new UpstreamGate({ maxPauseMs: config.throttleMaxPauseMs, ratePerSecond: config.upstreamRateLimit })
  // Its store's listeners end with the store (close below).
  if (fleetStore !== undefined) shareSendingWithFleet(gate, fleetStore, { onWarning: (message) => fleetLog.warn(message), onInfo: (message) => fleetLog.info(message) })
  await proxy.register(proxyPlugin, {
    upstream: config.upstream,
    session,
    gate,
    throttleMaxWaitMs: config.throttleMaxWaitMs,
    onThrottled: (outcome) => {
      metrics.upstreamThrottled.inc({ outcome })
      proxy.log.debug({ outcome }, 'ThingSpace throttled a request: sending paused')
    },
    onOverloaded: () => { metrics.overloaded.inc({ reason: 'upstream-throttled' }) },
    onGateWait: (seconds) => { metrics.waits.observe({ stage: 'throttle' }, seconds) },
    dispatcher,
    upstreamTimeoutMs: config.upstreamTimeoutMs,
    bodyLimitBytes: config.bodyLimitBytes,
    forwardPrefixes,
    onReplay: (rejection) => {
      metrics.replays.inc({ reason: rejection.cause })
      sessionLog.debug({ cause: rejection.cause, reason: rejection.reason }, 'replaying a request after a token rejection')
    },
    onUpstreamResult: metrics.observeUpstream
  })

  const operations = new CredentialOperations({
    session,
    api,
    file: credentialsFile,
    clock,
    passwordAge,
    rotationDays: config.passwordRotationDays,
    fleet: passwordSync === undefined || fleetStore === undefined || ledger === undefined
      ? undefined
      : { store: fleetStore, sync: passwordSync, ledger, rotationLockTtlMs: ROTATION_LOCK_TTL_FACTOR * fleetLockTtlMs(config.upstreamTimeoutMs) },
    events: {
      onWarning: (message) => credentialsLog.warn(message),
      onInfo: (message) => credentialsLog.info(message),
      onResetFailed: (detail) => credentialsLog.error(detail.cause, detail.message),
      onError: (message) => credentialsLog.error(message)
    }
  })
  let shuttingDown = false
  const closeIdleProxyConnections = (): void => { proxy.server.closeIdleConnections() }
  const admin = Fastify({
    ...fastifyOptions(config, logger, 'admin'),
    // Admin bodies are a few bytes of JSON: connections held by stalled uploads cost little memory.
    bodyLimit: ADMIN_BODY_LIMIT_BYTES,
    // Fastify runs no hooks for these: answered and audited here.
    frameworkErrors: (error, request, reply) => {
      sendProxyError(reply, 'badRequest', error.message)
      auditLine(request, reply)
    }
  })
  hardenListener(admin, { guard, maxConnections: config.adminMaxConnections, maxConnectionsSetting: 'M2M_PROXY_ADMIN_MAX_CONNECTIONS', log: admin.log })
  registerAdminRoutes(admin, { adminToken: config.adminToken, session, operations, metrics, isShuttingDown: () => shuttingDown })
  const rotationSchedule = new RotationScheduler({
    days: config.passwordRotationDays,
    firstCheckDelayMs: config.passwordRotationFirstCheckMs,
    clock,
    operations,
    events: { onInfo: (message) => credentialsLog.info(message), onWarning: (message) => credentialsLog.warn(message) }
  })
  rotationSchedule.start()
  rescheduleRotation = () => rotationSchedule.changeTimeUpdated()
  if (config.passwordRotationDays > 0) {
    credentialsLog.info({ rotationDays: config.passwordRotationDays, changedAt: new Date(passwordAge.changedAt).toISOString(), changedAtSource: passwordAge.source },
      `scheduled password rotation every ${config.passwordRotationDays} day(s)${passwordAge.source === 'first-seen' ? '; the password\'s age is counted from when the proxy first saw it' : ''}` +
      `; next due ${new Date(passwordAge.changedAt + config.passwordRotationDays * DAY_MS).toISOString()}${fleetStore === undefined ? '' : ' (or as the fleet\'s password generation says)'}`)
  }

  const stopWatching = config.credentialsWatchIntervalMs === 0
    ? () => {}
    : watchCredentialsFile(config.credentialsFile, config.credentialsWatchIntervalMs, () => {
      if (operations.inProgress !== undefined) return // its own write, or an operator action that re-reads anyway
      operations.reload({ login: false }).catch((error: unknown) => {
        if (error instanceof OperationError && error.logged) return
        // Half-written or invalid files are common mid-edit: keep the old credentials, say why.
        credentialsLog.warn(`credentials file changed but was not loaded: ${messageOf(error)}`)
      })
    })

  /** ThingSpace's session logged out at shutdown (M2M_PROXY_LOGOUT_ON_SHUTDOWN), within LOGOUT_ON_SHUTDOWN_TIMEOUT_MS. */
  const logOutUpstream = async (): Promise<void> => {
    if (fleetStore !== undefined) {
      // The other replicas use the same session: logging it out would cost the fleet a login.
      logger.info({ loggedOut: false }, 'upstream session not logged out: it is shared by the fleet')
      return
    }
    const outcome = await Promise.race([
      session.endSession().then((ended) => ended ? 'loggedOut' as const : 'noSession' as const, () => 'failed' as const),
      sleep(LOGOUT_ON_SHUTDOWN_TIMEOUT_MS, 'timedOut' as const)
    ])
    if (outcome === 'loggedOut') logger.info({ loggedOut: true }, 'upstream session logged out')
    else if (outcome === 'noSession') logger.info({ loggedOut: false }, 'no upstream session to log out')
    else if (outcome === 'failed') logger.warn({ loggedOut: false }, 'upstream session not logged out: the logout failed') // its cause: the session's warning before
    else logger.warn({ loggedOut: false, timeoutMs: LOGOUT_ON_SHUTDOWN_TIMEOUT_MS }, 'upstream session not logged out: ThingSpace did not answer in time')
  }

  /**
   * The one way down, for close() and shutdown() alike: no background task any more, readiness 503, the proxy listener
   * drained for `graceMs` (0: its connections closed at once), the session logged out when asked, then the rest closed.
   */
  const stop = async (graceMs: number, logOut: boolean): Promise<void> => {
    shuttingDown = true // readiness answers 503 from now on
    stopWatching()
    rotationSchedule.stop()
    passwordSync?.stop()
    session.close() // no background login any more
    // Stop accepting; Fastify waits for requests in flight and closes the keep-alive connections idle
    // now. Those busy now would stay open once answered, holding the drain until the grace period
    // ran out: the onResponse hook closes each as its answer is sent.
    const drained = proxy.close().then(() => true)
    const inTime = graceMs > 0 && await Promise.race([drained, sleep(graceMs, false)])
    if (!inTime) {
      if (graceMs > 0) logger.warn({ graceMs }, 'requests still in flight after the grace period: closing their connections')
      // A closing Node server no longer checks M2M_PROXY_REQUEST_TIMEOUT_MS: a stalled upload would hold the close for ever.
      proxy.server.closeAllConnections()
      await drained
    }
    if (logOut) await logOutUpstream()
    // Probes and scrapes are answered until here; whatever is still open on the admin listener is closed with it.
    const adminClosed = admin.close()
    admin.server.closeAllConnections()
    await adminClosed
    await fleetStore?.close()
    await dispatcher.destroy()
  }

  return {
    proxy,
    admin,
    session,
    operations,
    metrics,
    fleetStore,
    get shuttingDown () { return shuttingDown },
    shutdown: async () => { await stop(config.shutdownGraceMs, config.logoutOnShutdown) },
    close: async () => { await stop(0, false) }
  }
}
