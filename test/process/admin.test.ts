// The admin API over real sockets: authentication, session control, password rotation, reload, readiness, audit.

import t, { type Test } from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { execFileSync } from 'node:child_process'
import { setTimeout as sleep } from 'node:timers/promises'
import { DEMO_CREDENTIALS } from '../../src/simulator/app.js'
import { ADMIN_TOKEN, ECHO_PATH, startStack, type Stack } from '../helpers/stack.js'

const AUTH = { authorization: `Bearer ${ADMIN_TOKEN}` }
const ADMIN_ROUTES: Array<[string, string]> = [
  ['GET', '/admin/session'],
  ['POST', '/admin/session/start'],
  ['POST', '/admin/session/end'],
  ['POST', '/admin/password/rotate'],
  ['POST', '/admin/credentials/reload'],
  ['GET', '/admin/no-such-route']
]

interface ErrorBody {
  errorCode: string
  errorMessage: string
}
interface Snapshot {
  state: string
  consecutiveLoginFailures: number
  sessionTokenFingerprint: string | null
  logins: number
}

function readCredentialsFile (stack: Stack): Record<string, unknown> {
  return JSON.parse(fs.readFileSync(path.join(stack.dir, 'credentials.json'), 'utf8')) as Record<string, unknown>
}

t.test('every admin route: missing or wrong token → 401 with WWW-Authenticate; nothing happens', async (t) => {
  const stack = await startStack(t)
  for (const [method, route] of ADMIN_ROUTES) {
    for (const headers of [
      {} as Record<string, string>,
      { authorization: 'Bearer wrong-token-wrong-token-wrong' },
      { authorization: `Basic ${ADMIN_TOKEN}` },
      { authorization: `Bearer ${ADMIN_TOKEN}x` }
    ]) {
      const answer = await stack.adminCall(method, route, { headers })
      t.equal(answer.status, 401, `${method} ${route} ${JSON.stringify(headers).slice(0, 30)}`)
      t.match(answer.headers['www-authenticate'], /^Bearer/)
      t.equal((answer.json() as ErrorBody).errorCode, 'Proxy.Unauthorized')
    }
  }
  t.equal(stack.sim.stats.logins, 1, 'no login')
  t.equal(stack.sim.stats.logouts, 0, 'no logout')
  t.equal(stack.sim.stats.passwordResets, 0, 'no reset')
  t.equal(readCredentialsFile(stack).password, DEMO_CREDENTIALS.password)
})

t.test('no admin token configured → 403 admin API disabled; probes stay open', async (t) => {
  const stack = await startStack(t, { env: { M2M_PROXY_ADMIN_TOKEN: '' } })
  for (const [method, route] of ADMIN_ROUTES) {
    const answer = await stack.adminCall(method, route, { headers: AUTH })
    t.equal(answer.status, 403, `${method} ${route}`)
    t.match((answer.json() as ErrorBody).errorMessage, /admin API disabled/)
  }
  t.equal((await stack.adminCall('GET', '/healthz')).status, 200)
  t.equal((await stack.adminCall('GET', '/readyz')).status, 200)
  t.equal(stack.sim.stats.passwordResets, 0)
  const off = stack.logs.entries().filter((entry) => String(entry.msg).startsWith('the admin API is off'))
  t.equal(off.length, 1, 'one line at start-up says the admin API is off, and how to turn it on')
  t.match(off[0], { level: 40, setting: 'M2M_PROXY_ADMIN_TOKEN' })
})

t.test('with an admin token, no line about the admin API being off', async (t) => {
  const stack = await startStack(t)
  t.notOk(stack.logs.entries().some((entry) => String(entry.msg).startsWith('the admin API is off')))
})

t.test('admin paths on the proxy listener answer 404', async (t) => {
  const stack = await startStack(t)
  for (const [method, route] of [...ADMIN_ROUTES, ['GET', '/readyz'], ['GET', '/healthz']] as Array<[string, string]>) {
    const answer = await stack.call(method, route, { headers: AUTH })
    t.equal(answer.status, 404, `${method} ${route}`)
  }
  t.equal(stack.sim.stats.passwordResets, 0)
})

