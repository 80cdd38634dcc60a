// The graceful way down (SIGTERM: app.shutdown()) while the proxy waits for ThingSpace on its own account: a password
// rotation or a login already sent finishes within the grace period instead of being cut off.
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { DEMO_CREDENTIALS } from '../../src/simulator/app.js'
import { LOGIN_GUARD_FILE } from '../../src/session/login-guard.js'
import { ADMIN_TOKEN, startStack, type Stack } from '../helpers/stack.js'
import { until } from '../helpers/fleet.js'

const AUTH = { authorization: `Bearer ${ADMIN_TOKEN}` }

function passwordOnDisk (stack: Stack): string {
  return (JSON.parse(fs.readFileSync(path.join(stack.dir, 'credentials.json'), 'utf8')) as { password: string }).password
}

function guardCount (stack: Stack): number {
  const state = JSON.parse(fs.readFileSync(path.join(stack.dir, LOGIN_GUARD_FILE), 'utf8')) as {
    consecutiveRejections: number
  }
  return state.consecutiveRejections
}

const cutOffWarnings = (stack: Stack): unknown[] =>
  stack.logs.entries().filter((entry) => /still waiting for ThingSpace after the grace period/.test(String(entry.msg)))

t.test('a rotation whose answer is on its way when the shutdown begins: finished, the new password saved', async (t) => {
  const stack = await startStack(t, { simulator: { passwordResetAnswerDelayMs: 1500 } })
  const rotation = stack.adminCall('POST', '/admin/password/rotate', { headers: AUTH })
  // ThingSpace has changed the password; its answer is still on the way.
  await until(() => stack.sim.password !== DEMO_CREDENTIALS.password, 5000, 'the reset applied upstream')
  await stack.proxy.app.shutdown()
  const answer = await rotation
  t.equal(answer.status, 200, 'the operator gets the answer')
  t.equal(passwordOnDisk(stack), stack.sim.password, 'the password on disk is the one ThingSpace accepts')
  t.same(cutOffWarnings(stack), [])
  t.ok(
    stack.logs.entries().some((entry) => entry.msg === "password rotated on an operator's request"),
    'the rotation is logged by itself, whether or not its caller waits for the answer'
  )
})

t.test('a login sent when the shutdown begins: finished, not counted as a failure', async (t) => {
  const stack = await startStack(t, { simulator: { loginDelayMs: 1000 } })
  await stack.proxy.initialLogin
  const logins = stack.sim.stats.logins
  const renewal = stack.proxy.app.session.restartSession('admin').then(() => 'logged in', () => 'failed')
  await sleep(200) // the login is on its way
  await stack.proxy.app.shutdown()
  t.equal(await renewal, 'logged in')
  t.equal(stack.sim.stats.logins, logins + 1)
  t.equal(guardCount(stack), 0, 'nothing left counted against the credentials')
  t.same(cutOffWarnings(stack), [])
})

t.test('past the grace period, what still waits is cut off, and a warning says so', async (t) => {
  const stack = await startStack(t, {
    simulator: { passwordResetAnswerDelayMs: 3000 },
    env: { M2M_PROXY_SHUTDOWN_GRACE_MS: '300' }
  })
  const rotation = stack.adminCall('POST', '/admin/password/rotate', { headers: AUTH }).catch(() => undefined)
  await until(() => stack.sim.password !== DEMO_CREDENTIALS.password, 5000, 'the reset applied upstream')
  const startedAt = performance.now()
  await stack.proxy.app.shutdown()
  t.ok(performance.now() - startedAt < 2500, 'the shutdown did not wait for the answer')
  t.equal(cutOffWarnings(stack).length, 1)
  await rotation
})

t.test(
  'past the grace period, requests still waiting for a login get 503 ShuttingDown with Retry-After, never sent',
  async (t) => {
    const stack = await startStack(t, {
      simulator: { loginDelayMs: 3000 },
      // Two admitted, three in the admission queue: all five answered.
      env: { M2M_PROXY_SHUTDOWN_GRACE_MS: '300', M2M_PROXY_MAX_IN_FLIGHT: '2' }
    })
    await stack.proxy.initialLogin
    await stack.adminCall('POST', '/admin/session/end', { headers: AUTH })
    const dataBefore = stack.sim.stats.dataRequests
    const waiting = Array.from({ length: 5 }, async (_, i) =>
      await stack.call('POST', '/api/m2m/v1/devices/actions/list', {
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ accountName: `waiting-${i}` })
      }))
    await sleep(300) // they wait for the login
    await stack.proxy.app.shutdown()
    for (const answer of await Promise.all(waiting)) {
      t.equal(answer.status, 503)
      t.match(answer.json(), { errorCode: 'Proxy.Overloaded.ShuttingDown', errorMessage: /not sent to ThingSpace/ })
      t.equal(answer.headers['retry-after'], '5')
      t.equal(answer.headers.connection, 'close')
    }
    await sleep(3000) // the login ends: nothing is sent for them
    t.equal(stack.sim.stats.dataRequests, dataBefore, 'ThingSpace never saw them')
    t.match(
      stack.logs.entries().find((entry) => /grace period: those not sent yet answered 503/.test(String(entry.msg))),
      { answeredNotSent: 5 }
    )
  }
)
