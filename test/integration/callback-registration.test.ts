// The whole callback loop in one process: the admin registers the inbox with ThingSpace (the simulator) through the
// proxy's own session, with a username and password the proxy made; an asynchronous request's callbacks arrive from
// the simulator, are stored, and are read by request id. Then the refusals of the admin routes.

import t from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { ADMIN_TOKEN, startStack, type Stack } from '../helpers/stack.js'
import { adminCallbacks, callbackStack } from '../helpers/callbacks.js'
import { DEMO_ACCOUNT_NAME } from '../../src/simulator/app.js'
import { GENERATED_CREDENTIALS_FILE } from '../../src/callbacks/credentials.js'

async function activate (stack: Stack, devices: string[]): Promise<string> {
  const answer = await stack.call('POST', '/api/m2m/v1/devices/actions/activate', {
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      accountName: DEMO_ACCOUNT_NAME,
      devices: devices.map((id) => ({ deviceIds: [{ id, kind: 'imei' }] })),
      servicePlan: 'm2m_4G'
    })
  })
  t.equal(answer.status, 200, 'the activation is accepted')
  return (answer.json() as { requestId: string }).requestId
}

t.test('register, activate, read the result by request id, list, remove', async (t) => {
  const stack = await callbackStack(t)
  const callbackUrl = stack.proxy.callbackUrl ?? ''
  const made = JSON.parse(fs.readFileSync(path.join(stack.dir, GENERATED_CREDENTIALS_FILE), 'utf8')) as {
    username: string
    password: string
  }
  t.equal(fs.statSync(path.join(stack.dir, GENERATED_CREDENTIALS_FILE)).mode & 0o777, 0o600, 'made, owner only')
  t.ok(made.password.length >= 32, 'a long random password')

  const registered = await adminCallbacks(stack, 'POST', { url: `${callbackUrl}/` })
  t.equal(registered.status, 200)
  t.same(registered.json, {
    accountName: DEMO_ACCOUNT_NAME,
    services: [{ service: 'CarrierService', done: true, url: `${callbackUrl}/CarrierService` }]
  }, 'the trailing slash of the base URL is not doubled')
  const listed = await adminCallbacks(stack, 'GET')
  t.same(listed.json, { accountName: DEMO_ACCOUNT_NAME, callbacks: [{ name: 'CarrierService', url: `${callbackUrl}/CarrierService` }] })

  const requestId = await activate(stack, ['35000000000001', '35000000000002'])
  const first = await stack.call('GET', `/callbacks/requests/${requestId}?wait=10`)
  t.equal(first.status, 200, 'the long poll answers once the first callback is stored')
  type Read = { callbacks: Array<Record<string, any>> }
  let callbacks = (first.json() as Read).callbacks
  for (let i = 0; i < 100 && callbacks.length < 2; i++) {
    await new Promise((resolve) => setTimeout(resolve, 20))
    callbacks = ((await stack.call('GET', `/callbacks/requests/${requestId}`)).json() as Read).callbacks
  }
  t.equal(callbacks.length, 2, 'one callback per device')
  const stored = callbacks[0] as Record<string, any>
  t.match(stored, {
    service: 'CarrierService',
    requestId,
    deviceIds: [{ kind: 'imei' }],
    body: { status: 'Success', deviceResponse: { activateResponse: { status: 'Success' } }, callbackCount: 1, maxCallbackThreshold: 4 }
  })
  t.notOk('password' in stored.body || 'username' in stored.body, 'the credentials are not stored')
  t.equal(stack.sim.callbacks.stats.callbacksDelivered, 2)
  t.notMatch(stack.logs.lines.join('\n'), made.password, 'the password is in no log line')
  t.notMatch(JSON.stringify([registered.json, listed.json, callbacks]), made.password, 'nor in any answer')

  const removed = await adminCallbacks(stack, 'DELETE', { services: ['CarrierService'] })
  t.same([removed.status, removed.json.services], [200, [{ service: 'CarrierService', done: true }]])
  t.same((await adminCallbacks(stack, 'GET')).json.callbacks, [], 'ThingSpace has none now')
  await activate(stack, ['35000000000003'])
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.equal(stack.sim.callbacks.stats.callbacksQueued, 2, 'no listener, no callback')
})