t.test('GET /admin/session: state, times, counts and fingerprints, never a token', async (t) => {
  const stack = await startStack(t)
  const answer = await stack.adminCall('GET', '/admin/session', { headers: AUTH })
  t.equal(answer.status, 200)
  const snapshot = answer.json() as Record<string, unknown>
  t.equal(snapshot.state, 'active')
  t.match(snapshot, { consecutiveLoginFailures: 0, logins: 1, maxLoginFailures: 2 })
  for (const key of ['loggedInAt', 'lastUsedAt', 'idleExpiresAt', 'oauthExpiresAt']) {
    t.type(snapshot[key], 'string', key)
  }
  t.match(snapshot.sessionTokenFingerprint, /^[0-9a-f]{8}$/)
  t.match(snapshot.oauthTokenFingerprint, /^[0-9a-f]{8}$/)
  // The password's state, never the password: single-process mode has no generation; its age counts from first sight.
  t.match(snapshot.password, {
    generation: null,
    published: null,
    savedToFile: true,
    changedAtSource: 'first-seen',
    rotationDays: 0,
    rotationDueAt: null
  })
  t.type((snapshot.password as Record<string, unknown>).changedAt, 'string')
  t.type((snapshot.password as Record<string, unknown>).ageSeconds, 'number')
  for (const secret of [
    ...stack.sim.activeSessionTokens(),
    stack.sim.currentOAuthToken() ?? 'none',
    DEMO_CREDENTIALS.password,
    ADMIN_TOKEN
  ]) {
    t.notOk(answer.text.includes(secret), 'no secret in the answer')
  }
})

t.test('POST /admin/session/start logs in afresh and logs the old session out', async (t) => {
  const stack = await startStack(t)
  const [oldToken] = stack.sim.activeSessionTokens()
  const answer = await stack.adminCall('POST', '/admin/session/start', { headers: AUTH })
  t.equal(answer.status, 200)
  t.equal((answer.json() as Snapshot).state, 'active')
  t.equal(stack.sim.stats.logins, 2)
  t.equal(stack.sim.stats.logouts, 1)
  t.notOk(stack.sim.activeSessionTokens().includes(oldToken ?? ''), 'the replaced token was ended upstream')
  t.equal((await stack.call('GET', ECHO_PATH)).status, 200)
  t.equal(stack.sim.stats.logins, 2, 'the new session is used')
})

t.test('POST /admin/session/end logs out; the next request logs in without sending the dead token', async (t) => {
  const stack = await startStack(t)
  const ended = await stack.adminCall('POST', '/admin/session/end', { headers: AUTH })
  t.equal(ended.status, 200)
  t.same(ended.json(), { ended: true })
  t.equal(stack.sim.stats.logouts, 1)
  t.same(stack.sim.activeSessionTokens(), [])
  const again = await stack.adminCall('POST', '/admin/session/end', { headers: AUTH, body: '' })
  t.same(again.json(), { ended: false }, 'no session: ended false')
  const dataBefore = stack.sim.stats.dataRequests
  t.equal((await stack.call('GET', ECHO_PATH)).status, 200)
  t.equal(stack.sim.stats.logins, 2, 'logged in afresh')
  t.equal(stack.sim.stats.dataRequests - dataBefore, 1, 'one upstream request: the dead token was not tried')
})

