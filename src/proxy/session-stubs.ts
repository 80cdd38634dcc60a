// Answers legacy clients' own session-controller (and token) calls locally: the proxy owns the real session.

import type { FastifyInstance, FastifyReply } from 'fastify'
import { REQUEST_ID_HEADER } from './request-id.js'
import { sendProxyError } from './errors.js'
import { LOCALLY_ANSWERED_ENDPOINTS, type LocalEndpoint, type LocalEndpointName } from './paths.js'

/**
 * Shaped like a real token so that clients which validate it keep working; never a real token.
 * Whatever a client sends back in VZ-M2M-Token is replaced anyway.
 */
export const PLACEHOLDER_SESSION_TOKEN = '00000000-0000-4000-8000-000000000000'
export const PLACEHOLDER_OAUTH_TOKEN = 'm2m-session-proxy-placeholder-token'

/** The methods @fastify/http-proxy forwards: on a local endpoint, all but its own are refused rather than forwarded. */
const ROUTED_METHODS = ['DELETE', 'GET', 'HEAD', 'OPTIONS', 'PATCH', 'POST', 'PUT']

const LOCAL_ANSWERS: Record<LocalEndpointName, (reply: FastifyReply) => FastifyReply> = {
  login: (reply) => sendJson(reply, { sessionToken: PLACEHOLDER_SESSION_TOKEN }),
  // The shared session stays up: other requests still use it.
  logout: (reply) => sendJson(reply, { sessionToken: PLACEHOLDER_SESSION_TOKEN }),
  passwordReset: (reply) =>
    sendProxyError(
      reply,
      'forbidden',
      'password rotation is an admin operation of the proxy (admin listener), not available to clients'
    ),
  // Clients that fetch their own OAuth token get a placeholder too; the proxy attaches the real one.
  oauthToken: (reply) =>
    sendJson(reply, {
      access_token: PLACEHOLDER_OAUTH_TOKEN,
      token_type: 'bearer',
      expires_in: 3600,
      scope: 'm2m-session-proxy'
    })
}

function sendJson (reply: FastifyReply, body: object): FastifyReply {
  return reply.header(REQUEST_ID_HEADER, reply.request.id).send(body)
}

/** The local answer for `endpoint`, in whatever spelling of its path it was called; other methods are refused. */
export function answerLocally (endpoint: LocalEndpoint, reply: FastifyReply): FastifyReply {
  if (reply.request.method === endpoint.method) return LOCAL_ANSWERS[endpoint.name](reply)
  reply.header('allow', endpoint.method)
  return sendProxyError(
    reply,
    'methodNotAllowed',
    `${endpoint.path} accepts ${endpoint.method} only; the proxy answers it and never forwards it`
  )
}

/** Routes for the exact paths; other spellings reach the forwarding handler, which asks answerLocally too. */
export function registerSessionControllerStubs (app: FastifyInstance): void {
  for (const endpoint of LOCALLY_ANSWERED_ENDPOINTS) {
    app.route({
      method: ROUTED_METHODS,
      url: endpoint.path,
      exposeHeadRoute: false,
      handler: async (_request, reply) => answerLocally(endpoint, reply)
    })
  }
}
