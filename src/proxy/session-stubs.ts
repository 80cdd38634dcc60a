// Answers legacy clients' own session-controller (and token) calls locally: the proxy owns the real session.

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { REQUEST_ID_HEADER } from './request-id.js'
import { sendProxyError } from './errors.js'

/**
 * Shaped like a real token so that clients which validate it keep working; never a real token.
 * Whatever a client sends back in VZ-M2M-Token is replaced anyway.
 */
export const PLACEHOLDER_SESSION_TOKEN = '00000000-0000-4000-8000-000000000000'
export const PLACEHOLDER_OAUTH_TOKEN = 'm2m-session-proxy-placeholder-token'

export function registerSessionControllerStubs (app: FastifyInstance): void {
  // Route-level, so that it costs the forwarded requests nothing (their answers get the id in plugin.ts).
  const withRequestId = { onSend: async (request: FastifyRequest, reply: FastifyReply) => { reply.header(REQUEST_ID_HEADER, request.id) } }
  app.post('/api/m2m/v1/session/login', withRequestId, async () => ({ sessionToken: PLACEHOLDER_SESSION_TOKEN }))
  // The shared session stays up: other requests still use it.
  app.post('/api/m2m/v1/session/logout', withRequestId, async () => ({ sessionToken: PLACEHOLDER_SESSION_TOKEN }))
  app.put('/api/m2m/v1/session/password/actions/reset', async (_request, reply) =>
    sendProxyError(reply, 'forbidden', 'password rotation is an admin operation of the proxy (admin listener), not available to clients'))
  // Clients that fetch their own OAuth token get a placeholder too; the proxy attaches the real one.
  app.post('/api/ts/v1/oauth2/token', withRequestId, async () => ({
    access_token: PLACEHOLDER_OAUTH_TOKEN,
    token_type: 'bearer',
    expires_in: 3600,
    scope: 'm2m-session-proxy'
  }))
}