t.test(
  'POST /admin/password/rotate: new password saved atomically with mode 0600, fields kept, never shown; a restart uses it',
  async (t) => {
    const stack = await startStack(t, { extraCredentialFields: { comment: 'fleet A', region: 'us-east' } })
    const answer = await stack.adminCall('POST', '/admin/password/rotate', { headers: AUTH })
    t.equal(answer.status, 200, answer.text)
    const result = answer.json() as { rotated: boolean; at: string; verified: boolean }
    t.equal(result.rotated, true)
    t.equal(result.verified, true)
    t.ok(Number.isFinite(Date.parse(result.at)))
    const newPassword = stack.sim.password
    t.not(newPassword, DEMO_CREDENTIALS.password, 'ThingSpace generated a new password')
    const onDisk = readCredentialsFile(stack)
    t.equal(onDisk.password, newPassword, 'saved to the credentials file')
    t.match(onDisk, {
      username: DEMO_CREDENTIALS.username,
      clientId: DEMO_CREDENTIALS.clientId,
      clientSecret: DEMO_CREDENTIALS.clientSecret,
      comment: 'fleet A',
      region: 'us-east'
    })
    t.equal(fs.statSync(path.join(stack.dir, 'credentials.json')).mode & 0o777, 0o600)
    t.equal(
      fs.readdirSync(stack.dir).filter((name) => name.endsWith('.tmp') || name.includes('.probe-')).length,
      0,
      'no temporary file left'
    )
    t.notOk(answer.text.includes(newPassword), 'not in the answer')
    t.notOk(stack.logs.text.includes(newPassword), 'not in any log line')
    t.equal(stack.sim.stats.passwordResets, 1)
    t.equal(stack.sim.stats.logins, 2, 'a new session with the new password')
    const status = (await stack.adminCall('GET', '/admin/session', { headers: AUTH })).json() as {
      password: Record<string, unknown>
    }
    t.match(status.password, { changedAtSource: 'rotated', changedAt: result.at, savedToFile: true })
    t.equal((await stack.call('GET', ECHO_PATH)).status, 200)

    await stack.stopProxy()
    const restarted = await startStack(t, { dir: stack.dir, upstream: stack.simUrl })
    t.equal(stack.sim.stats.logins, 3, 'the restarted proxy logged in')
    t.equal(stack.sim.stats.failedLogins, 0, 'with the rotated password')
    t.equal((await restarted.call('GET', ECHO_PATH)).status, 200)
  }
)

t.test('two concurrent rotations: one upstream reset, one 409; traffic keeps flowing', async (t) => {
  const stack = await startStack(t)
  const traffic = Promise.all(Array.from({ length: 60 }, () => stack.call('GET', ECHO_PATH)))
  const [first, second] = await Promise.all([
    stack.adminCall('POST', '/admin/password/rotate', { headers: AUTH }),
    stack.adminCall('POST', '/admin/password/rotate', { headers: AUTH })
  ])
  t.same([first?.status, second?.status].sort(), [200, 409])
  const conflict = first?.status === 409 ? first : second
  t.equal((conflict?.json() as ErrorBody).errorCode, 'Proxy.Conflict')
  t.equal(stack.sim.stats.passwordResets, 1, 'exactly one upstream reset')
  const answers = await traffic
  t.ok(
    answers.every((answer) => answer.status === 200),
    'every proxied request during the rotation succeeded'
  )
  t.equal(readCredentialsFile(stack).password, stack.sim.password)
})

function makeDirectoryReadOnly (t: Test, dir: string): boolean {
  if (process.getuid?.() !== 0) {
    fs.chmodSync(dir, 0o500)
    t.teardown(() => fs.chmodSync(dir, 0o700))
    return true
  }
  // Root ignores mode bits: the immutable attribute stops even root from creating files.
  try {
    execFileSync('chattr', ['+i', dir], { stdio: 'ignore' })
  } catch {
    return false
  }
  t.teardown(() => execFileSync('chattr', ['-i', dir], { stdio: 'ignore' }))
  return true
}

t.test('rotation refused up front on a read-only credentials directory, without an upstream reset', async (t) => {
  const stack = await startStack(t)
  if (!makeDirectoryReadOnly(t, stack.dir)) {
    t.skip('cannot make a directory read-only here (root without chattr)', () => {})
    return
  }
  const answer = await stack.adminCall('POST', '/admin/password/rotate', { headers: AUTH })
  t.equal(answer.status, 409)
  t.match((answer.json() as ErrorBody).errorMessage, /refused before contacting ThingSpace.*not writable/)
  t.equal(stack.sim.stats.passwordResets, 0, 'ThingSpace was not asked')
  t.equal(stack.sim.password, DEMO_CREDENTIALS.password)
})