t.test('the made credentials survive a restart, and registering again uses them', async (t) => {
  const stack = await callbackStack(t)
  const file = path.join(stack.dir, GENERATED_CREDENTIALS_FILE)
  const before = fs.readFileSync(file, 'utf8')
  await stack.stopProxy()
  const again = await startStack(t, {
    dir: stack.dir,
    env: { M2M_PROXY_CALLBACK_PORT: '0', M2M_PROXY_ACCOUNT_NAME: DEMO_ACCOUNT_NAME }
  })
  t.equal(fs.readFileSync(file, 'utf8'), before, 'the same pair: what ThingSpace holds still works')
  t.equal((await adminCallbacks(again, 'POST', { url: 'https://callbacks.example.com' })).status, 200)
  const sent = again.sim.callbacks.list(DEMO_ACCOUNT_NAME)
  t.same(sent, [{ accountName: DEMO_ACCOUNT_NAME, name: 'CarrierService', url: 'https://callbacks.example.com/CarrierService' }])
})

t.test('refusals: inbox off, bad input, no account or URL, ThingSpace refusing, no token', async (t) => {
  const off = await startStack(t)
  const inboxOff = await adminCallbacks(off, 'POST', { url: 'https://callbacks.example.com', accountName: DEMO_ACCOUNT_NAME })
  t.same([inboxOff.status, inboxOff.json.errorCode], [409, 'Proxy.Conflict'])
  t.match(inboxOff.json.errorMessage, /M2M_PROXY_CALLBACK_PORT/)

  const stack = await callbackStack(t)
  const cases: Array<[string, unknown, RegExp]> = [
    ['no URL anywhere', {}, /url is required \(or set M2M_PROXY_CALLBACK_PUBLIC_URL\)/],
    ['an unknown service', { url: 'https://a.example', services: ['Pizza'] }, /unknown callback service "Pizza"/],
    ['services not a list', { url: 'https://a.example', services: 'CarrierService' }, /services must be a non-empty list/],
    ['a URL with credentials', { url: 'https://u:p@a.example' }, /^url: must not hold credentials/],
    ['a URL ending in a bare ?', { url: 'https://a.example/?' }, /^url: must not hold credentials, a query or a fragment/],
    ['a URL ending in a bare #', { url: 'https://a.example/#' }, /^url: must not hold credentials, a query or a fragment/],
    ['a URL of another scheme', { url: 'ftp://a.example' }, /^url: must use https:\/\//],
    ['a bad account name', { url: 'https://a.example', accountName: '../x' }, /^accountName: must be an account name/],
    ['not an object', ['x'], /the body must be a JSON object/]
  ]
  for (const [name, body, message] of cases) {
    const answer = await adminCallbacks(stack, 'POST', body)
    t.equal(answer.status, 400, name)
    t.match(answer.json.errorMessage, message, name)
  }
  const refused = await adminCallbacks(stack, 'POST', { url: 'https://a.example', accountName: '9999999999-00001', services: ['CarrierService', 'DeviceUsage'] })
  t.equal(refused.status, 502, 'ThingSpace refused: a bad gateway answer, each service told')
  t.equal(refused.json.errorCode, 'Proxy.UpstreamRefused')
  t.equal(refused.json.services.length, 2, 'every service was tried')
  t.match(refused.json.services[0], { service: 'CarrierService', done: false, status: 400 })
  t.match(refused.json.errorMessage, /refused to register 2 of 2 callback services; CarrierService: 400/)
  const listRefused = await stack.adminCall('GET', '/admin/callbacks?accountName=9999999999-00001', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
  t.same([listRefused.status, (listRefused.json() as { errorCode: string }).errorCode], [502, 'Proxy.UpstreamRefused'])

  const noToken = await stack.adminCall('POST', '/admin/callbacks', { body: '{}' })
  t.equal(noToken.status, 401)
  t.same(stack.sim.callbacks.list(DEMO_ACCOUNT_NAME), [], 'nothing registered by any refused call')
})

t.test('without M2M_PROXY_ACCOUNT_NAME the account is asked for', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-callback-noaccount-'))
  t.teardown(() => { fs.rmSync(dir, { recursive: true, force: true, maxRetries: 5 }) })
  const stack = await startStack(t, {
    dir,
    env: { M2M_PROXY_CALLBACK_PORT: '0', M2M_PROXY_CALLBACK_PUBLIC_URL: 'https://callbacks.example.com/inbox/' }
  })
  const answer = await adminCallbacks(stack, 'POST', {})
  t.same([answer.status, answer.json.errorMessage], [400, 'accountName is required (or set M2M_PROXY_ACCOUNT_NAME)'])
  const named = await adminCallbacks(stack, 'POST', { accountName: DEMO_ACCOUNT_NAME, services: ['CarrierService', 'SMSDelivery'] })
  t.equal(named.status, 200)
  t.same(stack.sim.callbacks.list(DEMO_ACCOUNT_NAME).map((entry) => entry.url), [
    'https://callbacks.example.com/inbox/CarrierService',
    'https://callbacks.example.com/inbox/SMSDelivery'
  ], 'M2M_PROXY_CALLBACK_PUBLIC_URL is the default base')
})
