// Developer and test routes under /api/m2m/v1/simulator/: echo, byte streams, delays and connection resets.
import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { fingerprint } from '../session/session-manager.js'
import { UWS_ERROR_CODES, uwsError } from './errors.js'
import { boundedWholeNumber } from './request-input.js'

export const ECHO_BODY_LIMIT_BYTES = 25 * 1024 * 1024
export const MAX_STREAM_BYTES = 100 * 1024 * 1024
export const MAX_DELAY_MS = 120_000
const STREAM_CHUNK_BYTES = 64 * 1024
/** Byte i of every /bytes/ answer is i % PATTERN_MODULUS (a prime, so the pattern does not align with chunks). */
export const PATTERN_MODULUS = 251

const PREFIX = '/api/m2m/v1/simulator'
const SESSION_TOKEN_HEADER = 'vz-m2m-token'

/** Long enough that any chunk can start at any phase of the pattern: chunks are views into it, never copies. */
const PATTERN = Buffer.from(Array.from({ length: STREAM_CHUNK_BYTES + PATTERN_MODULUS }, (_, i) => i % PATTERN_MODULUS))

export interface EchoAnswer {
  method: string
  url: string
  /**
   * As received, except that the credential in Authorization and the VZ-M2M-Token are fingerprints (`fingerprint()`).
   */
  headers: Record<string, string | string[] | undefined>
  bodyLength: number
  bodySha256: string
}

/** Streams `totalBytes` of the pattern in chunks of STREAM_CHUNK_BYTES, as the socket asks for them. */
export function patternStream (totalBytes: number): Readable {
  let sentBytes = 0
  return new Readable({
    read () {
      if (sentBytes >= totalBytes) {
        this.push(null)
        return
      }
      const length = Math.min(STREAM_CHUNK_BYTES, totalBytes - sentBytes)
      const phase = sentBytes % PATTERN_MODULUS
      sentBytes += length
      this.push(PATTERN.subarray(phase, phase + length))
    }
  })
}

/**
 * The headers with each token replaced by its fingerprint, the Authorization scheme kept
 * (`Bearer 1a2b3c4d`): tests can still tell which token came, and a demo screen or a pasted
 * log never shows one.
 */
function withTokensFingerprinted (
  headers: Record<string, string | string[] | undefined>
): Record<string, string | string[] | undefined> {
  const shown = { ...headers }
  const { authorization } = headers
  if (typeof authorization === 'string') {
    const schemeEnd = authorization.indexOf(' ')
    shown.authorization =
      schemeEnd === -1
        ? fingerprint(authorization)
        : `${authorization.slice(0, schemeEnd)} ${fingerprint(authorization.slice(schemeEnd + 1))}`
  }
  const sessionToken = headers[SESSION_TOKEN_HEADER]
  if (typeof sessionToken === 'string') shown[SESSION_TOKEN_HEADER] = fingerprint(sessionToken)
  return shown
}

async function echoRoute (scope: FastifyInstance): Promise<void> {
  // Encapsulated: every content type (or none) arrives here as raw bytes, and nowhere else.
  scope.removeAllContentTypeParsers()
  scope.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: ECHO_BODY_LIMIT_BYTES }, (_request, body, done) => {
    done(null, body)
  })
  const echo = async (request: FastifyRequest<{ Body: Buffer | undefined }>): Promise<EchoAnswer> => {
    const body = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0)
    return {
      method: request.method,
      url: request.url,
      headers: withTokensFingerprinted(request.headers),
      bodyLength: body.length,
      bodySha256: createHash('sha256').update(body).digest('hex')
    }
  }
  scope.all(`${PREFIX}/echo`, echo)
  // Any path below too: a long path makes a long log line on the proxy (which logs paths, not queries).
  scope.all(`${PREFIX}/echo/*`, echo)
}

export async function devRoutes (scope: FastifyInstance): Promise<void> {
  // Pending delays end when the server closes, so they cannot keep the process alive.
  const closing = new AbortController()
  scope.addHook('onClose', async () => closing.abort())

  await scope.register(echoRoute)

  scope.get<{ Params: { count: string } }>(`${PREFIX}/bytes/:count`, async (request, reply) => {
    const count = boundedWholeNumber(request.params.count, MAX_STREAM_BYTES)
    if (count === undefined) {
      return reply
        .code(400)
        .send(
          uwsError(UWS_ERROR_CODES.badRequest, `count must be a whole number of bytes from 0 to ${MAX_STREAM_BYTES}`)
        )
    }
    return reply
      .header('content-type', 'application/octet-stream')
      .header('content-length', String(count))
      .send(patternStream(count))
  })

  scope.get<{ Params: { ms: string } }>(`${PREFIX}/delay/:ms`, async (request, reply) => {
    const delayedMs = boundedWholeNumber(request.params.ms, MAX_DELAY_MS)
    if (delayedMs === undefined) {
      return reply
        .code(400)
        .send(
          uwsError(UWS_ERROR_CODES.badRequest, `ms must be a whole number of milliseconds from 0 to ${MAX_DELAY_MS}`)
        )
    }
    await sleep(delayedMs, undefined, { signal: closing.signal })
    return { delayedMs }
  })

  // Declares twice the bytes it sends, then closes: an answer cut off midway.
  scope.get<{ Params: { count: string } }>(`${PREFIX}/truncated/:count`, (request, reply) => {
    const count = boundedWholeNumber(request.params.count, MAX_STREAM_BYTES)
    if (count === undefined) {
      return reply
        .code(400)
        .send(
          uwsError(UWS_ERROR_CODES.badRequest, `count must be a whole number of bytes from 0 to ${MAX_STREAM_BYTES}`)
        )
    }
    reply.hijack()
    const socket = request.raw.socket
    socket.write(`HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: ${count * 2}\r\n\r\n`)
    socket.write(Buffer.alloc(count, 0x61), () => socket.destroy())
    return reply
  })

  scope.get(`${PREFIX}/reset`, (request, reply) => {
    reply.hijack()
    request.raw.socket.destroy()
  })
}
