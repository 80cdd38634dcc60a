// OpenTelemetry traces with real processes: the built proxy with an OTLP endpoint set sends its spans to an OTLP/HTTP
// receiver in this process: a server span per request whose parent is the client's traceparent, and the upstream
// call as a client span below it, whose traceparent ThingSpace (the simulator) receives; no token or secret in any
// span. Without an endpoint nothing is sent.

import t, { type Test } from 'tap'
import http from 'node:http'
import { randomBytes } from 'node:crypto'
import { request } from 'undici'
import { DEMO_CREDENTIALS } from '../../src/simulator/app.js'
import { startProxyProcess, type ProxyProcess } from '../helpers/process.js'
import { ADMIN_TOKEN, ECHO_PATH, startSimulator, type Echo } from '../helpers/simulator.js'
import { until } from '../helpers/fleet.js'

interface OtlpSpan {
  traceId: string
  spanId: string
  parentSpanId?: string
  name: string
  kind: number
  attributes?: Array<{ key: string; value: Record<string, unknown> }>
  scope: string
}

/** An OTLP/HTTP receiver (JSON, as @opentelemetry/exporter-trace-otlp-http sends it): the spans and the raw bodies. */
async function otlpReceiver (t: Test): Promise<{ url: string; spans: OtlpSpan[]; bodies: string[] }> {
  const spans: OtlpSpan[] = []
  const bodies: string[] = []
  const server = http.createServer((incoming, answer) => {
    let body = ''
    incoming.on('data', (chunk: Buffer) => { body += chunk.toString() })
    incoming.on('end', () => {
      bodies.push(body)
      if (incoming.url === '/v1/traces') {
        const parsed = JSON.parse(body) as {
          resourceSpans: Array<{ scopeSpans: Array<{ scope: { name: string }; spans: Array<Omit<OtlpSpan, 'scope'>> }> }>
        }
        for (const resource of parsed.resourceSpans) {
          for (const scope of resource.scopeSpans) {
            spans.push(...scope.spans.map((span) => ({ ...span, scope: scope.scope.name })))
          }
        }
      }
      answer.setHeader('content-type', 'application/json')
      answer.end('{}')
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise((resolve) => server.close(resolve)))
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, spans, bodies }
}

async function startTracedProxy (t: Test, simUrl: string, env: Record<string, string>): Promise<ProxyProcess> {
  const dir = t.testdir({ 'credentials.json': JSON.stringify(DEMO_CREDENTIALS) })
  const proxy = await startProxyProcess(
    { M2M_PROXY_UPSTREAM: simUrl, M2M_PROXY_CREDENTIALS_FILE: 'credentials.json', M2M_PROXY_ADMIN_TOKEN: ADMIN_TOKEN, ...env },
    dir
  )
  t.teardown(async () => {
    proxy.child.kill('SIGKILL')
    await proxy.exit
  })
  await proxy.waitFor((line) => line.msg === 'logged in to ThingSpace')
  return proxy
}

/** A span attribute's value, whatever its OTLP type. */
function attribute (span: OtlpSpan, key: string): unknown {
  const value = span.attributes?.find((entry) => entry.key === key)?.value
  return value === undefined ? undefined : Object.values(value)[0]
}

t.test('a request traced from the client through the proxy to ThingSpace, no secret in any span', async (t) => {
  const { sim, simUrl } = await startSimulator(t)
  const receiver = await otlpReceiver(t)
  const proxy = await startTracedProxy(t, simUrl, {
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_BSP_SCHEDULE_DELAY: '100'
  })
  t.ok(proxy.lines.some((line) => line.msg === 'OpenTelemetry traces on (OTEL_EXPORTER_OTLP_*)'), 'said at start-up')
  const traceId = randomBytes(16).toString('hex')
  const clientSpanId = randomBytes(8).toString('hex')
  const answer = await request(`${proxy.proxyUrl}${ECHO_PATH}?q=1&access_token=client-query-secret-7d1e`, {
    headers: { traceparent: `00-${traceId}-${clientSpanId}-01`, 'user-agent': 'client-agent-4c2b' }
  })
  const echo = (await answer.body.json()) as Echo
  t.equal(answer.statusCode, 200)
  t.match(echo.headers.traceparent, new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`), 'ThingSpace gets the trace, a span of the proxy as parent')
  t.notMatch(echo.headers.traceparent, clientSpanId, 'not the client\'s own span: the proxy\'s upstream call')

  await until(async () => receiver.spans.some((span) => span.traceId === traceId && span.scope.includes('undici')), 10_000, 'the spans arrive')
  const trace = receiver.spans.filter((span) => span.traceId === traceId)
  const byId = new Map(trace.map((span) => [span.spanId, span]))
  const root = trace.find((span) => span.parentSpanId === clientSpanId)
  t.ok(root, 'one span\'s parent is the client\'s span')
  t.equal(root?.scope, '@fastify/otel', 'the proxy listener\'s request span')
  const upstream = trace.find((span) => span.scope === '@opentelemetry/instrumentation-undici')
  t.ok(upstream, 'the upstream call is a span')
  t.equal(upstream?.kind, 3, 'a client span')
  t.equal(upstream?.spanId, echo.headers.traceparent?.split('-')[2], 'the one ThingSpace was told about')
  let ancestor = upstream
  for (let depth = 0; depth < 10 && ancestor !== undefined && ancestor !== root; depth++) {
    ancestor = ancestor.parentSpanId === undefined ? undefined : byId.get(ancestor.parentSpanId)
  }
  t.equal(ancestor, root, 'the upstream call is below the request span')

  const everything = receiver.bodies.join('\n')
  const secrets = [
    ...sim.activeSessionTokens(),
    sim.currentOAuthToken() ?? 'no-oauth-token',
    DEMO_CREDENTIALS.password,
    DEMO_CREDENTIALS.clientSecret,
    ADMIN_TOKEN
  ]
  t.ok(secrets.length >= 5, 'the session token, the OAuth token, the password, the app secret, the admin token')
  for (const secret of secrets) t.notOk(everything.includes(secret), 'no secret in any span')
  t.notMatch(everything, /vz-m2m-token|"authorization"/i, 'no header of the tokens recorded')
  t.notOk(everything.includes('client-query-secret-7d1e'), "nor the client's query")
  t.notOk(everything.includes('client-agent-4c2b'), 'nor its user agent')
  t.ok(trace.some((span) => attribute(span, 'url.path') === ECHO_PATH), 'the path is recorded')
})

t.test('what a request waited for: the login it joined, the renewal and the replay', async (t) => {
  // Logins take 300 ms here, so that requests arriving together find one under way.
  const { sim, simUrl } = await startSimulator(t, { loginDelayMs: 300 })
  const receiver = await otlpReceiver(t)
  const proxy = await startTracedProxy(t, simUrl, { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_BSP_SCHEDULE_DELAY: '100' })
  const ended = await request(`${proxy.adminUrl}/admin/session/end`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
  t.equal(ended.statusCode, 200)
  await ended.body.dump()
  const traced = async (): Promise<string> => {
    const traceId = randomBytes(16).toString('hex')
    const answer = await request(`${proxy.proxyUrl}${ECHO_PATH}`, { headers: { traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-01` } })
    t.equal(answer.statusCode, 200)
    await answer.body.dump()
    return traceId
  }
  const together = await Promise.all([traced(), traced(), traced(), traced()])
  await until(async () => receiver.spans.filter((span) => span.name === 'm2m.session.acquire').length === 4, 10_000, 'four waits')
  const waits = receiver.spans.filter((span) => span.name === 'm2m.session.acquire')
  t.same(new Set(waits.map((span) => span.traceId)), new Set(together), 'one per request, in its own trace')
  t.equal(waits.filter((span) => attribute(span, 'm2m.login.joined') === false).length, 1, 'one sent the login')
  t.equal(waits.filter((span) => attribute(span, 'm2m.login.joined') === true).length, 3, 'the others joined it')
  t.equal(sim.stats.logins, 2, 'one login for the four (and the start-up one)')

  sim.expireSessions()
  const renewedTrace = await traced()
  await until(async () => receiver.spans.filter((span) => span.traceId === renewedTrace && span.scope.includes('undici')).length >= 2,
    10_000, 'the refused call and its replay')
  const trace = receiver.spans.filter((span) => span.traceId === renewedTrace)
  const renewal = trace.find((span) => span.name === 'm2m.session.renew')
  t.ok(renewal, 'the renewal is a span of the request')
  t.equal(attribute(renewal as OtlpSpan, 'm2m.renewal.cause'), 'session')
  await until(async () => receiver.spans.some((span) => span.traceId === renewedTrace && span.name === 'm2m.replay'), 10_000, 'the replay')
  const replay = receiver.spans.find((span) => span.traceId === renewedTrace && span.name === 'm2m.replay')
  t.equal(attribute(replay as OtlpSpan, 'm2m.replay.cause'), 'session', 'the replay is marked in the request\'s trace')
  const upstreamCalls = trace.filter((span) => span.scope.includes('undici')).map((span) => attribute(span, 'url.path'))
  t.same(upstreamCalls.filter((path) => path === ECHO_PATH).length, 2, 'the refused call and its replay')
  t.ok(upstreamCalls.includes('/api/m2m/v1/session/login'), 'and the login between them')
})

