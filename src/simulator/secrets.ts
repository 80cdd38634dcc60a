// Secret handling for the simulator: constant-time comparison and password generation.
import { createHash, randomInt, timingSafeEqual } from 'node:crypto'

const PASSWORD_ALPHABETS = ['ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz', '0123456789'] as const
const PASSWORD_ALPHABET = PASSWORD_ALPHABETS.join('')
export const GENERATED_PASSWORD_LENGTH_CHARS = 12

/** Compares two secrets without leaking, through timing, where they first differ (hashing equalises lengths). */
export function secretsEqual (given: string, expected: string): boolean {
  const digest = (value: string): Buffer => createHash('sha256').update(value, 'utf8').digest()
  return timingSafeEqual(digest(given), digest(expected))
}

function randomCharFrom (alphabet: string): string {
  return alphabet.charAt(randomInt(alphabet.length))
}

/**
 * A new password like ThingSpace's ("Wh0a1545a84d"): letters and digits, at least one of each kind, never `previous`.
 */
export function generatePassword (previous: string): string {
  for (;;) {
    const chars = PASSWORD_ALPHABETS.map(randomCharFrom)
    while (chars.length < GENERATED_PASSWORD_LENGTH_CHARS) chars.push(randomCharFrom(PASSWORD_ALPHABET))
    // Fisher-Yates, so the guaranteed characters are not always at the front.
    for (let i = chars.length - 1; i > 0; i--) {
      const j = randomInt(i + 1)
      const swap = chars[i] as string
      chars[i] = chars[j] as string
      chars[j] = swap
    }
    const candidate = chars.join('')
    if (candidate !== previous) return candidate
  }
}
