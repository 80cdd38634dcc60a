// Admin listener: open health and readiness probes, token-protected operator routes, one audit line per action.

import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest, RouteOptions } from 'fastify'
import { ConfigError } from '../config/errors.js'
import { OperationError, type CredentialOperations, type OperationErrorKind } from '../credentials/operations.js'
import { AuthUnavailableError, UpstreamAuthError } from '../session/errors.js'
import type { SessionManager } from '../session/session-manager.js'
import { sendProxyError, type ProxyErrorKind } from '../proxy/errors.js'
import { sendAuthUnavailable } from '../proxy/plugin.js'
import { checkAdminAuthorization } from './auth.js'
import type { Registry } from 'prom-client'
import { FleetViewUnavailableError, type FleetView } from '../fleet/replicas.js'
import { registerCallbackAdminRoutes, type CallbackAdminOptions } from './callback-routes.js'
import type { RecentEvent } from './recent-events.js'
import { STATUS_PAGE_CSP, statusPage } from './status-page.js'

export interface AdminPluginOptions {
  adminToken: string | undefined
  session: SessionManager
  operations: CredentialOperations
  /** The registry GET /metrics serves (metrics.ts). */
  metrics: { readonly registry: Pick<Registry, 'contentType' | 'metrics'> }
  isShuttingDown: () => boolean
  /** Every replica of the fleet (core.ts); this one alone in single-process mode. */
  fleetView: () => Promise<FleetView>
  /** POST, GET and DELETE /admin/callbacks (callback-routes.ts). */
  callbacks: CallbackAdminOptions
  /** The last session events, newest first (recent-events.ts). */
  recentEvents: () => RecentEvent[]
  /** Shown on the status page. */
  version: string
}

const OPERATION_ERRORS: Record<OperationErrorKind, ProxyErrorKind> = {
  busy: 'conflict',
  'not-rewritable': 'conflict',
  'unchanged-while-rejected': 'conflict',
  'credentials-rejected': 'conflict',
  'upstream-failed': 'upstreamUnreachable',
  'not-saved': 'internal',
  'fleet-unavailable': 'authUnavailable'
}

function outcomeOf (statusCode: number): string {
  if (statusCode < 400) return 'ok'
  return (
    { 401: 'unauthorized', 403: 'forbidden', 404: 'not-found', 405: 'method-not-allowed', 409: 'conflict' }[
      statusCode
    ] ?? (statusCode < 500 ? 'rejected' : 'failed')
  )
}

/** Probes and metrics answer without a token and are not audited, unless refused before their route (Host check). */
const PROBE = { probe: true }

declare module 'fastify' {
  interface FastifyContextConfig {
    probe?: boolean
  }
}

/**
 * Configures the admin listener itself (not an encapsulated plugin): its parsers, error handler and audit hook are the
 * server's.
 */
export function registerAdminRoutes (app: FastifyInstance, options: AdminPluginOptions): void {
  const { session } = options

  // Empty bodies are fine (curl -X POST); anything sent must be JSON.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'string', bodyLimit: 64 * 1024 }, (_request, body, done) => {
    const text = String(body)
    if (text.trim() === '') return done(null, undefined)
    try {
      done(null, JSON.parse(text))
    } catch {
      done(Object.assign(new Error('the request body is not valid JSON'), { statusCode: 400 }), undefined)
    }
  })

  app.setErrorHandler<FastifyError>((error, request, reply) => {
    if (error instanceof OperationError) return sendProxyError(reply, OPERATION_ERRORS[error.kind], error.message)
    if (error instanceof AuthUnavailableError) return sendAuthUnavailable(reply, error)
    if (error instanceof ConfigError) return sendProxyError(reply, 'badRequest', error.message)
    if (error instanceof FleetViewUnavailableError) {
      return sendProxyError(reply.header('retry-after', '5'), 'fleetStoreUnreachable', error.message)
    }
    // ThingSpace's own status (a logout it refused) is not this request's fault: 502, with what ThingSpace said.
    if (error instanceof UpstreamAuthError) {
      return sendProxyError(reply, error.statusCode === undefined ? 'upstreamUnreachable' : 'upstreamRefused', error.message)
    }
    if (error.statusCode === 413) return sendProxyError(reply, 'bodyTooLarge', error.message)
    if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) {
      return sendProxyError(reply, 'badRequest', error.message)
    }
    request.log.error({ err: error }, 'admin route failed')
    return sendProxyError(reply, 'internal', 'internal error of the proxy')
  })
  app.setNotFoundHandler((_request, reply) => sendProxyError(reply, 'notFound', 'no such admin route'))

  // Every call is audited, refused or not, whatever route it matched: only probes that reached their route are left
  // out.
  app.addHook('onResponse', (request, reply, done) => {
    const probeAnswered =
      request.routeOptions.config.probe === true && (reply.statusCode === 200 || reply.statusCode === 503)
    if (!probeAnswered) auditLine(request, reply)
    done()
  })

  app.get('/healthz', { config: PROBE }, async () => ({ status: 'ok' }))

  // Open like the probes: no label carries a secret.
  app.get('/metrics', { config: PROBE }, async (_request, reply) => {
    reply.header('content-type', options.metrics.registry.contentType)
    return await options.metrics.registry.metrics()
  })

  // The status page's shell: no data in it (the page reads the admin routes with the token typed in), so open like the
  // probes; the Host and cross-site checks apply as everywhere.
  const page = statusPage(options.version)
  app.get('/status', { config: PROBE }, async (_request, reply) => {
    return await reply
      .header('content-type', 'text/html; charset=utf-8')
      .header('content-security-policy', STATUS_PAGE_CSP)
      .header('x-content-type-options', 'nosniff')
      .header('x-frame-options', 'DENY')
      .header('referrer-policy', 'no-referrer')
      .header('cache-control', 'no-store')
      .send(page)
  })

  app.get('/readyz', { config: PROBE }, async (_request, reply: FastifyReply) => {
    const reason = options.isShuttingDown() ? 'shutting-down' : session.notReadyReason()
    if (reason === undefined) return { ready: true, state: session.snapshot().state }
    return reply.code(503).send({ ready: false, reason, state: session.snapshot().state })
  })

  // Encapsulated: its onRequest hook guards every route registered inside, and its 404 answers, as
  // matched by the router (decoded path): no spelling of a path can reach a handler without the token.
  void app.register(
    async (operatorRoutes) => {
      operatorRoutes.addHook('onRequest', (request, reply, done) => {
        const refusal = adminAuthorizationRefusal(request.headers.authorization, options.adminToken)
        if (refusal === undefined) {
          done()
          return
        }
        if (refusal.challenge !== undefined) reply.header('www-authenticate', refusal.challenge)
        reply.header('connection', 'close') // a refused caller's body is not read
        sendProxyError(reply, refusal.kind, refusal.message, refusal.codeSuffix)
      })
      operatorRoutes.setNotFoundHandler((_request, reply) => sendProxyError(reply, 'notFound', 'no such admin route'))
      const allowedMethods = new Map<string, Set<string>>()
      const collectMethods = (route: RouteOptions & { routePath: string }): void => {
        const methods = allowedMethods.get(route.routePath) ?? new Set<string>()
        for (const method of [route.method].flat()) methods.add(method)
        if (methods.has('GET')) methods.add('HEAD') // Fastify adds a HEAD route to each GET route
        allowedMethods.set(route.routePath, methods)
      }
      operatorRoutes.addHook('onRoute', collectMethods)
      registerOperatorRoutes(operatorRoutes, options)
      answerOtherMethods(operatorRoutes, new Map(allowedMethods))
    },
    { prefix: '/admin' }
  )
}

