// The pieces of the Device Location callback check: the signature (any header, hex or base64, constant time), the
// file that keeps the keys, and finding the key in a registration's answer.

import t from 'tap'
import { createHmac } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { signedByThingSpace } from '../../src/callbacks/location-signature.js'
import { FileLocationKeys, LOCATION_KEYS_FILE, withNewKey } from '../../src/callbacks/location-keys.js'
import { sharedKeyOf } from '../../src/callbacks/registration.js'

const KEY = 'a3f1c2d4e5b6a7980112233445566778899aabbccddeeff00112233445566778'
const BODY = Buffer.from('{"txid":"tx-1","status":"COMPLETED","note":"caf\u00e9"}')
const mac = (key: string, body: Buffer): Buffer => createHmac('sha256', key).update(body).digest()

t.test('a signature is found in any header, written in hex or base64, with or without a prefix', async (t) => {
  const good = mac(KEY, BODY)
  const flipped = Buffer.from(good)
  flipped[0] = (flipped[0] ?? 0) ^ 0x01
  const accepted: Array<Record<string, string | string[]>> = [
    { 'x-signature': good.toString('hex') },
    { 'x-signature': good.toString('hex').toUpperCase() },
    { whatever: good.toString('base64') },
    { whatever: good.toString('base64url') },
    { 'x-hub-signature-256': `sha256=${good.toString('hex')}` },
    { signature: `HMAC-SHA256=${good.toString('base64')}` },
    { 'x-a': 'unrelated', 'x-b': ['first', ` ${good.toString('hex')} `] }
  ]
  for (const headers of accepted) t.ok(signedByThingSpace(BODY, headers, [KEY]), JSON.stringify(headers).slice(0, 40))
  const refused: Array<[string, Record<string, string | undefined>, string[]]> = [
    ['no header at all', {}, [KEY]],
    ['no key', { 'x-signature': good.toString('hex') }, []],
    ['another key', { 'x-signature': mac(`${KEY}0`, BODY).toString('hex') }, [KEY]],
    ['another body', { 'x-signature': mac(KEY, Buffer.from(`${BODY.toString()} `)).toString('hex') }, [KEY]],
    ['half a signature', { 'x-signature': good.toString('hex').slice(0, 32) }, [KEY]],
    ['a signature with a byte changed', { 'x-signature': flipped.toString('hex') }, [KEY]],
    ['the key itself in a header', { 'x-key': KEY }, [KEY]],
    ['an undefined header', { 'x-signature': undefined }, [KEY]]
  ]
  for (const [name, headers, keys] of refused) t.notOk(signedByThingSpace(BODY, headers, keys), name)
  t.ok(signedByThingSpace(BODY, { s: mac('older', BODY).toString('hex') }, [KEY, 'older']), 'the key before the newest')
})

t.test('the signature covers the bytes as sent: a body that is not UTF-8 is checked as it is', async (t) => {
  const raw = Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0xff, 0x7d])
  t.ok(signedByThingSpace(raw, { s: mac(KEY, raw).toString('hex') }, [KEY]))
  t.notOk(signedByThingSpace(Buffer.from(raw.toString('utf8')), { s: mac(KEY, raw).toString('hex') }, [KEY]),
    'decoding and re-encoding would change what is signed')
})

t.test('the key file: the newest two per service, forgotten on removal, kept across instances, never quoted', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-location-keys-'))
  t.teardown(() => { fs.rmSync(dir, { recursive: true, force: true }) })
  const keys = new FileLocationKeys(dir)
  t.same(await keys.keys('Location'), [], 'none before any registration')
  await keys.remember('Location', 'k1')
  await keys.remember('Location', 'k2')
  await keys.remember('Location', 'k3')
  await keys.remember('DeviceLocation', 'd1')
  t.same(await keys.keys('Location'), ['k3', 'k2'])
  t.same(await new FileLocationKeys(dir).keys('Location'), ['k3', 'k2'], 'read back by another instance')
  t.equal(fs.statSync(path.join(dir, LOCATION_KEYS_FILE)).mode & 0o777, 0o600)
  await keys.forget('Location')
  t.same(await new FileLocationKeys(dir).keys('Location'), [])
  t.same(await new FileLocationKeys(dir).keys('DeviceLocation'), ['d1'], 'the other service keeps its key')
  t.same(withNewKey(['a', 'b'], 'a'), ['a', 'b'], 'the same key again is not kept twice')

  fs.writeFileSync(path.join(dir, LOCATION_KEYS_FILE), '{"Location": "secret-value-not-a-list"}')
  await t.rejects(new FileLocationKeys(dir).keys('Location'), /location-callback-keys\.json does not hold/)
  await new FileLocationKeys(dir).keys('Location').catch((error: Error) => {
    t.notMatch(error.message, 'secret-value', 'the damaged file is named, never quoted')
  })
})

t.test('the key in a registration answer: the named header, or the one header whose name says key', async (t) => {
  const answer = (headers: Record<string, string | string[] | undefined>): Parameters<typeof sharedKeyOf>[0] => ({
    statusCode: 200,
    body: {},
    headers
  })
  t.equal(sharedKeyOf(answer({ 'content-type': 'application/json', 'x-callback-shared-key': ' k ' }), undefined), 'k')
  t.equal(sharedKeyOf(answer({ 'x-hmac-secret': 'k' }), undefined), 'k')
  t.same(sharedKeyOf(answer({ 'x-api-key': 'a', 'x-secret': 'b' }), undefined), { headerNames: ['x-api-key', 'x-secret'] },
    'two candidates: none is guessed')
  t.same(sharedKeyOf(answer({ date: 'x', 'x-request-id': 'y' }), undefined), { headerNames: ['date', 'x-request-id'] })
  t.equal(sharedKeyOf(answer({ 'x-api-key': 'a', 'x-token': 'b' }), 'x-token'), 'b', 'the named header, whatever its name')
  t.same(sharedKeyOf(answer({ 'x-token': '' }), 'x-token'), { headerNames: ['x-token'] }, 'an empty value is no key')
  t.same(sharedKeyOf(answer({ 'x-key': ['a', 'b'] }), undefined), { headerNames: ['x-key'] }, 'a repeated header is no key')
})
