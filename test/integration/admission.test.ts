// Admission on the proxy listener (issue 18, items 1 and 2): bursts wait for a slot instead of being reset, a full
// queue or a wait past its timeout is answered 503 with Retry-After, request bodies held in memory are bounded in bytes
// across every connection, and one connection's pipelined requests are handled a few at a time.
import t, { type Test } from 'tap'
import net from 'node:net'
import diagnostics from 'node:diagnostics_channel'
import { setTimeout as sleep } from 'node:timers/promises'
import { rawExchange, sendAndStay } from '../helpers/raw-http.js'
import { ADMIN_TOKEN, ECHO_PATH, startStack, type Stack } from '../helpers/stack.js'
import { metricValue } from '../helpers/metrics.js'
import { until } from '../helpers/fleet.js'
import { startStandInUpstream } from '../helpers/stand-in-upstream.js'

function statusOf (answer: string): number {
  return Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0)
}

interface HoldingUpstream {
  url: string
  held: () => number
  peak: () => number
  release: () => void
  /** Requests received so far, and those whose connection the proxy closed before they were answered. */
  received: () => number
  abandoned: () => number
}

/** An upstream that answers the proxy's own token and login calls and holds every other request until released. */
async function holdingUpstream (
  t: Test,
  /** How long each request is held once released. */
  answerDelayMs = 20
): Promise<HoldingUpstream> {
  let waiting: Array<() => void> = []
  let current = 0
  let peak = 0
  let received = 0
  let abandoned = 0
  let released = false
  const upstream = await startStandInUpstream(t, (_request, _body, response) => {
    current++
    received++
    peak = Math.max(peak, current)
    response.once('close', () => { if (!response.writableFinished) abandoned++ })
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
    received: () => received,
    abandoned: () => abandoned,
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
        (await gauge(stack, 'm2m_proxy_request_body_bytes')) >= 100_000,
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
    const warnings: string[] = []
    const onWarning = (warning: Error): void => { warnings.push(warning.name) }
    process.on('warning', onWarning)
    t.teardown(() => { process.off('warning', onWarning) })
    const requests = Array.from(
      { length: 40 },
      (_, i) =>
        `GET /api/m2m/v1/devices/${i} HTTP/1.1\r\nHost: localhost\r\n${i === 39 ? 'Connection: close\r\n' : ''}\r\n`
    ).join('')
    const answer = await rawExchange(stack.proxy.proxyUrl, requests, 20_000)
    t.equal(answer.match(/HTTP\/1\.1 200 /g)?.length, 40, 'every pipelined request answered')
    t.ok(upstream.peak() <= 4, `at most ${upstream.peak()} upstream at once (M2M_PROXY_MAX_PIPELINED 4)`)
    await new Promise((resolve) => setImmediate(resolve)) // Node emits its warnings on the next tick
    t.same(warnings, [], 'no warning (the 36 waiting are watched by one listener on the connection, not 36)')
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
    const queued = await gauge(stack, 'm2m_proxy_requests_queued')
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

/** A raw client: what it was answered, whether the proxy closed the connection. */
interface RawClient { socket: net.Socket; answer: () => string; closed: () => boolean }

function rawClient (t: Test, url: string, requestText: string): RawClient {
  const socket = sendAndStay(url, requestText)
  let answer = ''
  let closed = false
  socket.setEncoding('latin1').on('data', (chunk: string) => { answer += chunk })
  socket.on('close', () => { closed = true })
  t.teardown(() => socket.destroy())
  return { socket, answer: () => answer, closed: () => closed }
}

/**
 * A request held at ThingSpace, and half of the next request's head behind it on the same connection, for longer than
 * the idle (headers) timeout, 200 ms here; Node checks it every 200 ms meanwhile.
 */
async function headBehindHeldRequest (
  t: Test,
  holdMs: number
): Promise<{ upstream: HoldingUpstream, client: RawClient }> {
  const upstream = await holdingUpstream(t, 0)
  const env = { M2M_PROXY_MAX_PIPELINED: '1', M2M_PROXY_IDLE_CONNECTION_TIMEOUT_MS: '200' }
  const stack = await startStack(t, { upstream: upstream.url, env })
  const client = rawClient(
    t,
    stack.proxy.proxyUrl,
    'GET /api/m2m/v1/devices/1 HTTP/1.1\r\nHost: localhost\r\n\r\nGET /api/m2m/v1/devices/2 HTTP/1.1\r\nHo'
  )
  await until(() => upstream.held() === 1, 10_000, 'the first request upstream')
  await sleep(holdMs)
  return { upstream, client }
}

t.test(
  'a pipelined head slower than the idle timeout behind a request at ThingSpace: both answered, no 408 and close',
  async (t) => {
    // Node times a request head from its first byte; the proxy does not read the connection's further bytes while its
    // earlier requests are in progress (M2M_PROXY_MAX_PIPELINED). A pipelining client lost every request after such a
    // head, and the answer of the one at ThingSpace, to a 408 and a close whenever ThingSpace took longer than
    // M2M_PROXY_IDLE_CONNECTION_TIMEOUT_MS.
    const { upstream, client } = await headBehindHeldRequest(t, 1000)
    client.socket.write('st: localhost\r\nConnection: close\r\n\r\n')
    upstream.release()
    await until(client.closed, 10_000, 'the connection closed after its last answer')
    t.same([...client.answer().matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((match) => match[1]), ['200', '200'])
  }
)

t.test(
  'a connection whose head stalls behind its answers is still closed: by the keep-alive timeout once they are written',
  async (t) => {
    const { upstream, client } = await headBehindHeldRequest(t, 600)
    upstream.release()
    await until(client.closed, 10_000, 'the connection closed by the proxy')
    const answer = client.answer()
    t.equal(statusOf(answer), 200, 'the first request answered')
    t.equal(answer.match(/HTTP\/1\.1 /g)?.length, 1, 'nothing answered for the stalled head')
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

/** One of the proxy's metrics, read from its admin listener. */
async function gauge (stack: Stack, name: string): Promise<number> {
  return metricValue((await stack.adminCall('GET', '/metrics')).text, name)
}

/** The request lines written so far with `"cutOff":true`. */
function cutOffLines (stack: Stack): Array<Record<string, unknown>> {
  return stack.logs.entries().filter((line) => line.msg === 'request' && line.cutOff === true)
}

t.test(
  'a client that leaves while ThingSpace works on its request: the request is aborted, its slot and bytes come back',
  async (t) => {
    for (const method of ['GET', 'POST']) {
      const upstream = await holdingUpstream(t, 0)
      const stack = await startStack(t, { upstream: upstream.url })
      await stack.proxy.initialLogin
      const body = method === 'GET' ? '' : JSON.stringify({ padding: 'x'.repeat(10_000) })
      const head = `${method} /api/m2m/v1/devices/actions/activate HTTP/1.1\r\nHost: localhost\r\n` +
        (method === 'GET' ? '\r\n' : `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`)
      const client = sendAndStay(stack.proxy.proxyUrl, head + body)
      await until(() => upstream.held() === 1, 5000, `the ${method} at the upstream`)
      client.destroy()
      await until(() => upstream.abandoned() === 1, 5000, `the ${method} aborted at the upstream, not left to its answer`)
      await until(
        async () => (await gauge(stack, 'm2m_proxy_requests_in_flight')) === 0,
        3000,
        'its slot given back, without waiting for ThingSpace'
      )
      t.equal(await gauge(stack, 'm2m_proxy_requests_in_flight'), 0, `${method}: no slot left taken`)
      t.equal(await gauge(stack, 'm2m_proxy_request_body_bytes'), 0, `${method}: no body bytes left taken`)
      await until(() => cutOffLines(stack).length === 1, 3000, 'its request line')
      t.match(cutOffLines(stack)[0], { method, status: 499, upstreamStatus: null, cutOff: true }, 'logged as cut off')
      t.notOk(stack.logs.entries().some((line) => line.msg === 'upstream request failed'), 'not an upstream failure')
      upstream.release()
      t.equal(upstream.received(), 1, 'sent once, never again')
    }
  }
)

t.test(
  'a client that leaves while its request waits for a slot: never sent, logged and counted as 499',
  async (t) => {
    const upstream = await holdingUpstream(t, 0)
    const stack = await startStack(t, { upstream: upstream.url, env: { M2M_PROXY_MAX_IN_FLIGHT: '1' } })
    await stack.proxy.initialLogin
    const first = stack.call('GET', '/api/m2m/v1/devices/first') // holds the one slot
    await until(() => upstream.held() === 1, 5000, 'the first at the upstream')
    const queuedCount = async (): Promise<number> => await gauge(stack, 'm2m_proxy_requests_queued')
    const client = sendAndStay(stack.proxy.proxyUrl, 'GET /api/m2m/v1/devices/second HTTP/1.1\r\nHost: localhost\r\n\r\n')
    await until(async () => (await queuedCount()) === 1, 5000, 'the second waiting for a slot')
    client.destroy()
    await until(() => cutOffLines(stack).length === 1, 3000, 'its request line')
    t.match(cutOffLines(stack)[0], { path: '/api/m2m/v1/devices/second', status: 499, upstreamStatus: null })
    t.equal(await queuedCount(), 0, 'its place in the queue given up')
    upstream.release()
    t.equal((await first).status, 200)
    const metrics = (await stack.adminCall('GET', '/metrics')).text
    t.equal(metricValue(metrics, 'm2m_proxy_requests_total', { method: 'GET', status_class: '4xx' }), 1, 'counted')
    t.equal(upstream.received(), 1, 'only the first reached ThingSpace')
  }
)

t.test(
  "a client that leaves while its request waits in undici's queue for a connection: the request is never sent",
  async (t) => {
    const upstream = await holdingUpstream(t, 0)
    const stack = await startStack(t, { upstream: upstream.url, env: { M2M_PROXY_UPSTREAM_CONNECTIONS: '1' } })
    await stack.proxy.initialLogin
    // undici publishes each request it takes, before it has a connection for it.
    const queued: string[] = []
    const onCreate = (message: unknown): void => {
      queued.push((message as { request: { path: string } }).request.path)
    }
    diagnostics.subscribe('undici:request:create', onCreate)
    t.teardown(() => diagnostics.unsubscribe('undici:request:create', onCreate))
    const first = stack.call('GET', '/api/m2m/v1/devices/first') // stays, and holds the one connection
    await until(() => upstream.held() === 1, 5000, 'the first at the upstream')
    const body = '{"devices":[{"deviceIds":[{"id":"1","kind":"imei"}]}]}'
    let left = false // its connection closed, as the proxy sees it
    stack.proxy.app.proxy.server.once('connection', (socket: net.Socket) => socket.once('close', () => { left = true }))
    const client = sendAndStay(
      stack.proxy.proxyUrl,
      'POST /api/m2m/v1/devices/actions/activate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n' +
        `Content-Length: ${body.length}\r\n\r\n${body}`
    )
    await until(() => queued.includes('/api/m2m/v1/devices/actions/activate'), 5000, 'the POST in undici\'s queue')
    client.destroy() // its client gives up, as the SDK does at its timeout, and would send it again
    await until(() => left, 3000, 'the proxy sees the client leave')
    upstream.release() // the connection is free: the POST would be sent now
    t.equal((await first).status, 200)
    await until(async () => (await gauge(stack, 'm2m_proxy_requests_in_flight')) === 0, 3000, 'every slot given back')
    t.equal(upstream.received(), 1, 'only the first reached ThingSpace: the POST was dropped, not sent')
    t.match(cutOffLines(stack), [{ method: 'POST', status: 499, upstreamStatus: null, cutOff: true }], 'logged')
    t.equal((await stack.call('GET', '/api/m2m/v1/devices/next')).status, 200, 'and the next request is served')
    t.equal(upstream.received(), 2)
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