t.test('readiness: 503 while the guard is engaged, 200 after a reload with the right password', async (t) => {
  const stack = await startStack(t, {
    credentials: { password: 'wrong-password' },
    env: { M2M_PROXY_CREDENTIALS_WATCH_INTERVAL_MS: '0' }
  })
  await sleep(1100)
  await stack.call('GET', ECHO_PATH) // the second rejected login engages the guard
  t.equal(stack.proxy.app.session.guardEngaged, true)
  const notReady = await stack.adminCall('GET', '/readyz')
  t.equal(notReady.status, 503)
  t.match(notReady.json(), { ready: false, reason: 'credentials-rejected' })

  const unchanged = await stack.adminCall('POST', '/admin/credentials/reload', { headers: AUTH })
  t.equal(unchanged.status, 409, 'unchanged rejected credentials do not release the guard')
  t.equal(stack.sim.stats.failedLogins, 2)

  const file = path.join(stack.dir, 'credentials.json')
  fs.writeFileSync(file, '{"username": "demo-user", "password": ')
  const broken = await stack.adminCall('POST', '/admin/credentials/reload', { headers: AUTH })
  t.equal(broken.status, 400)
  t.match((broken.json() as ErrorBody).errorMessage, /credentials\.json is not valid JSON/)
  fs.writeFileSync(file, JSON.stringify({ ...DEMO_CREDENTIALS, clientSecret: undefined }))
  const missing = await stack.adminCall('POST', '/admin/credentials/reload', { headers: AUTH })
  t.equal(missing.status, 400)
  t.match((missing.json() as ErrorBody).errorMessage, /missing "clientSecret"/)

  fs.writeFileSync(file, JSON.stringify(DEMO_CREDENTIALS))
  const reloaded = await stack.adminCall('POST', '/admin/credentials/reload', { headers: AUTH })
  t.equal(reloaded.status, 200)
  t.match(reloaded.json(), { state: 'active', consecutiveLoginFailures: 0 })
  t.match((await stack.adminCall('GET', '/readyz')).json(), { ready: true })
  t.equal((await stack.call('GET', ECHO_PATH)).status, 200)
  t.equal(stack.sim.locked, false)
})

t.test('a reload whose login ThingSpace rejects: 409 saying so, and the same file is not sent again', async (t) => {
  const stack = await startStack(t, { env: { M2M_PROXY_CREDENTIALS_WATCH_INTERVAL_MS: '0' } })
  fs.writeFileSync(path.join(stack.dir, 'credentials.json'), JSON.stringify({ ...DEMO_CREDENTIALS, password: 'typo' }))
  const rejected = await stack.adminCall('POST', '/admin/credentials/reload', { headers: AUTH })
  t.equal(rejected.status, 409, 'not a success')
  t.match(rejected.json(), { errorCode: 'Proxy.Conflict', errorMessage: /credentials\.json failed: ThingSpace rejected the login/ })
  t.equal(stack.sim.stats.failedLogins, 1)
  const again = await stack.adminCall('POST', '/admin/credentials/reload', { headers: AUTH })
  t.equal(again.status, 409)
  t.match(again.json(), { errorMessage: /unchanged since ThingSpace rejected it/ })
  t.equal(stack.sim.stats.failedLogins, 1, 'the rejected password was not sent again')
  fs.writeFileSync(path.join(stack.dir, 'credentials.json'), JSON.stringify(DEMO_CREDENTIALS))
  const fixed = await stack.adminCall('POST', '/admin/credentials/reload', { headers: AUTH })
  t.equal(fixed.status, 200)
  t.match(fixed.json(), { state: 'active', consecutiveLoginFailures: 0 })
})

