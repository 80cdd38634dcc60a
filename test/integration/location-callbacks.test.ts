// Device Location callbacks, signed instead of carrying a username and password: the admin registers the listener
// through Device Location's own API, the proxy keeps the shared key ThingSpace (the simulator) returns in a header, an
// asynchronous location request's callback arrives signed and is stored; forged, unsigned, re-signed with another key
// or unregistered ones are refused and not stored; removing the listener forgets its key.

import t from 'tap'
import { createHmac } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { startStack, type Stack } from '../helpers/stack.js'
import { adminCallbacks, callbackStack } from '../helpers/callbacks.js'
import { DEMO_ACCOUNT_NAME } from '../../src/simulator/app.js'
import { LOCATION_KEYS_FILE } from '../../src/callbacks/location-keys.js'

function keptKeys (stack: Stack): Record<string, string[]> {
  return JSON.parse(fs.readFileSync(path.join(stack.dir, LOCATION_KEYS_FILE), 'utf8')) as Record<string, string[]>
}

/** A callback POSTed straight to the listener, as someone on the internet could. */
async function post (
  stack: Stack,
  service: string,
  body: string,
  headers: Record<string, string> = {}
): Promise<number> {
  const answer = await fetch(`${stack.proxy.callbackUrl ?? ''}/${service}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body
  })
  await answer.arrayBuffer()
  return answer.status
}

const sign = (key: string, body: string): Buffer => createHmac('sha256', key).update(body).digest()

t.test('register, request locations, read the signed callback by txid, remove', async (t) => {
  const stack = await callbackStack(t)
  const url = stack.proxy.callbackUrl ?? ''
  const registered = await adminCallbacks(stack, 'POST', { url, services: ['DeviceLocation', 'CarrierService'] })
  t.same(registered, {
    status: 200,
    json: {
      accountName: DEMO_ACCOUNT_NAME,
      services: [
        { service: 'DeviceLocation', done: true, url: `${url}/DeviceLocation` },
        { service: 'CarrierService', done: true, url: `${url}/CarrierService` }
      ]
    }
  })
  const keys = keptKeys(stack)
  const key = keys.DeviceLocation?.[0] ?? ''
  t.equal(key, stack.sim.callbacks.signingKeyOf(DEMO_ACCOUNT_NAME, 'DeviceLocation'), 'the key from the answer header is kept')
  t.equal(fs.statSync(path.join(stack.dir, LOCATION_KEYS_FILE)).mode & 0o777, 0o600, 'owner only')
  t.same(stack.sim.callbacks.list(DEMO_ACCOUNT_NAME, true), [{ accountName: DEMO_ACCOUNT_NAME, name: 'DeviceLocation', url: `${url}/DeviceLocation` }],
    'registered with Device Location, under its own API')
  const listed = await adminCallbacks(stack, 'GET')
  t.same(listed.json.callbacks.map((entry: { name: string }) => entry.name).sort(), ['CarrierService', 'DeviceLocation'],
    'the list holds both APIs\' callbacks')

  const requested = await stack.call('POST', '/api/loc/v1/devicelocations', {
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ accountName: DEMO_ACCOUNT_NAME, deviceList: [{ id: '7892345678', kind: 'mdn' }] })
  })
  t.equal(requested.status, 200)
  const { txid } = requested.json() as { txid: string }
  const read = await stack.call('GET', `/callbacks/requests/${txid}?wait=10`)
  t.equal(read.status, 200, 'the signed callback was stored and found by its txid')
  const [stored] = (read.json() as { callbacks: Array<Record<string, any>> }).callbacks
  t.match(stored, { service: 'DeviceLocation', requestId: txid, body: { txid, status: 'COMPLETED', locations: [{ msid: '7892345678' }] } })
  t.equal(stack.sim.callbacks.stats.callbacksDelivered, 1)
  const lines = stack.logs.lines.join('\n')
  t.notMatch(lines, key, 'the key is in no log line')
  t.notMatch(JSON.stringify([registered.json, listed.json, stored]), key, 'nor in any answer')

  const removed = await adminCallbacks(stack, 'DELETE', { services: ['DeviceLocation'] })
  t.same([removed.status, removed.json.services], [200, [{ service: 'DeviceLocation', done: true }]])
  t.same(keptKeys(stack), {}, 'its key is forgotten')
  const late = JSON.stringify({ txid: 'late', status: 'COMPLETED' })
  t.equal(await post(stack, 'DeviceLocation', late, { 'x-callback-signature': sign(key, late).toString('hex') }), 401,
    'a callback signed with the removed key is refused')
})

t.test('refused and not stored: no signature, a wrong one, another body, another key, no key yet', async (t) => {
  const stack = await callbackStack(t)
  t.equal((await adminCallbacks(stack, 'POST', { url: stack.proxy.callbackUrl, services: ['DeviceLocation'] })).status, 200)
  const key = keptKeys(stack).DeviceLocation?.[0] ?? ''
  const body = JSON.stringify({ txid: 'tx-forged', status: 'COMPLETED', locations: [] })
  const cases: Array<[string, string, string, Record<string, string>]> = [
    ['no signature', 'DeviceLocation', body, {}],
    ['a signature of another body', 'DeviceLocation', body, { 'x-callback-signature': sign(key, `${body} `).toString('hex') }],
    ['a signature under another key', 'DeviceLocation', body, { 'x-callback-signature': sign(`${key}x`, body).toString('hex') }],
    ['a truncated signature', 'DeviceLocation', body, { 'x-callback-signature': sign(key, body).toString('hex').slice(0, 62) }],
    ['the username and password of the other API', 'DeviceLocation', body, { authorization: 'Basic eDp5' }],
    ['Location: never registered, so no key', 'Location', body, { 'x-callback-signature': sign(key, body).toString('hex') }]
  ]
  for (const [name, service, text, headers] of cases) t.equal(await post(stack, service, text, headers), 401, name)
  t.same((await stack.call('GET', '/callbacks?limit=100')).json(), { callbacks: [], next: 0 }, 'none was stored')
  t.equal(stack.logs.lines.filter((line) => line.includes('callback refused')).length, cases.length, 'one log line per refusal')

  // Where ThingSpace puts the signature, and how it writes it, does not matter: only the key's holder can make it.
  const spellings: Array<[string, string]> = [
    ['x-callback-signature', sign(key, body).toString('hex').toUpperCase()],
    ['x-signature', `sha256=${sign(key, body).toString('base64')}`],
    ['signature', sign(key, body).toString('base64url')]
  ]
  for (const [header, value] of spellings) t.equal(await post(stack, 'DeviceLocation', body, { [header]: value }), 200, `${header}: ${value.slice(0, 10)}…`)
  t.equal(((await stack.call('GET', '/callbacks/requests/tx-forged')).json() as { callbacks: unknown[] }).callbacks.length, 3)
})

t.test('a new registration changes the key; the one before stays accepted for callbacks on their way', async (t) => {
  const stack = await callbackStack(t)
  const register = async (): Promise<number> => (await adminCallbacks(stack, 'POST', { url: stack.proxy.callbackUrl, services: ['DeviceLocation'] })).status
  t.equal(await register(), 200)
  const first = keptKeys(stack).DeviceLocation?.[0] ?? ''
  t.equal(await register(), 200)
  t.equal(await register(), 200)
  const kept = keptKeys(stack).DeviceLocation ?? []
  t.equal(kept.length, 2, 'the newest key and the one before it')
  t.notOk(kept.includes(first), 'the oldest is dropped')
  const body = JSON.stringify({ txid: 'tx-rotated' })
  t.equal(await post(stack, 'DeviceLocation', body, { 'x-callback-signature': sign(kept[1] ?? '', body).toString('hex') }), 200, 'the one before')
  t.equal(await post(stack, 'DeviceLocation', body, { 'x-callback-signature': sign(first, body).toString('hex') }), 401, 'the oldest')

  await stack.stopProxy()
  const again = await startStack(t, { dir: stack.dir, env: { M2M_PROXY_CALLBACK_PORT: '0', M2M_PROXY_ACCOUNT_NAME: DEMO_ACCOUNT_NAME } })
  t.equal(await post(again, 'DeviceLocation', body, { 'x-callback-signature': sign(kept[0] ?? '', body).toString('hex') }), 200,
    'the keys survive a restart')
})

t.test('no header of the answer can be taken for the key: told, with the header names, and not done', async (t) => {
  const stack = await callbackStack(t, { M2M_PROXY_CALLBACK_LOCATION_KEY_HEADER: 'X-Location-Key' })
  const answer = await adminCallbacks(stack, 'POST', { url: stack.proxy.callbackUrl, services: ['DeviceLocation'] })
  t.equal(answer.status, 502)
  t.equal(answer.json.errorCode, 'Proxy.UpstreamRefused')
  t.match(answer.json.services[0], { service: 'DeviceLocation', done: false, errorCode: 'Proxy.NoSharedKey' })
  t.match(answer.json.services[0].errorMessage, /\(headers: .*x-callback-shared-key.*\); set M2M_PROXY_CALLBACK_LOCATION_KEY_HEADER/)
  t.notMatch(JSON.stringify(answer.json), stack.sim.callbacks.signingKeyOf(DEMO_ACCOUNT_NAME, 'DeviceLocation') ?? 'none', 'never the key')
  t.notOk(fs.existsSync(path.join(stack.dir, LOCATION_KEYS_FILE)), 'no key kept')
  const sent = stack.sim.callbacks.list(DEMO_ACCOUNT_NAME, true)
  t.equal(sent.length, 1, 'ThingSpace did register it: registering again with the right header fixes it')

  const named = await callbackStack(t, { M2M_PROXY_CALLBACK_LOCATION_KEY_HEADER: 'X-Callback-Shared-Key' })
  t.equal((await adminCallbacks(named, 'POST', { url: named.proxy.callbackUrl, services: ['Location'] })).status, 200, 'the named header is read')
  t.equal(keptKeys(named).Location?.[0]?.length, 64)
})
