// The catalogue of errors the proxy answers itself, in ThingSpace's {"errorCode","errorMessage"} shape under a Proxy.
// prefix.

import type { FastifyReply } from 'fastify'
import { STATUS_CODES } from 'node:http'
import { REQUEST_ID_HEADER } from './request-id.js'
import { failedBeforeSending } from '../errors.js'

export interface ProxyErrorBody {
  errorCode: string
  errorMessage: string
}

export const PROXY_ERRORS = {
  notFound: { status: 404, code: 'Proxy.NotFound' },
  forbidden: { status: 403, code: 'Proxy.Forbidden' },
  unauthorized: { status: 401, code: 'Proxy.Unauthorized' },
  methodNotAllowed: { status: 405, code: 'Proxy.MethodNotAllowed' },
  requestTimeout: { status: 408, code: 'Proxy.RequestTimeout' },
  conflict: { status: 409, code: 'Proxy.Conflict' },
  badRequest: { status: 400, code: 'Proxy.BadRequest' },
  bodyTooLarge: { status: 413, code: 'Proxy.BodyTooLarge' },
  unsupportedMediaType: { status: 415, code: 'Proxy.UnsupportedMediaType' },
  upstreamUnreachable: { status: 502, code: 'Proxy.UpstreamUnreachable' },
  upstreamRefused: { status: 502, code: 'Proxy.UpstreamRefused' },
  upstreamTimeout: { status: 504, code: 'Proxy.UpstreamTimeout' },
  authUnavailable: { status: 503, code: 'Proxy.AuthenticationUnavailable' },
  overloaded: { status: 503, code: 'Proxy.Overloaded' },
  fleetStoreUnreachable: { status: 503, code: 'Proxy.FleetStoreUnreachable' },
  internal: { status: 500, code: 'Proxy.InternalError' }
} as const

export type ProxyErrorKind = keyof typeof PROXY_ERRORS

/**
 * The same shape, as raw HTTP, for what never becomes a Fastify request: targets Node's parser
 * refused, requests that timed out, CONNECT.
 */
export function rawProxyError (kind: ProxyErrorKind, message: string): string {
  const { status, code } = PROXY_ERRORS[kind]
  const body = JSON.stringify({ errorCode: code, errorMessage: message } satisfies ProxyErrorBody)
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
}

export function sendProxyError (
  reply: FastifyReply,
  kind: ProxyErrorKind,
  message: string,
  codeSuffix?: string
): FastifyReply {
  const { status, code } = PROXY_ERRORS[kind]
  const body: ProxyErrorBody = {
    errorCode: codeSuffix === undefined ? code : `${code}.${codeSuffix}`,
    errorMessage: message
  }
  return reply
    .code(status)
    .header('content-type', 'application/json; charset=utf-8')
    .header(REQUEST_ID_HEADER, reply.request.id)
    .send(body)
}

const TIMEOUT_CODES = new Set([
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CONNECT_TIMEOUT',
  'ETIMEDOUT',
  'FST_REPLY_FROM_GATEWAY_TIMEOUT'
])

/**
 * Maps an error of the upstream call (reply-from wraps undici's in `cause`) to 504 or 502; `sent`: whether ThingSpace
 * may have received the request (false only when no connection was made).
 */
export function classifyUpstreamFailure (error: unknown): {
  kind: 'upstreamTimeout' | 'upstreamUnreachable'
  detail: string
  sent: boolean
} {
  const codes: string[] = []
  let current: unknown = error
  for (let depth = 0; depth < 4 && current instanceof Error; depth++) {
    if ('code' in current && typeof current.code === 'string') codes.push(current.code)
    current = current.cause
  }
  const detail = codes.find((code) => !code.startsWith('FST_')) ?? codes[0] ?? 'unknown error'
  // Told "not sent", a client sends again: only when no connection was made (an activation must not be done twice).
  const sent = !codes.some(failedBeforeSending)
  if (codes.some((code) => TIMEOUT_CODES.has(code))) return { kind: 'upstreamTimeout', detail, sent }
  return { kind: 'upstreamUnreachable', detail, sent }
}

/** Said after a failure that may have come once ThingSpace had the request (a POST may have been carried out). */
export const MAY_HAVE_BEEN_PROCESSED =
  'ThingSpace may have received and processed the request: check before sending it again'
