// Admission on the proxy listener (issue 18, items 1 and 2): bursts wait for a slot instead of being reset, a full
// queue or a wait past its timeout is answered 503 with Retry-After, request bodies held in memory are bounded in bytes
// across every connection, and one connection's pipelined requests are handled a few at a time.
import t, { type Test } from 'tap'
import net from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { rawExchange } from '../helpers/raw-http.js'
import { ADMIN_TOKEN, ECHO_PATH, startStack, type Stack } from '../helpers/stack.js'
import { metricValue } from '../helpers/metrics.js'
import { until } from '../helpers/fleet.js'
import { startStandInUpstream } from '../helpers/stand-in-upstream.js'

function statusOf (answer: string): number {
  return Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0)
}

/** An upstream that answers the proxy's own token and login calls and holds every other request until released. */
async function holdingUpstream (
  t: Test,
  /** How long each request is held once released. */
  answerDelayMs = 20
): Promise<{ url: string; held: () => number; peak: () => number; release: () => void }> {
  let waiting: Array<() => void> = []
  let current = 0
  let peak = 0
  let released = false
  const upstream = await startStandInUpstream(t, (_request, _body, response) => {
    current++
    peak = Math.max(peak, current)
    const answer = (): void => {
      current--
      response.setHeader('content-type', 'application/json')
      response.end('{}')
    }
    if (released) setTimeout(answer, answerDelayMs)
    else waiting.push(answer)
  })
  return {
    url: upstream.url,
    held: () => waiting.length,
    peak: () => peak,
    release: () => {
      released = true
      for (const answer of waiting) answer()
      waiting = []
    }
  }
}

t.test(
  '1000 concurrent connections across a session expiry, default settings: every request 200, one login',
  async (t) => {
    const stack = await startStack(t)
    stack.sim.expireSessions()
    const loginsBefore = stack.sim.stats.logins
    const request = `GET ${ECHO_PATH} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`
    const answers = await Promise.all(
      Array.from({ length: 1000 }, async () => await rawExchange(stack.proxy.proxyUrl, request, 60_000))
    )
    const statuses = new Map<number, number>()
    for (const answer of answers) statuses.set(statusOf(answer), (statuses.get(statusOf(answer)) ?? 0) + 1)
    t.same(Object.fromEntries(statuses), { 200: 1000 }, 'no connection reset, no 503')
    t.equal(stack.sim.stats.logins - loginsBefore, 1, 'one login for the expiry')
  }
)

t.test(
  'a full queue is answered 503 Proxy.Overloaded.QueueFull, a wait past the queue timeout 503 QueueTimeout, both with Retry-After',
  async (t) => {
    const upstream = await holdingUpstream(t)
    const stack = await startStack(t, {
      upstream: upstream.url,
      env: { M2M_PROXY_MAX_IN_FLIGHT: '1', M2M_PROXY_MAX_QUEUED: '1', M2M_PROXY_QUEUE_TIMEOUT_MS: '400' }
    })
    const first = stack.call('GET', '/api/m2m/v1/devices/1')
    await sleep(100)
    t.equal(upstream.held(), 1, 'the first is in flight')
    const second = stack.call('GET', '/api/m2m/v1/devices/2')
    await sleep(50)
    const third = await stack.call('GET', '/api/m2m/v1/devices/3')
    t.equal(third.status, 503)
    t.match(third.json(), { errorCode: 'Proxy.Overloaded.QueueFull', errorMessage: /M2M_PROXY_MAX_QUEUED/ })
    t.ok(Number(third.headers['retry-after']) >= 1, 'with Retry-After')
    const timedOut = await second
    t.equal(timedOut.status, 503)
    t.match(timedOut.json(), { errorCode: 'Proxy.Overloaded.QueueTimeout', errorMessage: /M2M_PROXY_MAX_IN_FLIGHT 1/ })
    t.ok(Number(timedOut.headers['retry-after']) >= 1)
    upstream.release()
    t.equal((await first).status, 200, 'the one in flight is answered')
    t.equal((await stack.call('GET', '/api/m2m/v1/devices/4')).status, 200, 'and the next is served')
    const metrics = (await stack.adminCall('GET', '/metrics')).text
    t.match(metrics, /m2m_proxy_overloaded_total\{reason="queue-full"\} 1/)
    t.match(metrics, /m2m_proxy_overloaded_total\{reason="queue-timeout"\} 1/)
  }
)

