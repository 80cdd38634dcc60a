// The CLI's text for people (cli/format.ts) and its admin client (cli/admin-client.ts), without a proxy process:
// every shape an answer may take, including an older or newer proxy's and one that is not JSON.

import t from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import {
  describeCallbacks,
  describeFleet,
  describeServiceOutcomes,
  describeSession,
  duration,
  errorLine,
  relative
} from '../../src/cli/format.js'
import { AdminClient, AdminUnreachableError } from '../../src/cli/admin-client.js'
import { freePort } from '../helpers/ports.js'

const NOW = Date.UTC(2026, 0, 1, 12, 0, 0)
const at = (offsetSeconds: number): string => new Date(NOW + offsetSeconds * 1000).toISOString()

t.test('times: relative to now, in the largest sensible units', async (t) => {
  t.equal(relative(at(0), NOW), 'just now')
  t.equal(relative(at(-42), NOW), '42s ago')
  t.equal(relative(at(75), NOW), 'in 1m 15s')
  t.equal(relative(at(-7260), NOW), '2h 1m ago')
  t.equal(relative(at(90_000), NOW), 'in 1d 1h')
  t.equal(relative(null, NOW), 'never')
  t.equal(relative('not a date', NOW), 'unknown')
  t.equal(duration(59), '59s')
})

t.test('session: active or not, the password line, fleet mode', async (t) => {
  const active = describeSession({
    state: 'active',
    loggedInAt: new Date(Date.now() - 5000).toISOString(),
    idleExpiresAt: new Date(Date.now() + 600_000).toISOString(),
    logins: 3,
    renewals: 1,
    consecutiveLoginFailures: 0,
    maxLoginFailures: 2,
    password: { changedAt: null, generation: 4, savedToFile: false, published: false, rotationDueAt: at(3600) },
    fleetMode: true,
    fleet: { storeConnected: false }
  })
  t.match(active, /^session: +active, logged in \d+s ago, idle expiry in \d+m/m)
  t.match(active, /^logins: +3 \(renewals 1\), failed in a row 0 of 2 allowed$/m)
  t.match(active, /^password: age unknown, generation 4, NOT saved to the credentials file, NOT published to the fleet, rotation due /m)
  t.match(active, /^fleet: +store NOT connected \(see the proxy log\)$/m)
  const bare = describeSession({ state: 'rejected' })
  t.match(bare, /^session: +rejected$/m)
  t.match(bare, /failed in a row 0 of \? allowed/)
  t.notMatch(bare, /password|fleet/, 'nothing made up for fields the answer lacks')
  t.match(describeSession({ state: 'none', password: { changedAt: at(-60), rotationDueAt: null } }), /changed .*, scheduled rotation off/)
})

t.test('fleet: a table, the marks, the notes; single-process mode in one line', async (t) => {
  t.equal(describeFleet({ mode: 'single' }), 'single-process mode: no fleet (M2M_PROXY_REDIS_URL is not set)')
  const text = describeFleet({
    mode: 'fleet',
    lockHolder: 'b/2',
    generation: 3,
    unreadable: 1,
    replicas: [
      { id: 'a/1', host: 'a', state: 'active', ready: true, generation: 3, loggedInAt: null, lastSeenAt: null, self: true },
      {
        id: 'b/2',
        host: 'b',
        state: 'logging-in',
        ready: false,
        notReadyReason: 'not-logged-in',
        generation: null,
        loggedInAt: new Date(Date.now() - 90_000).toISOString(), // the field GET /admin/fleet gives (ReplicaBeat)
        stale: true
      }
    ]
  })
  const lines = text.split('\n')
  t.match(lines[0], /^REPLICA +HOST +STATE +READY +GEN +LAST LOGIN +LAST SEEN$/)
  t.match(lines[1], /^a\/1 +a +active +yes +3 +never +never +\(this one\)$/)
  t.match(lines[2], /^b\/2 +b +logging-in +no: not-logged-in +- +1m 30s ago +never +holds the login lock, STALE$/)
  t.match(text, /2 replica\(s\); password generation 3; login lock held by b\/2/)
  t.match(text, /1 heartbeat\(s\) could not be opened: a replica with another M2M_PROXY_FLEET_KEY\?/)
  t.match(describeFleet({ mode: 'fleet', replicas: 'nonsense' }), /0 replica\(s\); password generation unknown; login lock free/)
})

t.test('refusals: the proxy\'s own code and message, or the status alone', async (t) => {
  t.equal(
    errorLine({ status: 409, body: { errorCode: 'Proxy.Conflict', errorMessage: 'a rotation is running' } }),
    'refused (HTTP 409 Proxy.Conflict): a rotation is running'
  )
  t.equal(errorLine({ status: 502, body: '<html>bad gateway</html>' }), 'refused (HTTP 502)')
})

t.test('callbacks: one line per service; the listeners as a table, or none', async (t) => {
  t.equal(
    describeServiceOutcomes('registered', {
      accountName: 'A-1',
      services: [{ service: 'CarrierService', done: true, url: 'https://cb/CarrierService' }, { service: 'SMSDelivery', done: true }]
    }),
    'CarrierService: registered at https://cb/CarrierService (account A-1)\nSMSDelivery: registered (account A-1)'
  )
  t.equal(describeServiceOutcomes('removed', { accountName: 'A-1' }), '', 'an answer without services: nothing to say')
  t.equal(describeCallbacks({ accountName: 'A-1', callbacks: [] }), 'no callback listener registered for account A-1')
  t.equal(
    describeCallbacks({ accountName: 'A-1', callbacks: [{ name: 'CarrierService', url: 'https://cb/CarrierService' }] }),
    'CarrierService              https://cb/CarrierService'
  )
})

t.test('admin client: the token sent, JSON or text back, no answer named plainly', async (t) => {
  const seen: Array<string | undefined> = []
  const server = http.createServer((request, response) => {
    seen.push(request.headers.authorization)
    if (request.url === '/slow') return // never answers
    if (request.url === '/text') response.end('plain text')
    else response.setHeader('content-type', 'application/json').end('{"ok":true}')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const client = new AdminClient({ url, token: 'token-0123456789abcdef01234', timeoutMs: 300 })
  t.same(await client.request('GET', '/json'), { status: 200, body: { ok: true } })
  t.same(await client.request('POST', '/text'), { status: 200, body: 'plain text' })
  t.same(seen, ['Bearer token-0123456789abcdef01234', 'Bearer token-0123456789abcdef01234'])
  t.equal(client.hasToken, true)
  await t.rejects(client.request('GET', '/slow'), new AdminUnreachableError(`no answer from the admin listener at ${url}: timed out`))
  await t.rejects(client.request('POST', '/slow'), {
    name: 'AdminUnreachableError',
    message: `no answer from the admin listener at ${url}: timed out; ` +
      'the action may have been carried out all the same: check with "m2m-session-proxy status"'
  }, 'an action unanswered in time may have happened')
  const none = new AdminClient({ url: `http://127.0.0.1:${await freePort()}`, token: undefined, timeoutMs: 2000 })
  t.equal(none.hasToken, false)
  await t.rejects(none.request('GET', '/healthz'), { name: 'AdminUnreachableError', message: /: ECONNREFUSED$/ })
})
