// POST, GET and DELETE /admin/callbacks: the inbox's registration with ThingSpace, done by the proxy with its own
// session and the username and password its callback listener checks (docs/callbacks.md). Inside the token-guarded
// scope of admin/plugin.ts.

import type { FastifyInstance, FastifyReply } from 'fastify'
import { billingAccountName, callbackBaseUrl } from '../config/settings.js'
import type { CallbackCredentials } from '../config/load.js'
import { CALLBACK_SERVICES } from '../callbacks/receive.js'
import { LOCATION_CALLBACK_SERVICES } from '../callbacks/location-signature.js'
import type { LocationKeyStore } from '../callbacks/location-keys.js'
import {
  deregisterCallbacks,
  listCallbacks,
  registerCallbacks,
  type ServiceOutcome,
  type ThingSpaceCall
} from '../callbacks/registration.js'
import { PROXY_ERRORS, sendProxyError } from '../proxy/errors.js'

export interface CallbackAdminOptions {
  /** ThingSpace's API through the proxy listener (app.ts). */
  thingSpace: ThingSpaceCall
  /** The inbox's username and password and the Device Location keys; undefined: the inbox is off. */
  inbox: { credentials: CallbackCredentials; locationKeys: LocationKeyStore } | undefined
  /** M2M_PROXY_CALLBACK_LOCATION_KEY_HEADER; undefined: the key's header is found by its name. */
  locationKeyHeader: string | undefined
  /** M2M_PROXY_ACCOUNT_NAME and M2M_PROXY_CALLBACK_PUBLIC_URL, the defaults of a request's own. */
  accountName: string | undefined
  publicUrl: string | undefined
}

const DEFAULT_SERVICES = ['CarrierService']
const KNOWN_SERVICES = [...CALLBACK_SERVICES, ...LOCATION_CALLBACK_SERVICES]

/** With the inbox off no key is kept: listing shows Connectivity Management's callbacks, removing forgets nothing. */
const NO_LOCATION_KEYS: LocationKeyStore = {
  keys: async () => [],
  remember: async () => {},
  forget: async () => {}
}

class BadAdminRequest extends Error {
  statusCode = 400
}

function fieldsOf (body: unknown): Record<string, unknown> {
  if (body === undefined) return {}
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new BadAdminRequest('the body must be a JSON object')
  }
  return body as Record<string, unknown>
}

function servicesOf (raw: unknown): string[] {
  if (raw === undefined) return DEFAULT_SERVICES
  if (!Array.isArray(raw) || raw.length === 0 || !raw.every((name) => typeof name === 'string')) {
    throw new BadAdminRequest('services must be a non-empty list of service names')
  }
  const unknown = raw.filter((name) => !KNOWN_SERVICES.includes(name))
  if (unknown.length > 0) {
    throw new BadAdminRequest(
      `unknown callback service ${JSON.stringify(String(unknown[0]).slice(0, 64))}; known: ${KNOWN_SERVICES.join(', ')}`
    )
  }
  return [...new Set(raw as string[])]
}

function accountOf (raw: unknown, fallback: string | undefined): string {
  if (raw !== undefined) return billingAccountName(raw, 'accountName')
  if (fallback === undefined) {
    throw new BadAdminRequest('accountName is required (or set M2M_PROXY_ACCOUNT_NAME)')
  }
  return fallback
}

type Refused = Extract<ServiceOutcome, { done: false }>

/** 502 Proxy.UpstreamRefused: `message` ends with ThingSpace's own status and error; `extra` joins the body. */
function sendRefused (
  reply: FastifyReply,
  message: string,
  refused: Refused,
  extra: Record<string, unknown>
): FastifyReply {
  const { status, code } = PROXY_ERRORS.upstreamRefused
  return reply.code(status).send({
    errorCode: code,
    errorMessage: `${message}: ${refused.status} ${refused.errorCode} ${refused.errorMessage}`,
    ...extra
  })
}

/** 200 when ThingSpace took every one; 502 Proxy.UpstreamRefused, with each service's outcome, when it refused any. */
function answerOutcomes (reply: FastifyReply, what: string, accountName: string, outcomes: ServiceOutcome[]): unknown {
  const refused = outcomes.filter((outcome): outcome is Refused => !outcome.done)
  const [first] = refused
  if (first === undefined) return { accountName, services: outcomes }
  const message = `ThingSpace refused to ${what} ${refused.length} of ${outcomes.length} callback services; ${first.service}`
  return sendRefused(reply, message, first, { accountName, services: outcomes })
}

export function registerCallbackAdminRoutes (app: FastifyInstance, options: CallbackAdminOptions): void {
  app.post('/callbacks', async (request, reply) => {
    const { inbox } = options
    if (inbox === undefined) {
      return sendProxyError(reply, 'conflict', 'the callback inbox is off: set M2M_PROXY_CALLBACK_PORT first')
    }
    const fields = fieldsOf(request.body)
    const services = servicesOf(fields.services)
    const accountName = accountOf(fields.accountName, options.accountName)
    const baseUrl = fields.url === undefined ? options.publicUrl : callbackBaseUrl(fields.url, 'url')
    if (baseUrl === undefined) {
      throw new BadAdminRequest('url is required (or set M2M_PROXY_CALLBACK_PUBLIC_URL): where ThingSpace reaches the callback listener')
    }
    const outcomes = await registerCallbacks(options.thingSpace, {
      accountName,
      baseUrl,
      services,
      credentials: inbox.credentials,
      locationKeys: inbox.locationKeys,
      locationKeyHeader: options.locationKeyHeader
    })
    request.log.info(
      { accountName, url: baseUrl, registered: outcomes.filter((o) => o.done).map((o) => o.service) },
      'callbacks registered with ThingSpace'
    )
    return answerOutcomes(reply, 'register', accountName, outcomes)
  })

  app.get<{ Querystring: Record<string, unknown> }>('/callbacks', async (request, reply) => {
    const accountName = accountOf(request.query.accountName, options.accountName)
    const listed = await listCallbacks(options.thingSpace, accountName, options.inbox?.locationKeys ?? NO_LOCATION_KEYS)
    if ('callbacks' in listed) return { accountName, callbacks: listed.callbacks }
    return sendRefused(reply, 'ThingSpace refused to list the callbacks', listed.refused as Refused, { accountName })
  })

  app.delete('/callbacks', async (request, reply) => {
    const fields = fieldsOf(request.body)
    const services = servicesOf(fields.services)
    const accountName = accountOf(fields.accountName, options.accountName)
    const outcomes = await deregisterCallbacks(options.thingSpace, {
      accountName,
      services,
      locationKeys: options.inbox?.locationKeys ?? NO_LOCATION_KEYS
    })
    request.log.info(
      { accountName, removed: outcomes.filter((o) => o.done).map((o) => o.service) },
      'callbacks removed from ThingSpace'
    )
    return answerOutcomes(reply, 'remove', accountName, outcomes)
  })
}
