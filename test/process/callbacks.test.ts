// The callback inbox with real processes: a callback acknowledged 2xx survives kill -9; a wrong username or password,
// or a source address outside the list, is refused and not stored; a long poll answers within 100 ms of the
// callback's arrival; the stored callback holds no password.

import t, { type Test } from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { DEMO_ACCOUNT_NAME, DEMO_CREDENTIALS } from '../../src/simulator/app.js'
import { startProxyProcess, type ProxyProcess } from '../helpers/process.js'
import { ADMIN_TOKEN, startSimulator } from '../helpers/simulator.js'
import { fleetKeyPrefix, metricValue, startFleetReplica, until } from '../helpers/fleet.js'
import { deleteKeys, haveTestRedis, TEST_REDIS_URL } from '../helpers/redis.js'
import { createHmac, randomBytes } from 'node:crypto'

const CALLBACK_CREDENTIALS = { username: 'thingspace-callbacks', password: 'callback-password-0123456789' }

interface Inbox extends ProxyProcess {
  callbackUrl: string
}

/** A state directory of its own for each proxy (t.testdir would give every call of one test the same one). */
function inboxDir (t: Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-inbox-'))
  t.teardown(() => { fs.rmSync(dir, { recursive: true, force: true, maxRetries: 5 }) })
  fs.writeFileSync(path.join(dir, 'credentials.json'), JSON.stringify(DEMO_CREDENTIALS), { mode: 0o600 })
  fs.writeFileSync(path.join(dir, 'callback-credentials.json'), JSON.stringify(CALLBACK_CREDENTIALS), { mode: 0o600 })
  return dir
}

async function startInbox (t: Test, simUrl: string, dir: string, env: Record<string, string> = {}): Promise<Inbox> {
  const proxy = await startProxyProcess(
    {
      M2M_PROXY_UPSTREAM: simUrl,
      M2M_PROXY_CREDENTIALS_FILE: 'credentials.json',
      M2M_PROXY_CALLBACK_PORT: '0',
      M2M_PROXY_CALLBACK_CREDENTIALS_FILE: 'callback-credentials.json',
      ...env
    },
    dir
  )
  t.teardown(async () => {
    proxy.child.kill('SIGKILL')
    await proxy.exit
  })
  const listening = await proxy.waitFor((line) => line.msg === 'listening')
  return Object.assign(proxy, { callbackUrl: String(listening.callbackUrl) })
}

