// The fleet key as a setting (M2M_PROXY_FLEET_KEY or _FILE): its size and spellings. The sealing with it is
// fleet/crypto.ts.

export const FLEET_KEY_BYTES = 32

/** A fleet key that cannot be used; the message never contains the key. */
export class FleetKeyError extends Error {
  override readonly name = 'FleetKeyError'
}

/**
 * Reads a fleet key written as 64 hex digits or as base64 (standard or URL-safe, padding optional)
 * of exactly 32 bytes. Errors give the length, never the key.
 */
export function parseFleetKey (text: string): Buffer {
  const value = text.trim()
  const hint = 'generate one with: openssl rand -hex 32'
  if (/^[0-9a-fA-F]{64}$/.test(value)) return Buffer.from(value, 'hex')
  const isHex = /^[0-9a-fA-F]+$/.test(value)
  // 64 characters is never a 32-byte base64 key (43 or 44): a few that are not hex digits are typos in a hex key.
  const notHex = [...value].flatMap((character, index) => (/[0-9a-fA-F]/.test(character) ? [] : [index + 1]))
  if (value.length === FLEET_KEY_BYTES * 2 && notHex.length > 0 && notHex.length <= 4) {
    throw new FleetKeyError(
      `looks like ${FLEET_KEY_BYTES * 2} hex digits, but character ${notHex.join(', ')} is not one (0-9, a-f); ${hint}`
    )
  }
  const unpadded = value
    .replace(/={1,2}$/, '')
    .replaceAll('-', '+')
    .replaceAll('_', '/')
  if (/^[A-Za-z0-9+/]+$/.test(unpadded)) {
    const bytes = Buffer.from(unpadded, 'base64')
    if (bytes.toString('base64').replace(/=+$/, '') === unpadded) {
      if (bytes.length === FLEET_KEY_BYTES) return bytes
      if (!isHex) {
        throw new FleetKeyError(`must be ${FLEET_KEY_BYTES} bytes (its base64 decodes to ${bytes.length}); ${hint}`)
      }
    }
  }
  if (isHex) {
    throw new FleetKeyError(
      `must be ${FLEET_KEY_BYTES} bytes: ${FLEET_KEY_BYTES * 2} hex digits (got ${value.length}); ${hint}`
    )
  }
  throw new FleetKeyError(
    `must be ${FLEET_KEY_BYTES} bytes written as ${FLEET_KEY_BYTES * 2} hex digits or as base64 (got ${value.length} characters that are neither); ${hint}`
  )
}