/**
 * The other methods of each operator route answer 405 with Allow. As routes inside the guarded
 * plugin, the token is checked first (the plugin's onRequest hook runs before the route's own), so
 * only a caller holding it learns which routes exist; the body is never read.
 */
function answerOtherMethods (app: FastifyInstance, allowedMethods: ReadonlyMap<string, ReadonlySet<string>>): void {
  for (const [routePath, allowed] of allowedMethods) {
    const allow = [...allowed].join(', ')
    app.route({
      method: app.supportedMethods.filter((method) => !allowed.has(method)),
      url: routePath,
      onRequest: (_request, reply, done) => {
        reply.header('allow', allow).header('connection', 'close')
        sendProxyError(reply, 'methodNotAllowed', `method not allowed on this admin route; allowed: ${allow}`)
        done()
      },
      handler: async () => undefined // never reached: answered in onRequest
    })
  }
}

function registerOperatorRoutes (
  app: FastifyInstance,
  { session, operations, fleetView, callbacks, recentEvents }: AdminPluginOptions
): void {
  // The session's state, and the password's (generation, age, whether it is saved to the file): never a secret.
  app.get('/session', async () => ({ ...session.snapshot(), password: operations.passwordStatus() }))

  app.post('/session/start', async () => {
    await session.restartSession('admin')
    return session.snapshot()
  })

  app.post('/session/end', async () => ({ ended: await session.endSession() }))

  app.post('/password/rotate', async () => await operations.rotatePassword())

  app.post('/credentials/reload', async () => await operations.reload({ login: true }))

  // Every replica's heartbeat, the login lock's holder, who is stale: any replica answers for the fleet.
  app.get('/fleet', async () => await fleetView())

  // The last logins, OAuth fetches, renewals and retries with their causes (codes only), newest first.
  app.get('/events', async () => ({ events: recentEvents() }))

  registerCallbackAdminRoutes(app, callbacks)
}

/** One line per admin call, `audit: true`, for the operator's log search. */
export function auditLine (request: FastifyRequest, reply: FastifyReply): void {
  request.log.info(
    {
      audit: true,
      method: request.method,
      // The target as received (path only): a refused spelling is worth seeing as it was sent.
      route: (request.raw.url ?? '').split('?', 1)[0],
      caller: request.ip,
      status: reply.statusCode,
      outcome: outcomeOf(reply.statusCode)
    },
    'admin action'
  )
}

interface AuthorizationRefusal {
  kind: ProxyErrorKind
  message: string
  codeSuffix?: string
  challenge?: string
}

function adminAuthorizationRefusal (
  header: string | undefined,
  adminToken: string | undefined
): AuthorizationRefusal | undefined {
  const result = checkAdminAuthorization(header, adminToken)
  if (result === 'ok') return undefined
  if (result === 'disabled') {
    return {
      kind: 'forbidden',
      message: 'admin API disabled: set M2M_PROXY_ADMIN_TOKEN or M2M_PROXY_ADMIN_TOKEN_FILE',
      codeSuffix: 'AdminDisabled'
    }
  }
  return result === 'wrong'
    ? { kind: 'unauthorized', message: 'wrong admin token', challenge: 'Bearer error="invalid_token"' }
    : { kind: 'unauthorized', message: 'admin token required: Authorization: Bearer <token>', challenge: 'Bearer' }
}