async function sendCallback (
  inbox: Inbox,
  body: Record<string, unknown>,
  service = 'CarrierService'
): Promise<{ status: number; body: unknown }> {
  const response = await fetch(`${inbox.callbackUrl}/${service}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body)
  })
  return { status: response.status, body: await response.json() }
}

const activation = (requestId: string): Record<string, unknown> => ({
  ...CALLBACK_CREDENTIALS,
  requestId,
  deviceIds: [{ id: '990013907835573', kind: 'imei' }],
  deviceResponse: { activateResponse: { deviceIds: [{ id: '990013907835573', kind: 'imei' }], state: 'active' } }
})

/**
 * `rounds` long polls on `reader`, each woken by a callback sent to `receiver`: the milliseconds from the callback's
 * acknowledgement to the poll's answer. The bound (100 ms) is asserted on their median, so that one scheduling
 * hiccup of a busy machine is not taken for a poll that was not woken; every one must still come long before its wait
 * (20 s) would have ended it.
 */
async function wakeUpLatencies (t: Test, reader: Inbox, receiver: Inbox, name: string, rounds = 5): Promise<void> {
  const latencies: number[] = []
  for (let round = 0; round < rounds; round++) {
    const requestId = `${name}-${round}`
    const waitingBefore = await metricValue(reader, 'm2m_proxy_callbacks_waiting')
    const polling = fetch(`${reader.proxyUrl}/callbacks/requests/${requestId}?wait=20`)
    await until(
      async () => (await metricValue(reader, 'm2m_proxy_callbacks_waiting')) === waitingBefore + 1,
      10_000,
      'the poll waits'
    )
    t.equal((await sendCallback(receiver, activation(requestId))).status, 200, 'stored')
    const acknowledgedAt = performance.now()
    const answer = await polling
    latencies.push(performance.now() - acknowledgedAt)
    t.equal(answer.status, 200)
    t.match(await answer.json(), { requestId, callbacks: [{ requestId, service: 'CarrierService' }] })
  }
  const sorted = [...latencies].sort((a, b) => a - b)
  const median = sorted[Math.floor(sorted.length / 2)] as number
  const shown = latencies.map((ms) => ms.toFixed(1)).join(', ')
  t.ok(median < 100, `answered a median ${median.toFixed(1)} ms after the callback was acknowledged (${shown})`)
  t.ok(latencies.every((ms) => ms < 5000), 'every poll woken by its callback, none by the end of its wait')
}

t.test('acknowledged means stored: a callback answered 2xx survives kill -9', async (t) => {
  const { simUrl } = await startSimulator(t)
  const dir = inboxDir(t)
  const first = await startInbox(t, simUrl, dir)
  t.match(first.callbackUrl, /^http:\/\/127\.0\.0\.1:\d+$/, 'the callback listener on its own port, loopback by default')
  const sent = await sendCallback(first, activation('req-crash-1'))
  t.same(sent, { status: 200, body: { stored: true, seq: 1 } })
  first.child.kill('SIGKILL') // at once after the 2xx: no graceful close
  await first.exit

  const second = await startInbox(t, simUrl, dir)
  const answer = await fetch(`${second.proxyUrl}/callbacks/requests/req-crash-1`)
  t.equal(answer.status, 200)
  const read = (await answer.json()) as { requestId: string; callbacks: Array<Record<string, unknown>> }
  t.equal(read.callbacks.length, 1)
  t.match(read.callbacks[0], {
    seq: 1,
    service: 'CarrierService',
    requestId: 'req-crash-1',
    deviceIds: [{ id: '990013907835573', kind: 'imei' }],
    body: { deviceResponse: { activateResponse: { state: 'active' } } }
  })
  t.notOk('password' in (read.callbacks[0]?.body as object), 'no password in what is stored')
  t.notMatch(fs.readFileSync(path.join(dir, 'callbacks.jsonl'), 'utf8'), CALLBACK_CREDENTIALS.password, 'nor on disk')
  const stream = (await (await fetch(`${second.proxyUrl}/callbacks?after=0`)).json()) as { callbacks: unknown[]; next: number }
  t.same([stream.callbacks.length, stream.next], [1, 1], 'the stream, with its cursor')
  t.same(
    await (await fetch(`${second.proxyUrl}/callbacks?after=1`)).json(),
    { callbacks: [], next: 1 },
    'nothing after the cursor'
  )
})

t.test('refused and not stored: a wrong password, an unknown service, a foreign source address', async (t) => {
  const { simUrl } = await startSimulator(t)
  const inbox = await startInbox(t, simUrl, inboxDir(t))
  const wrong = await sendCallback(inbox, { ...activation('req-wrong'), password: 'callback-password-0123456780' })
  t.equal(wrong.status, 401)
  t.match(wrong.body, { errorCode: 'Proxy.Unauthorized' })
  t.equal((await sendCallback(inbox, activation('req-unknown'), 'NoSuchService')).status, 404)
  const notJson = await fetch(`${inbox.callbackUrl}/CarrierService`, { method: 'POST', body: 'not json' })
  t.equal(notJson.status, 400)
  const stream = (await (await fetch(`${inbox.proxyUrl}/callbacks`)).json()) as { callbacks: unknown[] }
  t.same(stream.callbacks, [], 'none of them stored')
  // The child's log lines come through a pipe: the last may arrive after its answer.
  const refusals = (): number => inbox.lines.filter((line) => line.msg === 'callback refused').length
  await until(() => refusals() >= 3, 5000, 'the refusals are logged')
  t.equal(refusals(), 3, 'one log line each')
  t.notOk(JSON.stringify(inbox.lines).includes('callback-password-0123456780'), 'the guessed password is in no log line')
  const metrics = await (await fetch(`${inbox.adminUrl}/metrics`)).text()
  for (const outcome of ['unauthorized', 'not-found', 'bad-request']) {
    t.match(metrics, `m2m_proxy_callbacks_received_total{outcome="${outcome}"} 1`, `counted: ${outcome}`)
  }
  t.notMatch(metrics, /m2m_proxy_callbacks_received_total\{outcome="stored"\}/, 'nothing stored')

  const guarded = await startInbox(t, simUrl, inboxDir(t), { M2M_PROXY_CALLBACK_ALLOWED_SOURCES: '203.0.113.0/24' })
  const foreign = await sendCallback(guarded, activation('req-foreign'))
  t.equal(foreign.status, 403)
  t.match(foreign.body, { errorMessage: /source address .* is not in M2M_PROXY_CALLBACK_ALLOWED_SOURCES/ })
  t.same(((await (await fetch(`${guarded.proxyUrl}/callbacks`)).json()) as { callbacks: unknown[] }).callbacks, [])
  const allowed = await startInbox(t, simUrl, inboxDir(t), { M2M_PROXY_CALLBACK_ALLOWED_SOURCES: '203.0.113.0/24,127.0.0.1' })
  t.equal((await sendCallback(allowed, activation('req-allowed'))).status, 200, 'an address on the list gets in')
})

t.test('a long poll answers within 100 ms of the callback; on timeout 204; reads hold no admission slot', async (t) => {
  const { simUrl } = await startSimulator(t)
  const inbox = await startInbox(t, simUrl, inboxDir(t), { M2M_PROXY_MAX_IN_FLIGHT: '1' })
  const timedOut = await fetch(`${inbox.proxyUrl}/callbacks/requests/req-none?wait=1`)
  t.equal(timedOut.status, 204, 'nothing within the wait')
  // More waiting reads than M2M_PROXY_MAX_IN_FLIGHT: they do not take the forwarding's slots.
  const others = Array.from({ length: 3 }, async () => await fetch(`${inbox.proxyUrl}/callbacks/requests/req-other?wait=20`))
  const polling = fetch(`${inbox.proxyUrl}/callbacks/requests/req-poll?wait=20`)
  await until(async () => (await metricValue(inbox, 'm2m_proxy_callbacks_waiting')) === 4, 10_000, 'the polls wait')
  const forwarded = await fetch(`${inbox.proxyUrl}/api/m2m/v1/accounts/0000123456-00001`)
  t.equal(forwarded.status, 200, 'forwarding still has its slot')
  const sent = await sendCallback(inbox, activation('req-poll'))
  const answer = await polling
  t.equal(answer.status, 200)
  t.match(await answer.json(), { requestId: 'req-poll', callbacks: [{ requestId: 'req-poll' }] })
  t.equal(sent.status, 200)
  await sendCallback(inbox, activation('req-other'))
  t.same((await Promise.all(others)).map((response) => response.status), [200, 200, 200])
  await wakeUpLatencies(t, inbox, inbox, 'req-latency')
  t.equal((await fetch(`${inbox.proxyUrl}/callbacks?wait=61`)).status, 400, 'a wait beyond 60 s is refused')
})

t.test('fleet mode: a callback received by replica A is read from replica B, its long poll woken', async (t) => {
  if (!(await haveTestRedis(t))) return
  const { sim, simUrl } = await startSimulator(t)
  const keyPrefix = fleetKeyPrefix()
  t.teardown(async () => await deleteKeys(TEST_REDIS_URL, keyPrefix))
  const fleetKey = randomBytes(32).toString('hex')
  const replica = async (): Promise<Inbox & { dir: string }> => {
    const dir = inboxDir(t)
    const started = await startFleetReplica(t, {
      simUrl,
      keyPrefix,
      fleetKey,
      dir,
      env: { M2M_PROXY_CALLBACK_PORT: '0', M2M_PROXY_CALLBACK_CREDENTIALS_FILE: 'callback-credentials.json' }
    })
    const listening = await started.waitFor((line) => line.msg === 'listening')
    return Object.assign(started, { callbackUrl: String(listening.callbackUrl) })
  }
  const a = await replica()
  const b = await replica()
  await until(async () => (await metricValue(a, 'm2m_proxy_password_generation')) >= 1 &&
    (await metricValue(a, 'm2m_proxy_password_generation')) === (await metricValue(b, 'm2m_proxy_password_generation')),
  10_000, 'the replicas agree on the password generation (the metric the alert compares)')
  // Read from B, received by A: B's poll is woken through Redis's pub/sub.
  await wakeUpLatencies(t, b, a, 'req-fleet')
  const stream = (await (await fetch(`${b.proxyUrl}/callbacks?after=0`)).json()) as { callbacks: Array<Record<string, unknown>> }
  t.equal(stream.callbacks.length, 5, 'one stream for the fleet: the five received by A, read from B')
  t.notMatch(JSON.stringify(stream), CALLBACK_CREDENTIALS.password, 'no password stored')
  t.notOk(fs.existsSync(path.join(a.dir, 'callbacks.jsonl')), 'nothing in the replica\'s own state directory')

  // Device Location: registered through A, the key it kept (in Redis) checks B's callbacks.
  const registered = await fetch(`${a.adminUrl}/admin/callbacks`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ url: 'https://callbacks.example.com', services: ['DeviceLocation'], accountName: DEMO_ACCOUNT_NAME })
  })
  t.equal(registered.status, 200, 'DeviceLocation registered through A')
  const key = sim.callbacks.signingKeyOf(DEMO_ACCOUNT_NAME, 'DeviceLocation') ?? ''
  const located = JSON.stringify({ txid: 'tx-fleet', status: 'COMPLETED', locations: [] })
  const signed = async (signingKey: string): Promise<number> => {
    const response = await fetch(`${b.callbackUrl}/DeviceLocation`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-callback-signature': createHmac('sha256', signingKey).update(located).digest('hex') },
      body: located
    })
    await response.arrayBuffer()
    return response.status
  }
  t.equal(await signed(`${key}0`), 401, 'B refuses a callback signed with another key')
  t.equal(await signed(key), 200, 'B accepts one signed with the key A was given')
  t.match(await (await fetch(`${a.proxyUrl}/callbacks/requests/tx-fleet`)).json(), { callbacks: [{ service: 'DeviceLocation' }] })
  t.notOk(fs.existsSync(path.join(a.dir, 'location-callback-keys.json')), 'the key is in Redis, not in A\'s state directory')
  const readBack = await fetch(`${b.proxyUrl}/callbacks?after=0`)
  const all = (await readBack.json()) as { callbacks: unknown[], next: number }
  t.equal(all.callbacks.length, 6, 'the five activations and the location')
  a.child.kill('SIGKILL')
  await a.exit
  t.equal((await sendCallback(b, activation('req-after'))).status, 200, 'A gone: B still receives')
  t.equal(((await (await fetch(`${b.proxyUrl}/callbacks?after=0`)).json()) as { callbacks: unknown[] }).callbacks.length, 7)
})
