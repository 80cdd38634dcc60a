// Undoes an upstream answer's Content-Encoding, so that a compressed error answer can be read for a token refusal.

import { promisify } from 'node:util'
import zlib from 'node:zlib'

type Decoder = (body: Buffer, options: zlib.ZlibOptions | zlib.BrotliOptions) => Promise<Buffer>

const gunzip = promisify(zlib.gunzip) as Decoder
const inflate = promisify(zlib.inflate) as Decoder
const inflateRaw = promisify(zlib.inflateRaw) as Decoder
const brotliDecompress = promisify(zlib.brotliDecompress) as Decoder

/** `deflate` is meant zlib-wrapped (RFC 9110 §8.4.1.2), but some servers send it raw. */
const inflateEither: Decoder = async (body, options) => {
  try {
    return await inflate(body, options)
  } catch (error) {
    if (isOverLimit(error)) throw error
    return await inflateRaw(body, options)
  }
}

// `compress` (LZW) has no decoder in Node: like any other coding not listed, the answer is not decoded.
const DECODERS: ReadonlyMap<string, Decoder> = new Map([
  ['gzip', gunzip],
  ['x-gzip', gunzip],
  ['deflate', inflateEither],
  ['br', brotliDecompress]
])

export type DecodedBody = { decoded: true; body: Buffer } | { decoded: false; reason: string }

/**
 * The body with every coding of `contentEncoding` undone (they were applied in the order listed, so
 * they are undone from the last), never larger than `maxBytes` at any step: a small compressed answer
 * may expand to gigabytes. Not decoded: an unknown coding, a corrupt body, or one that expands past
 * `maxBytes`. Never throws.
 */
export async function decodeContent (
  body: Buffer,
  contentEncoding: string | string[] | undefined,
  maxBytes: number
): Promise<DecodedBody> {
  const codings = codingsOf(contentEncoding)
  let decoded = body
  for (let index = codings.length - 1; index >= 0; index -= 1) {
    const coding = codings[index] as string
    const decoder = DECODERS.get(coding)
    if (decoder === undefined) return { decoded: false, reason: `unsupported coding ${JSON.stringify(coding)}` }
    try {
      decoded = await decoder(decoded, { maxOutputLength: maxBytes })
    } catch (error) {
      if (isOverLimit(error)) return { decoded: false, reason: `${coding}: expands past ${maxBytes} bytes` }
      return { decoded: false, reason: `${coding}: ${(error as { code?: string }).code ?? (error as Error).message}` }
    }
  }
  return { decoded: true, body: decoded }
}

/** The codings, lower-cased, in the order they were applied; `identity` changes nothing and is left out. */
export function codingsOf (contentEncoding: string | string[] | undefined): string[] {
  if (contentEncoding === undefined) return []
  const joined = Array.isArray(contentEncoding) ? contentEncoding.join(',') : contentEncoding
  const codings: string[] = []
  for (const part of joined.split(',')) {
    const coding = part.trim().toLowerCase()
    if (coding !== '' && coding !== 'identity') codings.push(coding)
  }
  return codings
}

function isOverLimit (error: unknown): boolean {
  return (error as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE'
}
