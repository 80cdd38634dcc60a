// Graceful shutdown of the built proxy: readiness 503 at once, in-flight requests finish, session logged out, exit 0.

import t, { type Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import net from 'node:net'
import { once } from 'node:events'
import { Agent, request } from 'undici'
import { DEMO_CREDENTIALS } from '../../src/simulator/app.js'
import { ADMIN_TOKEN, startSimulator, startStack } from '../helpers/stack.js'
import { startProxyProcess } from '../helpers/process.js'
import { until } from '../helpers/fleet.js'
import type { SimulatorStats } from '../../src/simulator/app.js'

/** Resolves once the simulator has received a request since `before` (its count then): the request is in flight. */
async function inFlightAt (sim: { stats: SimulatorStats }, before: number): Promise<void> {
  await until(() => sim.stats.requestsReceived > before, 5000, 'the request to reach the simulator', 10)
}

async function startWithSimulator (t: Test, env: Record<string, string> = {}) {
  const { sim, simUrl } = await startSimulator(t)
  const dir = t.testdir({ 'credentials.json': JSON.stringify(DEMO_CREDENTIALS) })
  const proxy = await startProxyProcess(
    { M2M_PROXY_UPSTREAM: simUrl, M2M_PROXY_CREDENTIALS_FILE: 'credentials.json', ...env },
    dir
  )
  t.teardown(() => {
    proxy.child.kill('SIGKILL')
  })
  await proxy.waitFor((line) => line.msg === 'logged in to ThingSpace')
  return { sim, proxy }
}

t.test(
  'SIGTERM with a request in flight: it completes, readiness turns 503, the session is logged out, exit 0',
  async (t) => {
    const { sim, proxy } = await startWithSimulator(t)
    const before = sim.stats.requestsReceived
    const inFlight = fetch(`${proxy.proxyUrl}/api/m2m/v1/simulator/delay/1500`)
    await inFlightAt(sim, before)
    proxy.child.kill('SIGTERM')
    await proxy.waitFor((line) => line.msg === 'shutting down')
    const readiness = await fetch(`${proxy.adminUrl}/readyz`)
    t.equal(readiness.status, 503, 'not ready while draining')
    t.match(await readiness.json(), { ready: false, reason: 'shutting-down' })
    await t.rejects(fetch(`${proxy.proxyUrl}/api/m2m/v1/simulator/echo`), 'no new connections accepted')
    const answer = await inFlight
    t.equal(answer.status, 200, 'the request in flight completed')
    t.same(await answer.json(), { delayedMs: 1500 })
    const { code } = await proxy.exit
    t.equal(code, 0)
    t.equal(sim.stats.logouts, 1, 'the upstream session was logged out')
    t.same(sim.activeSessionTokens(), [])
    // Lines still in the log buffer at exit are written, not lost.
    t.ok(
      proxy.lines.some((line) => line.msg === 'request' && line.path === '/api/m2m/v1/simulator/delay/1500'),
      'the request line of the drained request'
    )
    t.ok(
      proxy.lines.some((line) => line.msg === 'upstream session logged out'),
      'the last line before exit'
    )
  }
)

t.test('with the default log buffer, a lone request line still reaches stdout within the flush interval', async (t) => {
  const { proxy } = await startWithSimulator(t)
  const sent = Date.now()
  t.equal((await fetch(`${proxy.proxyUrl}/api/m2m/v1/simulator/echo`)).status, 200)
  await proxy.waitFor((line) => line.msg === 'request' && line.path === '/api/m2m/v1/simulator/echo', 5000)
  t.ok(
    Date.now() - sent < 3000,
    `logged after ${Date.now() - sent} ms (a 4 KiB buffer holds about 20 lines; the flush interval is 1 s)`
  )
})

t.test('M2M_PROXY_LOGOUT_ON_SHUTDOWN=false keeps the upstream session', async (t) => {
  const { sim, proxy } = await startWithSimulator(t, { M2M_PROXY_LOGOUT_ON_SHUTDOWN: 'false' })
  proxy.child.kill('SIGINT')
  t.equal((await proxy.exit).code, 0)
  t.equal(sim.stats.logouts, 0)
  t.equal(sim.activeSessionTokens().length, 1)
})

t.test('the grace period bounds the wait for requests in flight', async (t) => {
  const { sim, proxy } = await startWithSimulator(t, { M2M_PROXY_SHUTDOWN_GRACE_MS: '300' })
  const before = sim.stats.requestsReceived
  const inFlight = fetch(`${proxy.proxyUrl}/api/m2m/v1/simulator/delay/20000`).then(
    () => 'answered',
    () => 'cut'
  )
  await inFlightAt(sim, before)
  const started = Date.now()
  proxy.child.kill('SIGTERM')
  const { code } = await proxy.exit
  t.equal(code, 0)
  t.ok(Date.now() - started < 5000, `stopped after ${Date.now() - started} ms`)
  t.equal(await inFlight, 'cut')
})

t.test('a second signal exits at once', async (t) => {
  const { sim, proxy } = await startWithSimulator(t, { M2M_PROXY_SHUTDOWN_GRACE_MS: '60000' })
  const before = sim.stats.requestsReceived
  void fetch(`${proxy.proxyUrl}/api/m2m/v1/simulator/delay/30000`).catch(() => {})
  await inFlightAt(sim, before)
  proxy.child.kill('SIGTERM')
  await proxy.waitFor((line) => line.msg === 'shutting down')
  const started = Date.now()
  proxy.child.kill('SIGTERM')
  const { code } = await proxy.exit
  // Far below the grace (60 s) and the request's 30 s: the bound leaves room for a busy machine.
  t.ok(Date.now() - started < 10_000, `did not wait for the grace period: ${Date.now() - started} ms`)
  t.equal(code, 1)
})

t.test(
  'SIGHUP shuts down as gracefully as SIGTERM; a stalled upload to the admin listener does not hold the exit',
  async (t) => {
    const { sim, proxy } = await startWithSimulator(t, {
      M2M_PROXY_SHUTDOWN_GRACE_MS: '60000',
      M2M_PROXY_ADMIN_TOKEN: ADMIN_TOKEN
    })
    // An admin request whose body never comes: the admin listener is closed with it, not waited for.
    const { port } = new URL(proxy.adminUrl)
    const stalled = net.connect(Number(port), '127.0.0.1')
    t.teardown(() => stalled.destroy())
    await once(stalled, 'connect')
    stalled.write(
      `POST /admin/session/logout HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{`
    )
    await sleep(200)
    const started = Date.now()
    proxy.child.kill('SIGHUP')
    const shuttingDown = await proxy.waitFor((line) => line.msg === 'shutting down')
    t.equal(shuttingDown.signal, 'SIGHUP')
    const { code } = await proxy.exit
    t.equal(code, 0, 'a graceful exit')
    t.ok(
      Date.now() - started < 10_000,
      `stopped after ${Date.now() - started} ms, not after the 60 s grace or a request timeout`
    )
    t.equal(sim.stats.logouts, 1, 'the upstream session was logged out')
  }
)

t.test(
  'a keep-alive client with a request in flight: the drain ends with its answer, not with the grace period',
  async (t) => {
    const stack = await startStack(t, { env: { M2M_PROXY_SHUTDOWN_GRACE_MS: '10000' } })
    // as nearly every HTTP client: connections are kept for the next request
    const client = new Agent({ keepAliveTimeout: 60_000 })
    t.teardown(() => client.destroy())
    const before = stack.sim.stats.requestsReceived
    const inFlight = request(`${stack.proxy.proxyUrl}/api/m2m/v1/simulator/delay/1500`, { dispatcher: client }).then(
      async (answer) => ({ status: answer.statusCode, body: await answer.body.json(), at: Date.now() })
    )
    await inFlightAt(stack.sim, before)
    const shutdown = stack.proxy.app.shutdown().then(() => Date.now())
    const answer = await inFlight
    t.equal(answer.status, 200, 'the request in flight completed')
    t.same(answer.body, { delayedMs: 1500 })
    const stoppedAt = await Promise.race([shutdown, sleep(5000, undefined, { ref: false })])
    t.ok(
      stoppedAt !== undefined && stoppedAt - answer.at < 1000,
      `shut down ${stoppedAt === undefined ? 'not within 5 s' : `${stoppedAt - answer.at} ms`} after the answer (grace period 10 s)`
    )
    await shutdown
  }
)

t.test('shutdown without an upstream session says so, instead of logging it out', async (t) => {
  const stack = await startStack(t)
  const ended = await stack.adminCall('POST', '/admin/session/end', {
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` }
  })
  t.same(ended.json(), { ended: true })
  await stack.proxy.app.shutdown()
  const lines = stack.logs.entries()
  t.match(
    lines.find((line) => line.msg === 'no upstream session to log out'),
    { loggedOut: false }
  )
  t.notOk(
    lines.some((line) => line.msg === 'upstream session logged out'),
    'no claim of a logout'
  )
  t.equal(stack.sim.stats.logouts, 1, 'only the logout asked for on the admin listener')
})
