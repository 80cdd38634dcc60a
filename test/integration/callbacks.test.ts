// The callback inbox in one process (real sockets on 127.0.0.1): the limits of the callback listener and of the
// reads, paging by cursor, the metrics, and a shutdown that does not wait for long polls.

import t, { type Test } from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { startStack, type Stack } from '../helpers/stack.js'
import { metricValue } from '../helpers/metrics.js'

const CALLBACK_CREDENTIALS = { username: 'thingspace-callbacks', password: 'callback-password-0123456789' }

async function inboxStack (t: Test, env: Record<string, string> = {}): Promise<Stack & { callbackUrl: string }> {
  // A directory of its own for each stack (t.testdir would give every call of one test the same one).
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-inbox-'))
  t.teardown(() => { fs.rmSync(dir, { recursive: true, force: true, maxRetries: 5 }) })
  fs.writeFileSync(path.join(dir, 'callback.json'), JSON.stringify(CALLBACK_CREDENTIALS), { mode: 0o600 })
  const stack = await startStack(t, {
    dir,
    env: { M2M_PROXY_CALLBACK_PORT: '0', M2M_PROXY_CALLBACK_CREDENTIALS_FILE: 'callback.json', ...env }
  })
  return Object.assign(stack, { callbackUrl: stack.proxy.callbackUrl ?? '' })
}

async function post (url: string, body: string): Promise<Response> {
  return await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
}

const callbackBody = (requestId: string, extra: Record<string, unknown> = {}): string =>
  JSON.stringify({ ...CALLBACK_CREDENTIALS, requestId, ...extra })

t.test('paging by cursor, at-least-once: nothing is removed by reading', async (t) => {
  const stack = await inboxStack(t)
  for (let i = 1; i <= 5; i++) t.equal((await post(`${stack.callbackUrl}/DeviceUsage`, callbackBody(`r-${i}`))).status, 200)
  const page = async (query: string): Promise<{ callbacks: Array<{ seq: number; service: string }>; next: number }> =>
    (await (await fetch(`${stack.proxy.proxyUrl}/callbacks?${query}`)).json()) as never
  const first = await page('limit=2')
  t.same([first.callbacks.map((record) => record.seq), first.next], [[1, 2], 2])
  const second = await page(`after=${first.next}&limit=2`)
  t.same([second.callbacks.map((record) => record.seq), second.next], [[3, 4], 4])
  t.same((await page('after=0&limit=100')).callbacks.length, 5, 'read again from the start: all still there')
  t.equal(first.callbacks[0]?.service, 'DeviceUsage')
  for (const query of ['after=-1', 'limit=0', 'limit=1001', 'wait=61', 'wait=abc', 'after=1e3', 'after=12345678901234567']) {
    t.equal((await fetch(`${stack.proxy.proxyUrl}/callbacks?${query}`)).status, 400, query)
  }
  // A fleet's cursors have 16 digits (the Redis clock in ms x 1000).
  t.equal((await fetch(`${stack.proxy.proxyUrl}/callbacks?after=1796604572218005`)).status, 200, 'a fleet cursor')
  const metrics = (await stack.adminCall('GET', '/metrics')).text
  t.equal(metricValue(metrics, 'm2m_proxy_callbacks_kept'), 5)
  t.ok(metricValue(metrics, 'm2m_proxy_callbacks_kept_bytes') > 5 * 50)
  t.equal(metricValue(metrics, 'm2m_proxy_callbacks_received_total', { outcome: 'stored' }), 5)
  t.equal((await fetch(`${stack.proxy.proxyUrl}/api/m2m/v1/accounts/0000123456-00001`)).status, 200, 'forwarding untouched')
})

t.test('the callback listener: a body too large, no other route, no forwarding, CONNECT', async (t) => {
  const stack = await inboxStack(t, { M2M_PROXY_CALLBACK_BODY_LIMIT_BYTES: '1024' })
  const large = await post(`${stack.callbackUrl}/CarrierService`, callbackBody('r-big', { padding: 'x'.repeat(2000) }))
  t.equal(large.status, 413)
  t.match(await large.json(), { errorCode: 'Proxy.BodyTooLarge' })
  t.equal((await fetch(`${stack.callbackUrl}/api/m2m/v1/accounts/0000123456-00001`)).status, 404, 'never forwards')
  t.equal((await fetch(`${stack.callbackUrl}/CarrierService`)).status, 404, 'GET is no route')
  t.equal(stack.sim.stats.dataRequests, 0, 'nothing reached ThingSpace')
  const page = (await (await fetch(`${stack.proxy.proxyUrl}/callbacks`)).json()) as { callbacks: unknown[] }
  t.same(page.callbacks, [], 'nothing stored')
  const metrics = (await stack.adminCall('GET', '/metrics')).text
  t.equal(metricValue(metrics, 'm2m_proxy_callbacks_received_total', { outcome: 'too-large' }), 1)
})

