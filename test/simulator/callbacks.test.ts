// The simulator's callbacks: registration routes, asynchronous device actions, and delivery to a listener with
// ThingSpace's resends (callbackCount, maxCallbackThreshold), over real sockets on 127.0.0.1.

import http from 'node:http'
import t, { type Test } from 'tap'
import { buildSimulator, DEMO_ACCOUNT_NAME, DEMO_CREDENTIALS, type Simulator } from '../../src/simulator/app.js'
import { CallbackDeliveries } from '../../src/simulator/callbacks.js'

/** A listener answering each POST with the next status of `statuses` (the last one repeated); keeps the bodies. */
type Listener = { url: string; bodies: Array<Record<string, unknown>> }
type Api = (method: string, path: string, body?: unknown) => Promise<Response>

async function listener (t: Test, statuses: number[]): Promise<Listener> {
  const bodies: Array<Record<string, unknown>> = []
  const server = http.createServer((request, response) => {
    let text = ''
    request.on('data', (chunk: Buffer) => { text += chunk.toString() })
    request.on('end', () => {
      bodies.push(JSON.parse(text) as Record<string, unknown>)
      response.statusCode = statuses[Math.min(bodies.length - 1, statuses.length - 1)] ?? 200
      response.end()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise((resolve) => server.close(resolve)))
  const address = server.address() as { port: number }
  return { url: `http://127.0.0.1:${address.port}/CarrierService`, bodies }
}

async function until (condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 400 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 10))
  if (!condition()) throw new Error(`timed out waiting for ${what}`)
}

async function withSession (t: Test): Promise<{ sim: Simulator; api: Api }> {
  const sim = buildSimulator({ ...DEMO_CREDENTIALS, callbackDelivery: { firstDelayMs: 1, retryDelayMs: 10 } })
  const base = await sim.app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => sim.app.close())
  const token = await fetch(`${base}/api/ts/v1/oauth2/token`, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: `Basic ${Buffer.from(`${DEMO_CREDENTIALS.clientId}:${DEMO_CREDENTIALS.clientSecret}`).toString('base64')}`
    },
    body: 'grant_type=client_credentials'
  })
  const bearer = ((await token.json()) as { access_token: string }).access_token
  const login = await fetch(`${base}/api/m2m/v1/session/login`, {
    method: 'POST',
    headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' },
    body: JSON.stringify({ username: DEMO_CREDENTIALS.username, password: DEMO_CREDENTIALS.password })
  })
  const session = ((await login.json()) as { sessionToken: string }).sessionToken
  const api = async (method: string, path: string, body?: unknown): Promise<Response> =>
    await fetch(`${base}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${bearer}`,
        'vz-m2m-token': session,
        ...(body === undefined ? {} : { 'content-type': 'application/json' })
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) })
    })
  return { sim, api }
}

const DEVICE = { deviceIds: [{ id: '35000000000009', kind: 'imei' }] }

t.test('an activation is reported by a CarrierService callback, sent again until it is taken', async (t) => {
  const { sim, api } = await withSession(t)
  const target = await listener(t, [500, 503, 200])
  const registered = await api('POST', `/api/m2m/v1/callbacks/${DEMO_ACCOUNT_NAME}`, {
    name: 'CarrierService',
    url: target.url,
    username: 'callback-user',
    password: 'callback-password-0123456789'
  })
  t.same(await registered.json(), { accountName: DEMO_ACCOUNT_NAME, serviceName: 'CarrierService' })
  t.same(await (await api('GET', `/api/m2m/v1/callbacks/${DEMO_ACCOUNT_NAME}`)).json(), [
    { accountName: DEMO_ACCOUNT_NAME, name: 'CarrierService', url: target.url }
  ], 'listed without the username and password')

  const accepted = await api('POST', '/api/m2m/v1/devices/actions/suspend', { accountName: DEMO_ACCOUNT_NAME, devices: [DEVICE] })
  const { requestId } = (await accepted.json()) as { requestId: string }
  t.match(requestId, /^[0-9a-f-]{36}$/)
  await until(() => sim.callbacks.stats.callbacksDelivered === 1, 'the delivery')
  t.same(target.bodies.map((body) => body.callbackCount), [1, 2, 3], 'sent three times, counted')
  t.match(target.bodies[2], {
    username: 'callback-user',
    password: 'callback-password-0123456789',
    requestId,
    deviceIds: DEVICE.deviceIds,
    deviceResponse: { suspendResponse: { status: 'Success' } },
    status: 'Success',
    maxCallbackThreshold: 4
  })
  t.same(sim.callbacks.stats, {
    callbacksQueued: 1,
    callbacksDelivered: 1,
    callbackAttemptsFailed: 2,
    callbacksAbandoned: 0
  })
})

