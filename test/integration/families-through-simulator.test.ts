// Every API family the simulator serves, through the proxy, across a session expiry, an OAuth expiry and both at once,
// with compressed answers and without.

import t, { type Test } from 'tap'
import { DEMO_ACCOUNT_NAME } from '../../src/simulator/app.js'
import { startStack, type Stack } from '../helpers/stack.js'

const ACCOUNT = DEMO_ACCOUNT_NAME
const JSON_BODY = { 'content-type': 'application/json' }

/** One call per family, on routes the simulator implements (docs/simulator.md). */
const FAMILY_CALLS: Array<{ family: string; method: string; path: string; body?: unknown }> = [
  { family: 'm2m v1', method: 'POST', path: '/api/m2m/v1/devices/actions/list', body: { accountName: ACCOUNT } },
  { family: 'm2m v2', method: 'POST', path: '/api/m2m/v2/devices/actions/list', body: { accountName: ACCOUNT } },
  { family: 'v1 accounts', method: 'GET', path: `/api/v1/accounts/${ACCOUNT}` },
  { family: 'Device Location', method: 'GET', path: `/api/loc/v1/subscriptions/${ACCOUNT}` },
  { family: 'Subscription Server', method: 'GET', path: `/api/subsc/v1/managedaccounts/${ACCOUNT}/service/Location` },
  { family: 'Software Management v1', method: 'GET', path: `/api/fota/v1/subscriptions/${ACCOUNT}` },
  { family: 'Software Management v2', method: 'GET', path: `/api/fota/v2/subscriptions/${ACCOUNT}` },
  { family: 'Software Management v3', method: 'GET', path: `/api/fota/v3/subscriptions/${ACCOUNT}` },
  { family: 'Device Diagnostics', method: 'GET', path: `/api/diagnostics/v1/subscriptions?accountName=${ACCOUNT}` },
  {
    family: 'Cloud Connector',
    method: 'POST',
    path: '/api/cc/v1/subscriptions/actions/query',
    body: { accountidentifier: { billingaccountid: ACCOUNT } }
  },
  { family: 'Hyper Precise Location', method: 'GET', path: `/api/hyper-precise/v1/callbacks?accountNumber=${ACCOUNT}` }
]

async function callAll (stack: Stack, label: string, t: Test): Promise<string[]> {
  const bodies: string[] = []
  for (const { family, method, path, body } of FAMILY_CALLS) {
    const answer = await stack.call(
      method,
      path,
      body === undefined ? {} : { headers: JSON_BODY, body: JSON.stringify(body) }
    )
    t.equal(answer.status, 200, `${family} ${label}: ${answer.text.slice(0, 120)}`)
    bodies.push(answer.text)
  }
  return bodies
}

for (const compressed of [true, false]) {
  t.test(
    `every family ${compressed ? 'with compressed answers (br, gzip, deflate accepted)' : 'uncompressed'}: session expiry, OAuth expiry, both at once`,
    async (t) => {
      const stack = await startStack(t, { acceptCompressed: compressed })
      const probe = await stack.call('POST', '/api/m2m/v1/devices/actions/list', {
        headers: { ...JSON_BODY, ...(compressed ? { 'accept-encoding': 'gzip' } : {}) },
        body: JSON.stringify({ accountName: ACCOUNT })
      })
      if (compressed) t.equal(probe.headers['content-encoding'], 'gzip', 'the simulator compresses when asked')
      else t.equal(probe.headers['content-encoding'], undefined, 'and not when not asked')
      const before = await callAll(stack, 'before', t)

      const cases: Array<[string, () => void, { logins: number; tokens: number }]> = [
        [
          'after a session expiry',
          () => {
            stack.sim.expireSessions()
          },
          { logins: 1, tokens: 0 }
        ],
        [
          'after an OAuth expiry',
          () => {
            stack.sim.expireOAuthToken()
          },
          { logins: 0, tokens: 1 }
        ],
        [
          'after both expired at once',
          () => {
            stack.sim.expireSessions()
            stack.sim.expireOAuthToken()
          },
          { logins: 1, tokens: 1 }
        ]
      ]
      for (const [label, expire, expected] of cases) {
        const logins = stack.sim.stats.logins
        const tokens = stack.sim.stats.oauthTokensIssued
        expire()
        const after = await callAll(stack, label, t)
        // The requestId of the async v2 call differs per call; every other answer is the same as before.
        t.same(
          after.filter((_, index) => FAMILY_CALLS[index]?.family !== 'm2m v2'),
          before.filter((_, index) => FAMILY_CALLS[index]?.family !== 'm2m v2'),
          `${label}: the same answers`
        )
        t.equal(
          stack.sim.stats.logins - logins,
          expected.logins,
          `${label}: ${expected.logins} login(s) for all families`
        )
        t.equal(
          stack.sim.stats.oauthTokensIssued - tokens,
          expected.tokens,
          `${label}: ${expected.tokens} new OAuth token(s)`
        )
      }
    }
  )
}