t.test('a wait in the queue is a span of the request that waited', async (t) => {
  const { simUrl } = await startSimulator(t)
  const receiver = await otlpReceiver(t)
  const proxy = await startTracedProxy(t, simUrl, {
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_BSP_SCHEDULE_DELAY: '100',
    M2M_PROXY_MAX_IN_FLIGHT: '1'
  })
  const slow = async (): Promise<string> => {
    const traceId = randomBytes(16).toString('hex')
    const answer = await request(`${proxy.proxyUrl}/api/m2m/v1/simulator/delay/300`, {
      headers: { traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-01` }
    })
    await answer.body.dump()
    t.equal(answer.statusCode, 200)
    return traceId
  }
  const traces = await Promise.all([slow(), slow()])
  await until(async () => receiver.spans.some((span) => span.name === 'm2m.queue.wait'), 10_000, 'the queue wait')
  const waits = receiver.spans.filter((span) => span.name === 'm2m.queue.wait')
  t.equal(waits.length, 1, 'one of the two waited for the only slot')
  t.ok(traces.includes(waits[0]?.traceId ?? ''), 'in its request\'s trace')
})

t.test('without an OTLP endpoint, nothing is traced or sent', async (t) => {
  const { simUrl } = await startSimulator(t)
  const receiver = await otlpReceiver(t)
  const proxy = await startTracedProxy(t, simUrl, { OTEL_SERVICE_NAME: 'no-endpoint', OTEL_BSP_SCHEDULE_DELAY: '100' })
  const answer = await request(`${proxy.proxyUrl}${ECHO_PATH}`, {
    headers: { traceparent: `00-${randomBytes(16).toString('hex')}-${randomBytes(8).toString('hex')}-01` }
  })
  const echo = (await answer.body.json()) as Echo
  t.notOk(proxy.lines.some((line) => line.msg === 'OpenTelemetry traces on (OTEL_EXPORTER_OTLP_*)'))
  t.match(echo.headers.traceparent, /^00-/, 'a client\'s traceparent is forwarded as it came')
  await new Promise((resolve) => setTimeout(resolve, 500))
  t.same(receiver.bodies, [], 'nothing sent')
})