t.test('a bad reload keeps the old credentials in force', async (t) => {
  const stack = await startStack(t, { env: { M2M_PROXY_CREDENTIALS_WATCH_INTERVAL_MS: '0' } })
  fs.writeFileSync(path.join(stack.dir, 'credentials.json'), '[]')
  t.equal((await stack.adminCall('POST', '/admin/credentials/reload', { headers: AUTH })).status, 400)
  await stack.adminCall('POST', '/admin/session/end', { headers: AUTH })
  t.equal((await stack.call('GET', ECHO_PATH)).status, 200, 'logged in again with the credentials still in force')
})

t.test(
  'a reload of a credentials file its group or others can read warns, naming the file and chmod 600',
  async (t) => {
    const stack = await startStack(t, { env: { M2M_PROXY_CREDENTIALS_WATCH_INTERVAL_MS: '0' } })
    const file = path.join(stack.dir, 'credentials.json')
    const exposed = (): Array<Record<string, unknown>> =>
      stack.logs.entries().filter((line) => line.level === 40 && /is accessible to/.test(String(line.msg)))
    t.equal(exposed().length, 0, 'no warning for the 0600 file at start-up')
    fs.chmodSync(file, 0o640)
    t.equal(
      (await stack.adminCall('POST', '/admin/credentials/reload', { headers: AUTH })).status,
      200,
      'the reload still succeeds'
    )
    t.equal(exposed().length, 1, 'one warning for the reload')
    t.match(exposed()[0]?.msg, `the credentials file ${file} is accessible to its group (mode 0640)`)
    t.match(exposed()[0]?.msg, `chmod 600 ${file}`)
    fs.chmodSync(file, 0o600)
    await stack.adminCall('POST', '/admin/credentials/reload', { headers: AUTH })
    t.equal(exposed().length, 1, 'none once it is 0600 again')
  }
)

t.test('an edit of the credentials file releases the guard without a call', async (t) => {
  const stack = await startStack(t, {
    credentials: { password: 'wrong-password' },
    env: { M2M_PROXY_CREDENTIALS_WATCH_INTERVAL_MS: '50', M2M_PROXY_MAX_LOGIN_FAILURES: '1' }
  })
  t.equal(stack.proxy.app.session.guardEngaged, true)
  t.equal((await stack.adminCall('GET', '/readyz')).status, 503)
  fs.writeFileSync(path.join(stack.dir, 'credentials.json'), JSON.stringify(DEMO_CREDENTIALS))
  for (let i = 0; i < 100 && (await stack.adminCall('GET', '/readyz')).status !== 200; i++) await sleep(50)
  t.equal((await stack.adminCall('GET', '/readyz')).status, 200, 'ready after the file changed')
  t.equal(stack.sim.stats.logins, 1, 'logged in with the new file')
  t.ok(stack.logs.lines.some((line) => line.includes('credentials reloaded')))
})

// Issue 17, item 3: the watcher compared a changed file with the proxy's own last write, so restoring the file the
// proxy wrote after a rotation was skipped and a typo stayed in force. It now compares with what is in force.
t.test(
  'after a rotation, a typo in the file and then the good file copied back: the good password is in force again',
  async (t) => {
    const stack = await startStack(t, { env: { M2M_PROXY_CREDENTIALS_WATCH_INTERVAL_MS: '50' } })
    const rotated = await stack.adminCall('POST', '/admin/password/rotate', { headers: AUTH })
    t.equal(rotated.status, 200, rotated.text)
    const file = path.join(stack.dir, 'credentials.json')
    const good = fs.readFileSync(file, 'utf8')
    const reloads = (): number => stack.logs.lines.filter((line) => line.includes('credentials reloaded')).length
    fs.writeFileSync(file, JSON.stringify({ ...(JSON.parse(good) as object), password: 'Pw-typo-in-the-edit' }), {
      mode: 0o600
    })
    for (let i = 0; i < 100 && stack.proxy.app.session.currentCredentials.password !== 'Pw-typo-in-the-edit'; i++) {
      await sleep(50)
    }
    t.equal(reloads(), 1, 'the typo was loaded')
    fs.writeFileSync(file, good, { mode: 0o600 })
    for (let i = 0; i < 100 && stack.proxy.app.session.currentCredentials.password !== stack.sim.password; i++) {
      await sleep(50)
    }
    t.equal(stack.proxy.app.session.currentCredentials.password, stack.sim.password, 'the restored file is in force')
    t.equal(reloads(), 2, 'and said so')
    stack.sim.expireSessions()
    t.equal((await stack.call('GET', ECHO_PATH)).status, 200)
    t.equal(stack.sim.stats.failedLogins, 0, 'the typo was never sent')
  }
)