t.test('a listener that never takes it: four deliveries, then given up; an unreachable one alike', async (t) => {
  const deliveries = new CallbackDeliveries({ firstDelayMs: 1, retryDelayMs: 5, timeoutMs: 1000 })
  t.teardown(() => { deliveries.close() })
  const refusing = await listener(t, [500])
  deliveries.register('acct', 'CarrierService', { url: refusing.url })
  deliveries.register('other', 'CarrierService', { url: 'http://127.0.0.1:1/CarrierService' })
  deliveries.send('acct', 'CarrierService', { requestId: 'r-1' })
  deliveries.send('other', 'CarrierService', { requestId: 'r-2' })
  deliveries.send('acct', 'DeviceUsage', { requestId: 'r-3' })
  await until(() => deliveries.stats.callbacksAbandoned === 2, 'both given up')
  t.equal(refusing.bodies.length, 4, 'maxCallbackThreshold deliveries')
  t.notOk('username' in (refusing.bodies[0] ?? {}), 'no username registered, none sent')
  t.same(deliveries.stats, { callbacksQueued: 2, callbacksDelivered: 0, callbackAttemptsFailed: 8, callbacksAbandoned: 2 }, 'nothing for an unregistered service')
})

t.test('close() stops the resends', async (t) => {
  const deliveries = new CallbackDeliveries({ firstDelayMs: 1, retryDelayMs: 50 })
  const refusing = await listener(t, [500])
  deliveries.register('acct', 'CarrierService', { url: refusing.url })
  deliveries.send('acct', 'CarrierService', { requestId: 'r-1' })
  await until(() => refusing.bodies.length === 1, 'the first delivery')
  deliveries.close()
  await new Promise((resolve) => setTimeout(resolve, 150))
  t.equal(refusing.bodies.length, 1, 'no resend after close')
  deliveries.send('acct', 'CarrierService', { requestId: 'r-2' })
  t.equal(deliveries.stats.callbacksQueued, 1, 'nothing queued once closed')
})

t.test('the routes refuse what ThingSpace would', async (t) => {
  const { sim, api } = await withSession(t)
  const path = `/api/m2m/v1/callbacks/${DEMO_ACCOUNT_NAME}`
  const cases: Array<[string, string, string, unknown, number]> = [
    ['an unknown service', 'POST', path, { name: 'Pizza', url: 'https://a.example' }, 400],
    ['no URL', 'POST', path, { name: 'CarrierService' }, 400],
    ['a relative URL', 'POST', path, { name: 'CarrierService', url: '/x' }, 400],
    ['a password not a string', 'POST', path, { name: 'CarrierService', url: 'https://a.example', password: 1 }, 400],
    ['an unknown account', 'POST', '/api/m2m/v1/callbacks/9999999999-00001', { name: 'CarrierService', url: 'https://a.example' }, 400],
    ['listing an unknown account', 'GET', '/api/m2m/v1/callbacks/9999999999-00001', undefined, 400],
    ['removing what is not there', 'DELETE', `${path}/name/CarrierService`, undefined, 400],
    ['removing for an unknown account', 'DELETE', '/api/m2m/v1/callbacks/9999999999-00001/name/CarrierService', undefined, 400],
    ['an unknown action', 'POST', '/api/m2m/v1/devices/actions/explode', { devices: [DEVICE] }, 404],
    ['no devices', 'POST', '/api/m2m/v1/devices/actions/activate', { devices: [] }, 400],
    ['a device without ids', 'POST', '/api/m2m/v1/devices/actions/activate', { devices: [{}] }, 400],
    ['a bad device id', 'POST', '/api/m2m/v1/devices/actions/activate', { devices: [{ deviceIds: [{ id: 1 }] }] }, 400],
    ['an action for an unknown account', 'POST', '/api/m2m/v1/devices/actions/restore', { accountName: 'nobody', devices: [DEVICE] }, 400]
  ]
  for (const [name, method, route, body, status] of cases) {
    t.equal((await api(method, route, body)).status, status, name)
  }
  t.equal((await api('POST', '/api/m2m/v1/devices/actions/activate', { devices: [DEVICE] })).status, 200, 'the account defaults to the only one')
  t.equal((await api('POST', '/api/m2m/v1/devices/actions/list', { accountName: DEMO_ACCOUNT_NAME })).status, 200, 'list is still the device list')
  t.same(sim.callbacks.list(DEMO_ACCOUNT_NAME), [])
})