t.test(
  'a request that waited for a slot is counted in m2m_proxy_wait_seconds{stage="queue"} with its wait',
  async (t) => {
    const upstream = await holdingUpstream(t)
    const stack = await startStack(t, { upstream: upstream.url, env: { M2M_PROXY_MAX_IN_FLIGHT: '1' } })
    const first = stack.call('GET', '/api/m2m/v1/devices/1')
    await sleep(100)
    const second = stack.call('GET', '/api/m2m/v1/devices/2') // waits for the first's slot
    await sleep(300)
    upstream.release()
    t.same([(await first).status, (await second).status], [200, 200])
    const metrics = (await stack.adminCall('GET', '/metrics')).text
    t.equal(
      metricValue(metrics, 'm2m_proxy_wait_seconds_count', { stage: 'queue' }),
      1,
      'the one that waited; the one admitted at once is not observed'
    )
    const waited = metricValue(metrics, 'm2m_proxy_wait_seconds_sum', { stage: 'queue' })
    t.ok(waited >= 0.25 && waited < 5, `it waited ${waited.toFixed(2)} s`)
  }
)

t.test(
  'request bodies held are bounded in bytes across connections: an upload beyond the budget waits, then 503, unread',
  async (t) => {
    const stack = await startStack(t, {
      env: {
        M2M_PROXY_BODY_LIMIT_BYTES: '100000',
        M2M_PROXY_BODY_MEMORY_BYTES: '150000',
        M2M_PROXY_QUEUE_TIMEOUT_MS: '500'
      }
    })
    const { port } = new URL(stack.proxy.proxyUrl)
    // One upload admitted (100000 bytes reserved) that stalls halfway.
    const stalled = net.connect(Number(port), '127.0.0.1', () => {
      stalled.write(
        `POST ${ECHO_PATH} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n${'x'.repeat(50_000)}`
      )
    })
    stalled.on('error', () => {})
    t.teardown(() => stalled.destroy())
    // Admitted: its 100000 bytes are reserved.
    await until(
      async () =>
        metricValue((await stack.adminCall('GET', '/metrics')).text, 'm2m_proxy_request_body_bytes') >= 100_000,
      5000,
      'the stalled upload to be admitted'
    )
    const second = await rawExchange(
      stack.proxy.proxyUrl,
      `POST ${ECHO_PATH} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n`,
      5000
    )
    t.equal(statusOf(second), 503, 'a second body of that size does not fit in the budget')
    t.match(second, /"errorCode":"Proxy\.Overloaded\.QueueTimeout"/)
    t.match(second, /\r\nretry-after: \d+\r\n/i)
    const small = await stack.call('POST', ECHO_PATH, {
      headers: { 'content-type': 'application/json' },
      body: '{"small":true}'
    })
    t.equal(small.status, 200, 'a small body still fits beside the stalled one')
    stalled.destroy()
    await sleep(100)
    const after = await stack.call('POST', ECHO_PATH, {
      headers: { 'content-type': 'application/octet-stream' },
      body: 'y'.repeat(100_000)
    })
    t.equal(after.status, 200, 'the bytes are free again once the stalled upload is gone')
  }
)

t.test(
  'one connection pipelining 40 requests: at most M2M_PROXY_MAX_PIPELINED of them upstream at once, every answer in order',
  async (t) => {
    const upstream = await holdingUpstream(t)
    upstream.release() // answers each request after 20 ms
    const stack = await startStack(t, { upstream: upstream.url, env: { M2M_PROXY_MAX_PIPELINED: '4' } })
    const requests = Array.from(
      { length: 40 },
      (_, i) =>
        `GET /api/m2m/v1/devices/${i} HTTP/1.1\r\nHost: localhost\r\n${i === 39 ? 'Connection: close\r\n' : ''}\r\n`
    ).join('')
    const answer = await rawExchange(stack.proxy.proxyUrl, requests, 20_000)
    t.equal(answer.match(/HTTP\/1\.1 200 /g)?.length, 40, 'every pipelined request answered')
    t.ok(upstream.peak() <= 4, `at most ${upstream.peak()} upstream at once (M2M_PROXY_MAX_PIPELINED 4)`)
  }
)