t.test('a known admin route with another method: 405 with Allow, only with the token; without it 401', async (t) => {
  const stack = await startStack(t)
  const cases: Array<[string, string, string]> = [
    ['GET', '/admin/session/start', 'POST'],
    ['GET', '/admin/password/rotate', 'POST'],
    ['PUT', '/admin/credentials/reload', 'POST'],
    ['DELETE', '/admin/session/end', 'POST'],
    ['POST', '/admin/session', 'GET, HEAD'],
    ['GET', '/%61dmin/session/start', 'POST']
  ]
  for (const [method, route, allow] of cases) {
    const refused = await stack.adminCall(method, route)
    t.equal(refused.status, 401, `${method} ${route} without a token`)
    t.equal(refused.headers.allow, undefined, 'no route information without the token')
    const wrong = await stack.adminCall(method, route, {
      headers: { authorization: 'Bearer wrong-token-wrong-token-wrong' }
    })
    t.equal(wrong.status, 401, `${method} ${route} with a wrong token`)
    t.equal(wrong.headers.allow, undefined)
    const answer = await stack.adminCall(method, route, {
      headers: { ...AUTH, 'content-type': 'application/json' },
      body: method === 'GET' ? undefined : '{"x":1}'
    })
    t.equal(answer.status, 405, `${method} ${route}`)
    t.equal(answer.headers.allow, allow)
    t.equal((answer.json() as ErrorBody).errorCode, 'Proxy.MethodNotAllowed')
  }
  t.equal(
    (await stack.adminCall('GET', '/admin/no-such-route', { headers: AUTH })).status,
    404,
    'an unknown route stays 404'
  )
  t.equal(
    (await stack.adminCall('HEAD', '/admin/session', { headers: AUTH })).status,
    200,
    'HEAD of a GET route still answers'
  )
  t.equal(stack.sim.stats.logins, 1, 'no login')
  t.equal(stack.sim.stats.logouts, 0, 'no logout')
  t.equal(stack.sim.stats.passwordResets, 0, 'no reset')
  const audit = stack.logs.entries().filter((entry) => entry.audit === true && entry.status === 405)
  t.equal(audit.length, cases.length, 'each 405 audited')
  t.match(audit[0], { outcome: 'method-not-allowed' })
})

t.test('malformed JSON → 400; unknown admin route → 404; an audit line per action without secrets', async (t) => {
  const stack = await startStack(t)
  const malformed = await stack.adminCall('POST', '/admin/session/start', {
    headers: { ...AUTH, 'content-type': 'application/json' },
    body: '{nope'
  })
  t.equal(malformed.status, 400)
  t.equal((malformed.json() as ErrorBody).errorCode, 'Proxy.BadRequest')
  t.equal((await stack.adminCall('GET', '/admin/nothing-here', { headers: AUTH })).status, 404)
  await stack.adminCall('GET', '/admin/session', { headers: AUTH })
  await stack.adminCall('GET', '/admin/session')
  const audit = stack.logs.entries().filter((entry) => entry.audit === true)
  t.equal(audit.length, 4, 'one line per admin action')
  t.match(audit.at(-2), { route: '/admin/session', method: 'GET', caller: '127.0.0.1', status: 200, outcome: 'ok' })
  t.match(audit.at(-1), { route: '/admin/session', status: 401, outcome: 'unauthorized' })
  t.notOk(stack.logs.text.includes(ADMIN_TOKEN), 'the admin token is never logged')
})
