// Sealing of the secrets a fleet keeps in Redis (tokens, password): AES-256-GCM under the fleet key, bound to where the
// value lives.

import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'
import { FLEET_KEY_BYTES, FleetKeyError } from '../config/fleet-key.js'
import { ForeignFleetKeyError, UntrustedRecordError } from '../session/shared-session.js'

// Read with the configuration (config/ imports no domain module); here for the modules that seal.
export { FLEET_KEY_BYTES, FleetKeyError, parseFleetKey } from '../config/fleet-key.js'

const IV_BYTES = 12
const TAG_BYTES = 16
/** Format version, first in every sealed value, so that a later format can be told apart. */
const VERSION = 'v1'

/** A sealed value that this fleet key cannot open: another key wrote it, or it was altered or moved. */
export class FleetKeyMismatchError extends ForeignFleetKeyError {
  override readonly name = 'FleetKeyMismatchError'
  constructor (readonly place: string) {
    super(
      `the shared state at ${place} cannot be opened: the fleet key differs from the one that wrote this state (or the value was altered or copied from elsewhere); give every replica the same M2M_PROXY_FLEET_KEY`
    )
  }
}

/**
 * A record that opened under the fleet key but does not agree with the plain fields stored beside it
 * (a generation, a login time): someone who can write Redis but has no fleet key changed them. Refused.
 */
export class FleetRecordForgedError extends UntrustedRecordError {
  override readonly name = 'FleetRecordForgedError'
  constructor (
    readonly place: string,
    what: string
  ) {
    super(
      `the shared state at ${place} was altered outside the fleet (${what}); it is refused and not acted on: check who can write to this Redis`
    )
  }
}

/** A stored value that is not a sealed value of a known format. */
export class SealedFormatError extends UntrustedRecordError {
  override readonly name = 'SealedFormatError'
  constructor (readonly place: string) {
    super(`the shared state at ${place} is not a sealed value this version understands (expected ${VERSION}:...)`)
  }
}

function checkKey (key: Buffer): void {
  if (key.length !== FLEET_KEY_BYTES) throw new FleetKeyError(`must be ${FLEET_KEY_BYTES} bytes (got ${key.length})`)
}

/**
 * Encrypts `plaintext` for storage at `place` (the Redis key name, with the hash field when there is
 * one): `v1:` + base64(IV ‖ tag ‖ ciphertext). `place` is authenticated, so a value copied to
 * another place does not open.
 */
export function seal (key: Buffer, place: string, plaintext: string): string {
  checkKey(key)
  const iv = randomBytes(IV_BYTES)
  const cipher = createCipheriv('aes-256-gcm', key, iv)
  cipher.setAAD(Buffer.from(place, 'utf8'))
  const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()])
  return `${VERSION}:${Buffer.concat([iv, cipher.getAuthTag(), ciphertext]).toString('base64')}`
}

/** Decrypts a value sealed for `place`; throws FleetKeyMismatchError when this key or place does not fit. */
export function open (key: Buffer, place: string, sealed: string): string {
  checkKey(key)
  const prefix = `${VERSION}:`
  if (!sealed.startsWith(prefix)) throw new SealedFormatError(place)
  const body = sealed.slice(prefix.length)
  const bytes = Buffer.from(body, 'base64')
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body) || bytes.length < IV_BYTES + TAG_BYTES) throw new SealedFormatError(place)
  const decipher = createDecipheriv('aes-256-gcm', key, bytes.subarray(0, IV_BYTES))
  decipher.setAAD(Buffer.from(place, 'utf8'))
  decipher.setAuthTag(bytes.subarray(IV_BYTES, IV_BYTES + TAG_BYTES))
  try {
    return Buffer.concat([decipher.update(bytes.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString('utf8')
  } catch {
    throw new FleetKeyMismatchError(place)
  }
}

/** Seals a JSON record (several fields in one AEAD payload: none can be changed or swapped alone). */
export function sealRecord (key: Buffer, place: string, record: object): string {
  return seal(key, place, JSON.stringify(record))
}

/**
 * Opens a record sealed with sealRecord and checks its shape with `valid`; a record that opens but is
 * not of that shape was written by another version (SealedFormatError).
 */
export function openRecord<T> (key: Buffer, place: string, sealed: string, valid: (value: unknown) => value is T): T {
  let value: unknown
  try {
    value = JSON.parse(open(key, place, sealed))
  } catch (error) {
    if (error instanceof SyntaxError) throw new SealedFormatError(place)
    throw error
  }
  if (!valid(value)) throw new SealedFormatError(place)
  return value
}