t.test(
  'one connection pipelining 5000 small requests: the proxy reads no further while they wait, then answers every one',
  async (t) => {
    const upstream = await holdingUpstream(t, 0)
    const stack = await startStack(t, { upstream: upstream.url, env: { M2M_PROXY_MAX_PIPELINED: '4' } })
    let parsed = 0
    stack.proxy.app.proxy.server.on('request', () => { parsed++ })
    const count = 5000
    const requestOf = (i: number): string =>
      `GET /api/m2m/v1/devices/${i} HTTP/1.1\r\nHost: localhost\r\n${i === count - 1 ? 'Connection: close\r\n' : ''}\r\n`
    const requests = Array.from({ length: count }, (_, i) => requestOf(i)).join('')
    const answers = rawExchange(stack.proxy.proxyUrl, requests, 20_000)
    await until(() => upstream.held() === 4, 10_000, 'four requests upstream')
    await sleep(300) // what the proxy would still read and parse, it has by now
    // Node parses whatever one read brought (up to 64 KiB) before the proxy can stop reading.
    const perRead = Math.ceil(65_536 / requestOf(0).length)
    t.ok(parsed <= 2 * perRead, `${parsed} of ${count} requests parsed while held (one read holds about ${perRead})`)
    const queued = metricValue((await stack.adminCall('GET', '/metrics')).text, 'm2m_proxy_requests_queued')
    t.equal(queued, parsed - 4, 'the parsed ones beyond the four in progress wait, counted as queued')
    upstream.release()
    const answered = await answers
    const statuses = [...answered.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((match) => match[1])
    const others = statuses.filter((status) => status !== '200')
    if (others.length > 0) t.comment(answered.slice(answered.indexOf('HTTP/1.1 503'), answered.indexOf('HTTP/1.1 503') + 600))
    t.equal(statuses.length - others.length, count, `then every one answered 200 (others: ${others.slice(0, 5).join(', ')})`)
    t.equal(parsed, count)
    t.ok(upstream.peak() <= 4, `at most ${upstream.peak()} upstream at once`)
  }
)

t.test(
  'pipelined requests wait within M2M_PROXY_MAX_QUEUED too: the next gets 503 with Retry-After and the connection closes',
  async (t) => {
    const upstream = await holdingUpstream(t, 0)
    const stack = await startStack(t, {
      upstream: upstream.url,
      env: { M2M_PROXY_MAX_PIPELINED: '4', M2M_PROXY_MAX_QUEUED: '10' }
    })
    const requests = Array.from(
      { length: 40 },
      (_, i) => `GET /api/m2m/v1/devices/${i} HTTP/1.1\r\nHost: localhost\r\n${i === 39 ? 'Connection: close\r\n' : ''}\r\n`
    ).join('')
    const answers = rawExchange(stack.proxy.proxyUrl, requests, 20_000)
    await until(() => upstream.held() === 4, 10_000, 'four requests upstream')
    await sleep(200)
    upstream.release()
    const answered = await answers
    const statuses = [...answered.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((match) => Number(match[1]))
    t.same(statuses, [...Array(14).fill(200), 503], '4 in progress and 10 waiting served, then one 503, then the close')
    const refusal = answered.slice(answered.indexOf('HTTP/1.1 503'))
    t.match(refusal, /retry-after: \d+/i)
    t.match(refusal, /connection: close/i)
    t.match(refusal, /Proxy\.Overloaded\.QueueFull/)
    const metrics = (await stack.adminCall('GET', '/metrics')).text
    t.equal(metricValue(metrics, 'm2m_proxy_overloaded_total', { reason: 'queue-full' }), 1)
    t.equal(metricValue(metrics, 'm2m_proxy_requests_queued'), 0, 'nothing left waiting')
    t.equal((await stack.call('GET', '/api/m2m/v1/devices/after')).status, 200, 'a new connection is served')
  }
)

/** A proxy with no session and a login that takes 1.5 s; ThingSpace's count of data requests so far. */
async function stackWaitingForLogin (t: Test): Promise<{ stack: Stack; dataBefore: number }> {
  const stack = await startStack(t, { simulator: { loginDelayMs: 1500 } })
  await stack.adminCall('POST', '/admin/session/end', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
  return { stack, dataBefore: stack.sim.stats.dataRequests }
}

t.test(
  'clients that leave during a login: their requests are never sent to ThingSpace',
  async (t) => {
    const { stack, dataBefore } = await stackWaitingForLogin(t)
    const body = JSON.stringify({ padding: 'x'.repeat(100_000) })
    const head = `POST ${ECHO_PATH} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`
    // Ten clients send a POST, whole, then hang up while the login is under way.
    const leaving = Array.from({ length: 10 }, () => rawExchange(stack.proxy.proxyUrl, head + body, 300))
    const staying = stack.call('POST', ECHO_PATH, { headers: { 'content-type': 'application/json' }, body: '{"stay":1}' })
    await Promise.all(leaving)
    t.equal((await staying).status, 200, 'the client that stayed is served after the login')
    await sleep(200)
    t.equal(stack.sim.stats.dataRequests - dataBefore, 1, 'only its request reached ThingSpace')
    const metrics = (await stack.adminCall('GET', '/metrics')).text
    t.equal(metricValue(metrics, 'm2m_proxy_requests_in_flight'), 0)
  }
)

t.test(
  'a client that leaves while ThingSpace works on its request: the slot and the body bytes stay taken until it answers',
  async (t) => {
    // A GET: its body never read, Node marks it aborted, and reply-from drops its answer without calling onResponse.
    const held = await holdingUpstream(t, 0)
    const getStack = await startStack(t, { upstream: held.url })
    await getStack.proxy.initialLogin
    const gone = rawExchange(getStack.proxy.proxyUrl, 'GET /api/m2m/v1/devices/1 HTTP/1.1\r\nHost: localhost\r\n\r\n', 300)
    await until(() => held.held() === 1, 5000, 'the GET at the upstream')
    await gone
    const inFlight = async (): Promise<number> =>
      metricValue((await getStack.adminCall('GET', '/metrics')).text, 'm2m_proxy_requests_in_flight')
    t.equal(await inFlight(), 1, 'the GET still counted while ThingSpace works on it')
    held.release()
    await until(async () => (await inFlight()) === 0, 3000, 'released once ThingSpace answered, not at the timeout')

    const upstream = await holdingUpstream(t, 0)
    const stack = await startStack(t, { upstream: upstream.url })
    const body = JSON.stringify({ padding: 'x'.repeat(10_000) })
    const head = `POST /api/m2m/v1/devices/actions/list HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`
    await stack.proxy.initialLogin
    const left = rawExchange(stack.proxy.proxyUrl, head + body, 300) // hangs up after 300 ms
    await until(() => upstream.held() === 1, 5000, 'the request at the upstream')
    await left
    await sleep(100)
    const gauges = async (): Promise<[number, number]> => {
      const metrics = (await stack.adminCall('GET', '/metrics')).text
      return [metricValue(metrics, 'm2m_proxy_requests_in_flight'), metricValue(metrics, 'm2m_proxy_request_body_bytes')]
    }
    t.same(await gauges(), [1, body.length], 'still counted: undici holds the body while ThingSpace works on it')
    upstream.release()
    await until(async () => (await gauges())[0] === 0, 5000, 'released once ThingSpace answered')
    t.same(await gauges(), [0, 0])
  }
)

t.test(
  'a pipelining client that leaves during a login: its queued requests are not sent, and their slots come back',
  async (t) => {
    const { stack, dataBefore } = await stackWaitingForLogin(t)
    const post = (i: number): string => {
      const body = JSON.stringify({ pipelined: i })
      return `POST ${ECHO_PATH} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`
    }
    await rawExchange(stack.proxy.proxyUrl, post(1) + post(2) + post(3), 300) // hangs up during the login
    await sleep(2000) // the login is over
    t.equal(stack.sim.stats.dataRequests - dataBefore, 0, 'none of the three reached ThingSpace')
    const metrics = (await stack.adminCall('GET', '/metrics')).text
    t.equal(metricValue(metrics, 'm2m_proxy_requests_in_flight'), 0, 'no slot left taken')
    t.equal(metricValue(metrics, 'm2m_proxy_request_body_bytes'), 0)
  }
)
