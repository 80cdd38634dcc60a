// The admin listener: probes, metrics and the operator's routes (admin/plugin.ts) over the core's session and
// operations.

import Fastify, { type FastifyInstance } from 'fastify'
import type { Core } from './core.js'
import { sendProxyError } from './proxy/errors.js'
import { auditLine, registerAdminRoutes } from './admin/plugin.js'
import { hardenListener } from './listener/hardening.js'
import type { RequestGuard } from './listener/request-guard.js'
import { listenerOptions } from './listener/fastify-options.js'
import type { ThingSpaceCall } from './callbacks/registration.js'
import { VERSION } from './version.js'

/** Largest admin request body; every admin route takes a few bytes of JSON at most. */
const ADMIN_BODY_LIMIT_BYTES = 64 * 1024

/** `isShuttingDown`: readiness answers 503 from the moment the proxy starts going down. */
export function buildAdminListener (
  core: Core,
  guard: RequestGuard,
  isShuttingDown: () => boolean,
  thingSpace: ThingSpaceCall
): FastifyInstance {
  const { config } = core
  const admin = Fastify({
    ...listenerOptions(config, core.logger.child({ listener: 'admin' })),
    // Admin bodies are a few bytes of JSON: connections held by stalled uploads cost little memory.
    bodyLimit: ADMIN_BODY_LIMIT_BYTES,
    // Fastify runs no hooks for these: answered and audited here.
    frameworkErrors: (error, request, reply) => {
      sendProxyError(reply, 'badRequest', error.message)
      auditLine(request, reply)
    }
  })
  hardenListener(admin, {
    guard,
    maxConnections: config.adminMaxConnections,
    maxConnectionsSetting: 'M2M_PROXY_ADMIN_MAX_CONNECTIONS',
    stalledReaderTimeoutMs: config.requestTimeoutMs,
    log: admin.log
  })
  registerAdminRoutes(admin, {
    adminToken: config.adminToken,
    session: core.session,
    operations: core.operations,
    metrics: core.metrics,
    isShuttingDown,
    fleetView: core.fleetView,
    recentEvents: core.recentEvents,
    version: VERSION,
    callbacks: {
      thingSpace,
      inbox: core.callbacks,
      locationKeyHeader: config.callbacks?.locationKeyHeader,
      accountName: config.accountName,
      publicUrl: config.callbacks?.publicUrl
    }
  })
  return admin
}
