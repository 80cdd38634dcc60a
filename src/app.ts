// Wires the modules into two Fastify listeners (proxy and admin) around one session manager.

import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { Agent, type Dispatcher } from 'undici'
import type { ProxyConfig } from './config/load.js'
import type { Credentials } from './credentials/credentials.js'
import { ThingSpaceAuthClient, type ThingSpaceAuthApi } from './session/auth-client.js'
import { systemClock, type Clock } from './session/clock.js'
import { AuthUnavailableError } from './session/errors.js'
import type { LoginGuard } from './session/login-guard.js'
import { SessionManager } from './session/session-manager.js'
import { sendProxyError } from './proxy/errors.js'
import { proxyPlugin, sendAuthUnavailable } from './proxy/plugin.js'
import { registerAdminRoutes } from './admin/plugin.js'
import { CredentialsFile } from './credentials/credentials-file.js'
import { CredentialOperations } from './credentials/operations.js'
import { watchCredentialsFile } from './credentials/watcher.js'

export interface AppDependencies {
  logger: Logger
  guard: LoginGuard
  clock?: Clock
  /** Replaces the HTTP client of the auth calls (tests). */
  authApi?: ThingSpaceAuthApi
}

export interface ProxyApp {
  proxy: FastifyInstance
  admin: FastifyInstance
  session: SessionManager
  operations: CredentialOperations
  readonly shuttingDown: boolean
  close: () => Promise<void>
}

/** One connection pool for all upstream calls; certificates are always verified. */
export function createUpstreamDispatcher (config: ProxyConfig): Dispatcher {
  return new Agent({
    connect: { rejectUnauthorized: true, timeout: Math.min(config.upstreamTimeoutMs, 10_000) },
    keepAliveTimeout: 4_000
  })
}

export async function buildApp (config: ProxyConfig, credentials: Credentials, deps: AppDependencies): Promise<ProxyApp> {
  const { logger } = deps
  const dispatcher = createUpstreamDispatcher(config)
  const sessionLog = logger.child({ component: 'session' })
  const api = deps.authApi ?? new ThingSpaceAuthClient(config.upstream, dispatcher, config.upstreamTimeoutMs)
  const clock = deps.clock ?? systemClock
  const session = new SessionManager({
    api,
    credentials,
    guard: deps.guard,
    sessionIdleSeconds: config.sessionIdleSeconds,
    clock,
    events: {
      onLogin: (outcome, detail) => {
        if (outcome === 'success') sessionLog.info('logged in to ThingSpace')
        else sessionLog.error({ outcome, consecutiveLoginFailures: detail.consecutiveRejections, maxLoginFailures: config.maxLoginFailures }, `login failed: ${detail.message ?? outcome}`)
      },
      onOAuthFetch: (outcome) => sessionLog[outcome === 'success' ? 'debug' : 'error']({ outcome }, 'OAuth token fetch'),
      onRenewal: (reason) => sessionLog.info({ reason }, 'session renewed'),
      onWarning: (message) => sessionLog.warn(message)
    }
  })

  const proxy = Fastify({
    loggerInstance: logger.child({ listener: 'proxy' }) as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }), // one line per request, written below
    bodyLimit: config.bodyLimitBytes,
    return503OnClosing: true
  })
  proxy.setErrorHandler<FastifyError>((error, request, reply) => {
    if (error instanceof AuthUnavailableError) return sendAuthUnavailable(reply, error)
    const code = (error as { code?: string }).code
    if (code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return sendProxyError(reply, 'bodyTooLarge', `request body larger than ${config.bodyLimitBytes} bytes (M2M_PROXY_BODY_LIMIT_BYTES)`)
    }
    const status = (error as { statusCode?: number }).statusCode
    if (status !== undefined && status >= 400 && status < 500) {
      return sendProxyError(reply, 'badRequest', error.message)
    }
    request.log.error({ err: error }, 'unexpected error')
    return sendProxyError(reply, 'internal', 'internal error of the proxy')
  })
  proxy.setNotFoundHandler((_request, reply) =>
    sendProxyError(reply, 'notFound', 'not proxied: only paths under /api/m2m/ are forwarded'))
  proxy.addHook('onResponse', async (request, reply) => {
    const state = request.proxyState
    request.log.info({
      method: request.method,
      path: request.url.split('?', 1)[0],
      status: reply.statusCode,
      upstreamStatus: state?.upstreamStatus ?? null,
      durationMs: Math.round(reply.elapsedTime * 10) / 10,
      replayed: state?.replayed ?? false
    }, 'request')
  })
  await proxy.register(proxyPlugin, {
    upstream: config.upstream,
    session,
    dispatcher,
    upstreamTimeoutMs: config.upstreamTimeoutMs,
    bodyLimitBytes: config.bodyLimitBytes,
    onReplay: (rejection) => sessionLog.debug({ cause: rejection.cause, reason: rejection.reason }, 'replaying a request after a token rejection')
  })

  const credentialsLog = logger.child({ component: 'credentials' })
  const operations = new CredentialOperations({
    session,
    api,
    file: new CredentialsFile(config.credentialsFile),
    clock,
    events: { onWarning: (message) => credentialsLog.warn(message), onInfo: (message) => credentialsLog.info(message) }
  })
  let shuttingDown = false
  const admin = Fastify({
    loggerInstance: logger.child({ listener: 'admin' }) as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true })
  })
  registerAdminRoutes(admin, { adminToken: config.adminToken, session, operations, isShuttingDown: () => shuttingDown })

  const stopWatching = config.credentialsWatchIntervalMs === 0
    ? () => {}
    : watchCredentialsFile(config.credentialsFile, config.credentialsWatchIntervalMs, () => {
      if (operations.inProgress !== undefined) return // its own write, or an operator action that re-reads anyway
      operations.reload({ login: false }).catch((error: unknown) => {
        // Half-written or invalid files are common mid-edit: keep the old credentials, say why.
        credentialsLog.warn(`credentials file changed but was not loaded: ${error instanceof Error ? error.message : String(error)}`)
      })
    })

  return {
    proxy,
    admin,
    session,
    operations,
    get shuttingDown () { return shuttingDown },
    close: async () => {
      shuttingDown = true
      stopWatching()
      await Promise.allSettled([proxy.close(), admin.close()])
      await dispatcher.close()
    }
  }
}

