// The callback listener (M2M_PROXY_CALLBACK_PORT): where ThingSpace POSTs the results of asynchronous requests, meant
// to sit behind the operator's ingress and TLS. It checks the source address (when a list is set) and the username
// and password in the body (a Device Location callback: its HMAC signature), stores the callback durably, and only
// then answers 2xx. It never forwards anything.

import { BlockList, isIP } from 'node:net'
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import type { CallbackConfig, CallbackCredentials, ProxyConfig } from './config/load.js'
import { INBOX_UNAVAILABLE_RETRY_AFTER_SECONDS, InboxUnavailableError, type CallbackInbox } from './callbacks/inbox.js'
import { CALLBACK_SERVICES, receiveCallback } from './callbacks/receive.js'
import { isLocationService, signedByThingSpace } from './callbacks/location-signature.js'
import type { LocationKeyStore } from './callbacks/location-keys.js'
import { sendProxyError, type ProxyErrorKind } from './proxy/errors.js'
import { listenerOptions } from './listener/fastify-options.js'
import { hardenListener } from './listener/hardening.js'

const OUTCOMES: Partial<Record<ProxyErrorKind, string>> = {
  unauthorized: 'unauthorized',
  forbidden: 'forbidden-source',
  notFound: 'not-found',
  bodyTooLarge: 'too-large',
  badRequest: 'bad-request'
}

function sourceList (entries: readonly string[]): BlockList | undefined {
  if (entries.length === 0) return undefined
  const list = new BlockList()
  for (const entry of entries) {
    const [address = '', bits] = entry.split('/')
    const family = isIP(address) === 6 ? 'ipv6' : 'ipv4'
    if (bits === undefined) list.addAddress(address, family)
    else list.addSubnet(address, Number(bits), family)
  }
  return list
}

/** The peer's address as the socket has it (an IPv4 client on a dual-stack socket reads ::ffff:a.b.c.d). */
function allowed (list: BlockList, address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1]
  if (mapped !== undefined) return list.check(mapped, 'ipv4')
  return list.check(address, isIP(address) === 6 ? 'ipv6' : 'ipv4')
}

export function buildCallbackListener (
  config: ProxyConfig,
  callbacks: CallbackConfig,
  { inbox, credentials, locationKeys }: {
    inbox: CallbackInbox
    credentials: CallbackCredentials
    locationKeys: LocationKeyStore
  },
  logger: Logger,
  received: { inc: (labels: { outcome: string }) => void }
): FastifyInstance {
  const log = logger.child({ listener: 'callbacks' })
  const app = Fastify({
    ...listenerOptions(config, log),
    // Behind the ingress: request.ip is the caller X-Forwarded-For names, as seen by the trusted proxies (proxy-addr).
    trustProxy: callbacks.trustedProxies.length > 0 ? [...callbacks.trustedProxies] : false,
    bodyLimit: callbacks.bodyLimitBytes,
    frameworkErrors: (error, _request, reply) => {
      sendProxyError(reply, 'badRequest', error.message)
    }
  })
  // A connection cap and a clear CONNECT answer; no Host check: ThingSpace calls the ingress's public name, and every
  // callback carries the password.
  hardenListener(app, {
    guard: undefined,
    maxConnections: config.maxConnections,
    maxConnectionsSetting: 'M2M_PROXY_MAX_CONNECTIONS',
    stalledReaderTimeoutMs: config.requestTimeoutMs,
    log: app.log
  })
  const sources = sourceList(callbacks.allowedSources)

  /** One line per refusal: who, which route, why; never the body (it may hold a guessed password). */
  const refuse = (request: FastifyRequest, reply: FastifyReply, kind: ProxyErrorKind, reason: string): FastifyReply => {
    received.inc({ outcome: OUTCOMES[kind] ?? 'bad-request' })
    log.warn(
      { reqId: request.id, caller: request.ip, route: (request.raw.url ?? '').split('?', 1)[0], reason },
      'callback refused'
    )
    return sendProxyError(reply, kind, reason)
  }

  // Whatever ThingSpace labels its body: read as bytes (a Device Location signature covers them as sent), judged as
  // JSON by receiveCallback.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => {
    done(null, body)
  })
  app.addHook('onRequest', (request, reply, done) => {
    const address = request.ip
    if (sources !== undefined && !allowed(sources, address)) {
      reply.header('connection', 'close') // its body is not read
      refuse(request, reply, 'forbidden', `source address ${address} is not in M2M_PROXY_CALLBACK_ALLOWED_SOURCES`)
      return
    }
    done()
  })
  app.setErrorHandler<FastifyError>((error, request, reply) => {
    if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return refuse(request, reply, 'bodyTooLarge', `body larger than ${callbacks.bodyLimitBytes} bytes (M2M_PROXY_CALLBACK_BODY_LIMIT_BYTES)`)
    }
    if (error.statusCode !== undefined && error.statusCode < 500) return refuse(request, reply, 'badRequest', error.message)
    received.inc({ outcome: 'failed' })
    // Not 2xx: ThingSpace sends it again.
    if (error instanceof InboxUnavailableError) {
      // Expected while Redis is out of reach, and one line per callback: a warning that says why, no stack.
      log.warn({ reqId: request.id, reason: error.message }, 'callback not stored')
      reply.header('retry-after', String(INBOX_UNAVAILABLE_RETRY_AFTER_SECONDS))
      return sendProxyError(reply, 'fleetStoreUnreachable', 'the callback could not be stored now; send it again')
    }
    log.error({ err: error }, 'callback not stored')
    return sendProxyError(reply, 'internal', 'the callback could not be stored; send it again')
  })
  app.setNotFoundHandler((request, reply) => refuse(request, reply, 'notFound', 'no such callback route'))

  app.post<{ Params: { service: string }; Body: Buffer | undefined }>('/:service', async (request, reply) => {
    const { service } = request.params
    const location = isLocationService(service)
    if (!location && !CALLBACK_SERVICES.includes(service)) {
      return refuse(request, reply, 'notFound', `unknown callback service "${service.slice(0, 64)}"`)
    }
    const body = request.body ?? Buffer.alloc(0)
    if (location) {
      const keys = await locationKeys.keys(service)
      if (keys.length === 0) {
        return refuse(request, reply, 'unauthorized', `no shared key for ${service}: register it with POST /admin/callbacks first`)
      }
      if (!signedByThingSpace(body, request.headers, keys)) {
        return refuse(request, reply, 'unauthorized', `no header holds the HMAC-SHA256 of the body under the ${service} key`)
      }
    }
    const verdict = receiveCallback(service, body.toString('utf8'), location ? 'signed' : credentials)
    if ('refused' in verdict) {
      return refuse(request, reply, verdict.refused === 'unauthorized' ? 'unauthorized' : 'badRequest', verdict.reason)
    }
    const stored = await inbox.append(verdict.accepted)
    received.inc({ outcome: 'stored' })
    log.info(
      { reqId: request.id, service, seq: stored.seq, requestId: stored.requestId, caller: request.ip },
      'callback stored'
    )
    return { stored: true, seq: stored.seq }
  })
  return app
}
