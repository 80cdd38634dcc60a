// Admin listener: open health and readiness probes, token-protected operator routes, one audit line per action.

import type { FastifyError, FastifyInstance, FastifyReply } from 'fastify'
import { ConfigError } from '../config/errors.js'
import { OperationError, type CredentialOperations, type OperationErrorKind } from '../credentials/operations.js'
import { AuthUnavailableError } from '../session/errors.js'
import type { SessionManager } from '../session/session-manager.js'
import { sendProxyError, type ProxyErrorKind } from '../proxy/errors.js'
import { sendAuthUnavailable } from '../proxy/plugin.js'
import { checkAdminAuthorization } from './auth.js'
import type { ProxyMetrics } from '../metrics.js'

export interface AdminPluginOptions {
  adminToken: string | undefined
  session: SessionManager
  operations: CredentialOperations
  metrics: ProxyMetrics
  isShuttingDown: () => boolean
}

const OPERATION_ERRORS: Record<OperationErrorKind, ProxyErrorKind> = {
  busy: 'conflict',
  'not-rewritable': 'conflict',
  'unchanged-while-rejected': 'conflict',
  'upstream-failed': 'upstreamUnreachable',
  'not-saved': 'internal'
}

function outcomeOf (statusCode: number): string {
  if (statusCode < 400) return 'ok'
  return { 401: 'unauthorized', 403: 'forbidden', 404: 'not-found', 409: 'conflict' }[statusCode] ?? (statusCode < 500 ? 'rejected' : 'failed')
}

/** Configures the admin listener itself (not an encapsulated plugin): its hooks and 404 handler are the server's. */
export function registerAdminRoutes (app: FastifyInstance, options: AdminPluginOptions): void {
  const { session, operations } = options

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
    if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) {
      return sendProxyError(reply, 'badRequest', error.message)
    }
    request.log.error({ err: error }, 'admin route failed')
    return sendProxyError(reply, 'internal', 'internal error of the proxy')
  })
  app.setNotFoundHandler((_request, reply) => sendProxyError(reply, 'notFound', 'no such admin route'))

  app.addHook('onRequest', async (request, reply) => {
    if (!request.url.startsWith('/admin')) return
    const result = checkAdminAuthorization(request.headers.authorization, options.adminToken)
    if (result === 'disabled') {
      return sendProxyError(reply, 'forbidden', 'admin API disabled: set M2M_PROXY_ADMIN_TOKEN or M2M_PROXY_ADMIN_TOKEN_FILE', 'AdminDisabled')
    }
    if (result !== 'ok') {
      reply.header('www-authenticate', result === 'wrong' ? 'Bearer error="invalid_token"' : 'Bearer')
      return sendProxyError(reply, 'unauthorized', result === 'wrong' ? 'wrong admin token' : 'admin token required: Authorization: Bearer <token>')
    }
  })

  app.addHook('onResponse', async (request, reply) => {
    if (!request.url.startsWith('/admin')) return
    request.log.info({
      audit: true,
      method: request.method,
      route: request.url.split('?', 1)[0],
      caller: request.ip,
      status: reply.statusCode,
      outcome: outcomeOf(reply.statusCode)
    }, 'admin action')
  })

  app.get('/healthz', async () => ({ status: 'ok' }))

  // Open like the probes: the admin listener is local by default, and no label carries a secret.
  app.get('/metrics', async (_request, reply) => {
    reply.header('content-type', options.metrics.registry.contentType)
    return await options.metrics.registry.metrics()
  })

  app.get('/readyz', async (_request, reply: FastifyReply) => {
    const reason = options.isShuttingDown() ? 'shutting-down' : session.notReadyReason()
    if (reason === undefined) return { ready: true, state: session.snapshot().state }
    return reply.code(503).send({ ready: false, reason, state: session.snapshot().state })
  })

  app.get('/admin/session', async () => session.snapshot())

  app.post('/admin/session/start', async () => {
    await session.restartSession('admin')
    return session.snapshot()
  })

  app.post('/admin/session/end', async () => ({ ended: await session.endSession() }))

  app.post('/admin/password/rotate', async () => await operations.rotatePassword())

  app.post('/admin/credentials/reload', async () => await operations.reload({ login: true }))
}
