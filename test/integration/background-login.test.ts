// Not ready because ThingSpace is failing at start-up (not a rejection): the proxy logs in again by itself, without a
// client request, and becomes ready.

import t, { type Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { buildSimulator, DEMO_CREDENTIALS, type Simulator } from '../../src/simulator/app.js'
import { startSimulator, startStack, type Stack } from '../helpers/stack.js'
import { freePort } from '../helpers/ports.js'

interface Readiness {
  ready: boolean
  reason?: string
}

async function simulatorOn (t: Test, port: number): Promise<Simulator> {
  const sim = buildSimulator({ ...DEMO_CREDENTIALS })
  await sim.app.listen({ host: '127.0.0.1', port })
  t.teardown(() => sim.app.close())
  return sim
}

async function readiness (stack: Stack): Promise<{ status: number; body: Readiness }> {
  const answer = await stack.adminCall('GET', '/readyz')
  return { status: answer.status, body: answer.json() as Readiness }
}

/**
 * Polls /readyz (the admin listener: no proxied request) until 200; the milliseconds it took, or undefined after
 * `limitMs`.
 */
async function readyWithin (stack: Stack, limitMs: number): Promise<number | undefined> {
  const started = Date.now()
  while (Date.now() - started < limitMs) {
    if ((await readiness(stack)).status === 200) return Date.now() - started
    await sleep(100)
  }
  return undefined
}

const proxiedRequests = (stack: Stack): number => stack.logs.entries().filter((entry) => entry.msg === 'request').length

t.test(
  'upstream unreachable at start-up: ready by itself within seconds of ThingSpace coming back, with no client request',
  async (t) => {
    const port = await freePort()
    const stack = await startStack(t, { upstream: `http://127.0.0.1:${port}` })
    const before = await readiness(stack)
    t.equal(before.status, 503)
    t.equal(before.body.reason, 'not-logged-in')
    await sleep(1500)
    const sim = await simulatorOn(t, port)
    // The background retries back off 1, 2, 4 s...: the next one comes within a few seconds. Generous bound for a busy
    // machine.
    const tookMs = await readyWithin(stack, 15_000)
    t.ok(tookMs !== undefined, `ready ${tookMs ?? 'never'} ms after the upstream came back`)
    t.equal(sim.stats.logins, 1, 'one login, made by the proxy itself')
    t.equal(sim.stats.dataRequests, 0)
    t.equal(proxiedRequests(stack), 0, 'no client request was needed')
    t.equal(stack.proxy.app.session.guardEngaged, false)
    t.ok(
      stack.logs
        .entries()
        .some((entry) => entry.msg === 'not ready while ThingSpace is failing: logging in again in the background'),
      'the background retry is logged'
    )
  }
)

t.test(
  'login endpoint answering 500 at start-up: ready by itself once it recovers, nothing counted toward the lockout',
  async (t) => {
    const { sim, simUrl } = await startSimulator(t)
    sim.failNextLogins(2, 'status500')
    const stack = await startStack(t, { upstream: simUrl })
    t.equal((await readiness(stack)).status, 503)
    const tookMs = await readyWithin(stack, 15_000)
    t.ok(tookMs !== undefined, `ready after ${tookMs ?? 'never'} ms`)
    t.equal(sim.stats.logins, 1)
    t.equal(sim.stats.failedLogins, 0)
    t.equal(proxiedRequests(stack), 0)
    t.equal(stack.proxy.app.session.snapshot().consecutiveLoginFailures, 0)
  }
)

t.test('rejected credentials at start-up: no login in the background', async (t) => {
  const stack = await startStack(t, { credentials: { password: 'wrong-password' } })
  t.equal(stack.sim.stats.failedLogins, 1)
  await sleep(3500) // past two backoff periods
  t.equal(stack.sim.stats.failedLogins, 1, 'no retry without a client')
  t.equal(stack.proxy.app.session.snapshot().consecutiveLoginFailures, 1, 'the guard count is unchanged')
  t.equal((await readiness(stack)).body.reason, 'credentials-rejected')
})

t.test('shutdown and close stop the background retry', async (t) => {
  for (const stop of ['shutdown', 'close'] as const) {
    const port = await freePort()
    const stack = await startStack(t, { upstream: `http://127.0.0.1:${port}` })
    const attempts = (): number =>
      stack.logs
        .entries()
        .filter((entry) => typeof entry.msg === 'string' && entry.msg.startsWith('OAuth token fetch failed')).length
    t.equal(attempts(), 1, `${stop}: the start-up attempt failed`)
    await stack.proxy.app[stop]()
    await sleep(2500) // past the first retry (1 s)
    t.equal(attempts(), 1, `${stop}: no attempt after it`)
  }
})
