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
import { adminPlugin } from './admin/plugin.js'

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
  const session = new SessionManager({
    api: deps.authApi ?? new ThingSpaceAuthClient(config.upstream, dispatcher, config.upstreamTimeoutMs),
    credentials,
    guard: deps.guard,
    sessionIdleSeconds: config.sessionIdleSeconds,
    clock: deps.clock ?? systemClock,
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

  const admin = Fastify({
    loggerInstance: logger.child({ listener: 'admin' }) as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true })
  })
  admin.setNotFoundHandler((_request, reply) => sendProxyError(reply, 'notFound', 'no such admin route'))
  await admin.register(adminPlugin, { isReady: () => session.ready })

  return {
    proxy,
    admin,
    session,
    close: async () => {
      await Promise.allSettled([proxy.close(), admin.close()])
      await dispatcher.close()
    }
  }
}

