// Sealing of the fleet's secrets: AES-256-GCM under the fleet key, bound to the Redis key name; and reading the fleet
// key.
import { randomBytes } from 'node:crypto'
import t from 'tap'
import {
  FleetKeyError,
  FleetKeyMismatchError,
  open,
  parseFleetKey,
  seal,
  SealedFormatError
} from '../../src/fleet/crypto.js'

const KEY = randomBytes(32)
const PLACE = 'm2m-session-proxy:0123456789abcdef:session#token'

t.test('a sealed value opens with the same key and place, and shows nothing of the secret', async (t) => {
  for (const secret of ['bcce3ea6-2b5e-4ed1-a6a9-2a5e4d0b9f11', '', 'pässwörd ✓ with unicode']) {
    const sealed = seal(KEY, PLACE, secret)
    t.match(sealed, /^v1:[A-Za-z0-9+/]+=*$/, 'versioned format')
    if (secret !== '') t.notOk(sealed.includes(secret))
    t.equal(open(KEY, PLACE, sealed), secret)
  }
  t.not(seal(KEY, PLACE, 'same'), seal(KEY, PLACE, 'same'), 'a random IV each time')
})

t.test('another key does not open it, and says the fleet key differs', async (t) => {
  const sealed = seal(KEY, PLACE, 'secret')
  const error = t.throws(() => open(randomBytes(32), PLACE, sealed)) as Error
  t.ok(error instanceof FleetKeyMismatchError)
  t.match(error.message, /the fleet key differs from the one that wrote this state/)
  t.match(error.message, PLACE, 'names where the value is')
})

t.test('a tampered value does not open', async (t) => {
  const sealed = seal(KEY, PLACE, 'secret value')
  const bytes = Buffer.from(sealed.slice(3), 'base64')
  for (const index of [0, 12, 28, bytes.length - 1]) {
    // IV, tag, first and last ciphertext byte
    const altered = Buffer.from(bytes)
    altered[index] = (altered[index] as number) ^ 1
    t.throws(() => open(KEY, PLACE, `v1:${altered.toString('base64')}`), FleetKeyMismatchError, `byte ${index}`)
  }
})

t.test('a value copied to another key name does not open there', async (t) => {
  const sealed = seal(KEY, PLACE, 'secret')
  t.throws(() => open(KEY, PLACE.replace('session#token', 'password#password'), sealed), FleetKeyMismatchError)
  t.throws(
    () => open(KEY, PLACE.replace('0123456789abcdef', 'fedcba9876543210'), sealed),
    FleetKeyMismatchError,
    'nor under another account'
  )
})

t.test('values that are not sealed values of a known format', async (t) => {
  for (const bad of ['plain-token', 'v2:AAAA', 'v1:', 'v1:AAAA', 'v1:not base64!!' + 'A'.repeat(40)]) {
    t.throws(() => open(KEY, PLACE, bad), SealedFormatError, JSON.stringify(bad))
  }
  t.throws(() => seal(randomBytes(16), PLACE, 'x'), FleetKeyError, 'a key of the wrong size is refused')
  t.throws(() => open(randomBytes(16), PLACE, seal(KEY, PLACE, 'x')), FleetKeyError)
})

t.test('the fleet key is read from 64 hex digits or base64 of 32 bytes', async (t) => {
  const hex = KEY.toString('hex')
  t.same(parseFleetKey(hex), KEY)
  t.same(parseFleetKey(` ${hex.toUpperCase()}\n`), KEY, 'any case, surrounding whitespace ignored')
  t.same(parseFleetKey(KEY.toString('base64')), KEY)
  t.same(parseFleetKey(KEY.toString('base64url')), KEY, 'URL-safe base64 without padding')
  t.same(parseFleetKey(KEY.toString('base64').replace(/=+$/, '')), KEY, 'standard base64 without padding')
})

t.test('a bad fleet key is refused with its length and a hint, never the key', async (t) => {
  const cases: Array<[string, RegExp]> = [
    ['ab'.repeat(31), /64 hex digits \(got 62\)/],
    ['ab'.repeat(33), /64 hex digits \(got 66\)/],
    [randomBytes(16).toString('base64'), /base64 decodes to 16/],
    [randomBytes(48).toString('base64'), /base64 decodes to 48/],
    // A hex key with typos reads as 64 characters of base64 (48 bytes): said as the hex typo it is.
    [`${'ab'.repeat(4)}g${'c'.repeat(55)}`, /looks like 64 hex digits, but character 9 is not one \(0-9, a-f\)/],
    [`${'0'.repeat(20)}oo${'1'.repeat(42)}`, /character 21, 22 is not one/],
    ['not a key at all, has spaces', /neither/],
    ['', /neither/]
  ]
  for (const [bad, expected] of cases) {
    const error = t.throws(() => parseFleetKey(bad), FleetKeyError, JSON.stringify(bad.slice(0, 12))) as Error
    t.match(error.message, expected)
    t.match(error.message, /openssl rand -hex 32/)
    if (bad.length > 4) t.notOk(error.message.includes(bad), 'the key is not echoed')
  }
})