t.test('waiting reads: capped with 503 and Retry-After; a shutdown answers them at once', async (t) => {
  const stack = await inboxStack(t, { M2M_PROXY_CALLBACK_MAX_WAITING: '1' })
  const waiting = fetch(`${stack.proxy.proxyUrl}/callbacks/requests/r-never?wait=30`)
  const deadline = Date.now() + 5000
  while (Date.now() < deadline) {
    const metrics = (await stack.adminCall('GET', '/metrics')).text
    if (metricValue(metrics, 'm2m_proxy_callbacks_waiting') === 1) break
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  const refused = await fetch(`${stack.proxy.proxyUrl}/callbacks?wait=5`)
  t.equal(refused.status, 503)
  t.equal(refused.headers.get('retry-after'), '1')
  t.match(await refused.json(), { errorCode: 'Proxy.Overloaded.TooManyWaiting' })
  t.equal((await fetch(`${stack.proxy.proxyUrl}/callbacks`)).status, 200, 'a read that does not wait is served')
  // The graceful way down (SIGTERM): the proxy listener drains, and a poll that could wait 30 s must not hold it.
  const stoppedAt = performance.now()
  await stack.proxy.app.shutdown()
  const answer = await waiting
  t.equal(answer.status, 204, 'the waiting read ends with what it has')
  t.ok(performance.now() - stoppedAt < 5000, 'the shutdown did not wait for the 30 s poll')
})

t.test('refused and not stored: wrong credentials, unknown service, not JSON, a source outside the list', async (t) => {
  const stack = await inboxStack(t)
  const cases: Array<[string, string, string, number, string]> = [
    ['a wrong password', 'CarrierService', JSON.stringify({ ...CALLBACK_CREDENTIALS, password: 'x'.repeat(28) }), 401, 'unauthorized'],
    ['no credentials', 'CarrierService', JSON.stringify({ requestId: 'r-1' }), 401, 'unauthorized'],
    ['an unknown service', 'NoSuchService', callbackBody('r-2'), 404, 'not-found'],
    ['not JSON', 'CarrierService', 'not json', 400, 'bad-request'],
    ['a JSON array', 'CarrierService', '[]', 400, 'bad-request']
  ]
  for (const [name, service, body, status, outcome] of cases) {
    const answer = await post(`${stack.callbackUrl}/${service}`, body)
    t.equal(answer.status, status, name)
    const metrics = (await stack.adminCall('GET', '/metrics')).text
    t.ok(metricValue(metrics, 'm2m_proxy_callbacks_received_total', { outcome }) >= 1, `${name}: counted as ${outcome}`)
  }
  const page = (await (await fetch(`${stack.proxy.proxyUrl}/callbacks`)).json()) as { callbacks: unknown[] }
  t.same(page.callbacks, [], 'none stored')
  const refusals = stack.logs.entries().filter((entry) => entry.msg === 'callback refused')
  t.equal(refusals.length, cases.length, 'one line each')
  t.notOk(JSON.stringify(refusals).includes('x'.repeat(28)), 'no guessed password in them')

  for (const [sources, status] of [
    ['203.0.113.0/24', 403],
    ['2001:db8::/32,203.0.113.7', 403],
    ['127.0.0.0/8', 200],
    ['203.0.113.7,127.0.0.1', 200]
  ] as const) {
    const guarded = await inboxStack(t, { M2M_PROXY_CALLBACK_ALLOWED_SOURCES: sources })
    const answer = await post(`${guarded.callbackUrl}/CarrierService`, callbackBody('r-source'))
    t.equal(answer.status, status, `sources ${sources}`)
    if (status === 403) t.match(await answer.json(), { errorCode: 'Proxy.Forbidden' })
  }
})

t.test('behind an ingress: the source list judges the caller X-Forwarded-For names, only from trusted proxies', async (t) => {
  const sendFrom = async (url: string, forwardedFor: string | undefined): Promise<number> =>
    (await fetch(`${url}/CarrierService`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(forwardedFor === undefined ? {} : { 'x-forwarded-for': forwardedFor }) },
      body: callbackBody('r-xff')
    })).status
  const behind = await inboxStack(t, {
    M2M_PROXY_CALLBACK_ALLOWED_SOURCES: '203.0.113.0/24',
    M2M_PROXY_CALLBACK_TRUSTED_PROXIES: '127.0.0.1,::1'
  })
  t.equal(await sendFrom(behind.callbackUrl, '203.0.113.7'), 200, 'ThingSpace, through the ingress')
  t.equal(await sendFrom(behind.callbackUrl, '198.51.100.1'), 403, 'another caller, through the ingress')
  t.equal(await sendFrom(behind.callbackUrl, undefined), 403, 'the ingress itself is not a source')
  t.equal(await sendFrom(behind.callbackUrl, '203.0.113.7, 198.51.100.1'), 403, 'a forged first entry does not count')
  t.match(behind.logs.lines.join('\n'), /"caller":"198\.51\.100\.1".*callback refused/, 'the caller logged is the forwarded one')

  const direct = await inboxStack(t, { M2M_PROXY_CALLBACK_ALLOWED_SOURCES: '203.0.113.0/24' })
  t.equal(await sendFrom(direct.callbackUrl, '203.0.113.7'), 403, 'no trusted proxy: X-Forwarded-For is ignored')
})
