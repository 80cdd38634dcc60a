// Device Location callbacks (services Location and DeviceLocation, registered under /api/loc/v1) carry no username or
// password: ThingSpace signs each one with HMAC-SHA256 under a shared key it returns, in a response header, when the
// listener is registered. Verizon's pages name neither header, so the signature is looked for in every request header
// (hex or base64, with or without a "sha256=" prefix): which header holds it adds nothing to the check, since only
// the holder of the key can make a value that matches the body. Pure: no I/O.

import { createHmac, timingSafeEqual } from 'node:crypto'

/** The Device Location callback services (the SDK's CallbackServiceNameEnum for /api/loc/v1/callbacks). */
export const LOCATION_CALLBACK_SERVICES: readonly string[] = ['Location', 'DeviceLocation']

export function isLocationService (service: string): boolean {
  return LOCATION_CALLBACK_SERVICES.includes(service)
}

const SHA256_BYTES = 32

/** The 32 bytes a header value stands for, when it is an HMAC-SHA256 written in hex or base64; otherwise undefined. */
function signatureBytes (value: string): Buffer | undefined {
  const text = value.trim().replace(/^(?:hmac-)?sha256[=:]/i, '')
  if (/^[0-9a-f]{64}$/i.test(text)) return Buffer.from(text, 'hex')
  if (/^[A-Za-z0-9+/_-]{43}={0,1}$/.test(text)) {
    const bytes = Buffer.from(text, 'base64')
    return bytes.length === SHA256_BYTES ? bytes : undefined
  }
  return undefined
}

/** HMAC-SHA256 of the raw body under the shared key (its UTF-8 bytes), as ThingSpace computes it. */
export function locationSignature (key: string, body: Buffer): Buffer {
  return createHmac('sha256', key).update(body).digest()
}

/**
 * True when some header's value is the body's HMAC under one of `keys` (the current key and, after a new
 * registration, the one before it, for the callbacks already on their way). Compared in constant time.
 */
export function signedByThingSpace (
  body: Buffer,
  headers: Record<string, string | string[] | undefined>,
  keys: readonly string[]
): boolean {
  const candidates = Object.values(headers)
    .flatMap((value) => (value === undefined ? [] : Array.isArray(value) ? value : [value]))
    .map(signatureBytes)
    .filter((bytes): bytes is Buffer => bytes !== undefined)
  if (candidates.length === 0) return false
  let matched = false
  for (const key of keys) {
    const expected = locationSignature(key, body)
    // Every candidate compared, matched or not: the time taken does not tell which header or key was right.
    for (const candidate of candidates) matched = timingSafeEqual(candidate, expected) || matched
  }
  return matched
}
