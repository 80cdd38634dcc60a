// Tests of the ThingSpace simulator over real sockets on 127.0.0.1, with a fake clock for token lifetimes.
import { createHash, randomBytes } from 'node:crypto'
import t, { type Test } from 'tap'
import { buildSimulator, DEMO_CREDENTIALS, type Simulator, type SimulatorOptions } from '../../src/simulator/app.js'
import { SessionStore } from '../../src/simulator/sessions.js'
import { fingerprint } from '../../src/session/session-manager.js'

const START_MS = Date.UTC(2025, 0, 1, 12, 0, 0)
const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const EMPTY_SHA256 = createHash('sha256').update(Buffer.alloc(0)).digest('hex')

interface UwsErrorBody { errorCode: string; errorMessage: string }
interface FaultBody { fault: { code: string; message: string; description: string } }
interface TokenBody { access_token: string; token_type: string; expires_in: number; scope: string }
interface OAuthErrorBody { error: string; error_description?: string }
interface DeviceBody {
  accountName: string
  deviceIds: { id: string; kind: string }[]
  state: string
  ipAddress: string
  connected: boolean
  lastActivationDate: string
}
interface DevicePageBody { hasMoreData: boolean; devices: DeviceBody[] }
interface UsageBody { hasMoreData: boolean; usageHistory: { bytesUsed: number; smsUsed: number; timestamp: string }[] }
interface EchoBody {
  method: string
  url: string
  headers: Record<string, string>
  bodyLength: number
  bodySha256: string
}

interface Harness {
  sim: Simulator
  base: string
  clock: { nowMs: number }
  advanceMs(ms: number): void
}

async function startSimulator (t: Test, overrides: Partial<SimulatorOptions> = {}): Promise<Harness> {
  const clock = { nowMs: START_MS }
  const sim = buildSimulator({ ...DEMO_CREDENTIALS, now: () => clock.nowMs, ...overrides })
  const base = await sim.app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => sim.app.close())
  return { sim, base, clock, advanceMs: (ms) => { clock.nowMs += ms } }
}

function basicAuth (id: string, secret: string): string {
  return `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`
}

const DEMO_BASIC = basicAuth(DEMO_CREDENTIALS.clientId, DEMO_CREDENTIALS.clientSecret)

async function requestToken (base: string, authorization: string | undefined, form = 'grant_type=client_credentials'): Promise<Response> {
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' }
  if (authorization !== undefined) headers.authorization = authorization
  return fetch(`${base}/api/ts/v1/oauth2/token`, { method: 'POST', headers, body: form })
}

async function accessToken (base: string): Promise<string> {
  const res = await requestToken(base, DEMO_BASIC)
  if (res.status !== 200) throw new Error(`token request answered ${res.status}`)
  return (await res.json() as TokenBody).access_token
}

interface CallOptions {
  method?: string
  bearer?: string
  session?: string
  json?: unknown
  headers?: Record<string, string>
  body?: Uint8Array<ArrayBuffer> | string
  signal?: AbortSignal
}

async function call (base: string, path: string, options: CallOptions = {}): Promise<Response> {
  const headers: Record<string, string> = { ...options.headers }
  if (options.bearer !== undefined) headers.authorization = `Bearer ${options.bearer}`
  if (options.session !== undefined) headers['vz-m2m-token'] = options.session
  let body = options.body
  if (options.json !== undefined) {
    headers['content-type'] = 'application/json'
    body = JSON.stringify(options.json)
  }
  return fetch(`${base}${path}`, { method: options.method ?? (body === undefined ? 'GET' : 'POST'), headers, body, signal: options.signal })
}

async function login (base: string, bearer: string, username: string = DEMO_CREDENTIALS.username, password: string = DEMO_CREDENTIALS.password): Promise<Response> {
  return call(base, '/api/m2m/v1/session/login', { bearer, json: { username, password } })
}

async function sessionToken (base: string, bearer: string): Promise<string> {
  const res = await login(base, bearer)
  if (res.status !== 200) throw new Error(`login answered ${res.status}: ${await res.text()}`)
  return (await res.json() as { sessionToken: string }).sessionToken
}

async function expectUwsError (t: Test, res: Response, status: number, errorCode: string): Promise<void> {
  t.equal(res.status, status, `status ${status} for ${errorCode}`)
  const body = await res.json() as UwsErrorBody
  t.equal(body.errorCode, errorCode)
  t.type(body.errorMessage, 'string')
  t.ok(body.errorMessage.length > 0, 'errorMessage is not empty')
}

async function expectFault (t: Test, res: Response, code: string, message: string): Promise<void> {
  t.equal(res.status, 401)
  const body = await res.json() as FaultBody
  t.equal(body.fault.code, code)
  t.equal(body.fault.message, message)
  t.type(body.fault.description, 'string')
}

function sha256Hex (bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex')
}

t.test('OAuth token endpoint: client authentication and grant type', async (t) => {
  const { sim, base } = await startSimulator(t)

  for (const [label, authorization] of [
    ['missing Authorization', undefined],
    ['wrong secret', basicAuth(DEMO_CREDENTIALS.clientId, 'nope')],
    ['wrong client id', basicAuth('other', DEMO_CREDENTIALS.clientSecret)],
    ['Bearer instead of Basic', 'Bearer something'],
    ['not base64 of id:secret', 'Basic bm9jb2xvbg==']
  ] as const) {
    const res = await requestToken(base, authorization)
    t.equal(res.status, 401, label)
    const body = await res.json() as OAuthErrorBody
    t.equal(body.error, 'invalid_client', label)
    t.type(body.error_description, 'string')
  }

  const wrongGrant = await requestToken(base, DEMO_BASIC, 'grant_type=password')
  t.equal(wrongGrant.status, 400)
  t.equal((await wrongGrant.json() as OAuthErrorBody).error, 'unsupported_grant_type')
  const noGrant = await requestToken(base, DEMO_BASIC, '')
  t.equal(noGrant.status, 400)
  t.equal((await noGrant.json() as OAuthErrorBody).error, 'unsupported_grant_type')
  t.equal(sim.stats.oauthTokensIssued, 0, 'no token minted for rejected requests')
  t.equal(sim.currentOAuthToken(), undefined)

  const ok = await requestToken(base, DEMO_BASIC)
  t.equal(ok.status, 200)
  const body = await ok.json() as TokenBody
  t.match(body.access_token, /\S{16,}/)
  t.equal(body.token_type, 'bearer')
  t.equal(body.expires_in, 3600)
  t.type(body.scope, 'string')
  t.equal(sim.currentOAuthToken(), body.access_token)
  t.equal(sim.stats.tokenRequests, 8, 'every call to the token endpoint is counted')
  t.equal(sim.stats.oauthTokensIssued, 1)
})

t.test('OAuth token: same token within the lifetime, new one after expiry or expireOAuthToken()', async (t) => {
  const { sim, base, advanceMs } = await startSimulator(t)
  const first = await requestToken(base, DEMO_BASIC)
  const firstBody = await first.json() as TokenBody

  advanceMs(1000_500)
  const again = await requestToken(base, DEMO_BASIC).then(async (res) => await res.json() as TokenBody)
  t.equal(again.access_token, firstBody.access_token, 'same token within the hour')
  t.equal(again.expires_in, 2599, 'remaining whole seconds')

  advanceMs(2599_000) // 3599.5 s after first issue
  const nearEnd = await requestToken(base, DEMO_BASIC).then(async (res) => await res.json() as TokenBody)
  t.equal(nearEnd.access_token, firstBody.access_token)
  t.equal(nearEnd.expires_in, 1, 'never below 1 second')
  const stillAccepted = await call(base, '/api/m2m/v1/no-such-thing', { bearer: firstBody.access_token })
  t.equal(stillAccepted.status, 404, 'gateway accepts the token until its expiry')

  advanceMs(500) // exactly 3600 s: expired
  const expired = await call(base, '/api/m2m/v1/no-such-thing', { bearer: firstBody.access_token })
  await expectFault(t, expired, '900901', 'Invalid Credentials')
  t.equal(sim.currentOAuthToken(), undefined, 'no current token once expired')

  const second = await requestToken(base, DEMO_BASIC).then(async (res) => await res.json() as TokenBody)
  t.not(second.access_token, firstBody.access_token, 'a new token after expiry')
  t.equal(second.expires_in, 3600)
  t.equal(sim.currentOAuthToken(), second.access_token)

  sim.expireOAuthToken()
  t.equal(sim.currentOAuthToken(), undefined)
  const revoked = await call(base, '/api/m2m/v1/no-such-thing', { bearer: second.access_token })
  await expectFault(t, revoked, '900901', 'Invalid Credentials')
  const third = await accessToken(base)
  t.not(third, second.access_token, 'expireOAuthToken() makes the next request mint a new token')
  t.equal((await call(base, '/api/m2m/v1/no-such-thing', { bearer: third })).status, 404)

  t.equal(sim.stats.tokenRequests, 5)
  t.equal(sim.stats.oauthTokensIssued, 3)
})

t.test('gateway: the bearer is checked before routing, sessions and bodies', async (t) => {
  const { sim, base } = await startSimulator(t)
  const bearer = await accessToken(base)

  await expectFault(t, await call(base, '/api/m2m/v1/session/login', { json: { username: 'a', password: 'b' } }), '900902', 'Missing Credentials')
  await expectFault(t, await call(base, '/api/m2m/v1/session/login', {
    headers: { authorization: DEMO_BASIC },
    json: { username: 'a', password: 'b' }
  }), '900902', 'Missing Credentials')
  await expectFault(t, await login(base, 'wrong-token'), '900901', 'Invalid Credentials')
  t.equal(sim.stats.failedLogins, 0, 'logins stopped at the gateway are not failed logins')

  await expectFault(t, await call(base, '/api/m2m/v1/accounts/TestAccount-1'), '900902', 'Missing Credentials')
  await expectFault(t, await call(base, '/api/m2m/v1/accounts/TestAccount-1', { bearer: 'wrong' }), '900901', 'Invalid Credentials')
  await expectFault(t, await call(base, '/api/m2m/v1/unknown/path'), '900902', 'Missing Credentials')
  await expectFault(t, await call(base, '/api/m2m/v1/session/login', {
    bearer: 'wrong',
    headers: { 'content-type': 'application/json' },
    body: '{not json'
  }), '900901', 'Invalid Credentials')
  await expectFault(t, await call(base, '/api/%6d2m/v1/session/login', {
    json: { username: DEMO_CREDENTIALS.username, password: DEMO_CREDENTIALS.password }
  }), '900902', 'Missing Credentials')
  t.equal(sim.stats.logins, 0, 'a percent-encoded path does not slip past the gateway')
  await expectUwsError(t, await call(base, '/api/m2m/v1/unknown/path', { bearer }), 404, 'UnifiedWebService.REQUEST_FAILED.NotFound')
  t.equal(sim.stats.dataRequests, 0)
})

t.test('login: success, wrong credentials, lockout after 5 consecutive failures, unlock', async (t) => {
  const { sim, base } = await startSimulator(t)
  const bearer = await accessToken(base)

  const ok = await login(base, bearer)
  t.equal(ok.status, 200)
  const okBody = await ok.json() as Record<string, unknown>
  t.same(Object.keys(okBody), ['sessionToken'], 'the answer holds the session token and nothing else')
  t.match(okBody.sessionToken, UUID_PATTERN)
  t.equal(sim.stats.logins, 1)

  for (let i = 1; i <= 4; i++) {
    await expectUwsError(t, await login(base, bearer, DEMO_CREDENTIALS.username, 'wrong'), 400, 'UnifiedWebService.REQUEST_FAILED.InvalidCredentials')
    t.equal(sim.stats.consecutiveFailedLogins, i)
  }
  t.equal(sim.locked, false, 'not locked below the threshold')
  t.equal((await login(base, bearer)).status, 200, 'right password still works after 4 failures')
  t.equal(sim.stats.consecutiveFailedLogins, 0, 'a success resets the consecutive count')
  t.equal(sim.stats.failedLogins, 4)

  await expectUwsError(t, await login(base, bearer, 'someone-else', DEMO_CREDENTIALS.password), 400, 'UnifiedWebService.REQUEST_FAILED.InvalidCredentials')
  for (let i = 2; i <= 5; i++) {
    t.equal(sim.locked, false)
    await expectUwsError(t, await login(base, bearer, DEMO_CREDENTIALS.username, `wrong-${i}`), 400, 'UnifiedWebService.REQUEST_FAILED.InvalidCredentials')
  }
  t.equal(sim.locked, true, 'locked after the 5th consecutive failure')
  t.equal(sim.stats.consecutiveFailedLogins, 5)

  await expectUwsError(t, await login(base, bearer), 400, 'UnifiedWebService.REQUEST_FAILED.AccountLocked')
  t.equal(sim.stats.failedLogins, 10, 'a login refused by the lockout counts as failed')
  t.equal(sim.stats.consecutiveFailedLogins, 6)
  t.equal(sim.stats.logins, 2)

  sim.unlock()
  t.equal(sim.locked, false)
  t.equal(sim.stats.consecutiveFailedLogins, 0)
  t.equal((await login(base, bearer)).status, 200, 'unlock() lets the right password in again')
  t.equal(sim.stats.logins, 3)
})

t.test('login: lockoutThreshold option and malformed bodies', async (t) => {
  const { sim, base } = await startSimulator(t, { lockoutThreshold: 2 })
  const bearer = await accessToken(base)

  await expectUwsError(t, await call(base, '/api/m2m/v1/session/login', { bearer, json: { username: DEMO_CREDENTIALS.username } }), 400, 'UnifiedWebService.INPUT_INVALID.BadRequest')
  await expectUwsError(t, await call(base, '/api/m2m/v1/session/login', {
    bearer,
    headers: { 'content-type': 'application/json' },
    body: '{"username": '
  }), 400, 'UnifiedWebService.INPUT_INVALID.BadRequest')
  t.equal(sim.stats.failedLogins, 0, 'malformed requests are not credential checks')

  await login(base, bearer, 'x', 'y')
  t.equal(sim.locked, false)
  await login(base, bearer, 'x', 'y')
  t.equal(sim.locked, true, 'locked after 2 failures with lockoutThreshold 2')
  await expectUwsError(t, await login(base, bearer), 400, 'UnifiedWebService.REQUEST_FAILED.AccountLocked')
})

t.test('failNextLogins: status500, reset and hang, in order, before credential checks', async (t) => {
  const { sim, base } = await startSimulator(t)
  const bearer = await accessToken(base)

  sim.failNextLogins(2, 'status500')
  await expectFault(t, await login(base, 'wrong'), '900901', 'Invalid Credentials')
  await expectUwsError(t, await login(base, bearer), 500, 'UnifiedWebService.INTERNAL_ERROR')
  await expectUwsError(t, await login(base, bearer, 'x', 'wrong'), 500, 'UnifiedWebService.INTERNAL_ERROR')
  t.equal(sim.stats.failedLogins, 0, 'injected failures are not failed logins')
  t.equal(sim.stats.consecutiveFailedLogins, 0)
  t.equal((await login(base, bearer)).status, 200, 'the gateway rejection did not consume a fault')

  sim.failNextLogins(1, 'reset')
  await t.rejects(login(base, bearer), 'reset destroys the connection without an answer')
  t.equal((await login(base, bearer)).status, 200)

  sim.failNextLogins(1, 'hang')
  sim.failNextLogins(1, 'status500')
  const started = Date.now()
  await t.rejects(call(base, '/api/m2m/v1/session/login', {
    bearer,
    json: { username: DEMO_CREDENTIALS.username, password: DEMO_CREDENTIALS.password },
    signal: AbortSignal.timeout(300)
  }), { name: 'TimeoutError' }, 'hang never answers')
  t.ok(Date.now() - started >= 250, 'the client gave up, not the server')
  await expectUwsError(t, await login(base, bearer), 500, 'UnifiedWebService.INTERNAL_ERROR')
  t.equal((await login(base, bearer)).status, 200, 'faults are used up in the order queued')
  t.equal(sim.stats.logins, 3)

  sim.failNextLogins(0, 'status500')
  t.equal((await login(base, bearer)).status, 200, 'count 0 injects nothing')
  t.throws(() => sim.failNextLogins(-1, 'hang'), RangeError)
  t.throws(() => sim.failNextLogins(1.5, 'hang'), RangeError)
})

t.test('close() ends hung logins and pending delays promptly', async (t) => {
  const clock = { nowMs: START_MS }
  const sim = buildSimulator({ ...DEMO_CREDENTIALS, now: () => clock.nowMs })
  const base = await sim.app.listen({ host: '127.0.0.1', port: 0 })
  let closed = false
  t.teardown(async () => { if (!closed) await sim.app.close() })
  const bearer = await accessToken(base)
  const session = await sessionToken(base, bearer)

  sim.failNextLogins(1, 'hang')
  const hung = login(base, bearer).then(() => 'answered', () => 'failed')
  const delayed = call(base, '/api/m2m/v1/simulator/delay/60000', { bearer, session }).then(() => 'answered', () => 'failed')
  await new Promise((resolve) => setTimeout(resolve, 300))

  const started = Date.now()
  await sim.app.close()
  closed = true
  t.ok(Date.now() - started < 5000, `close took ${Date.now() - started} ms`)
  t.equal(await hung, 'failed', 'the hung login ends without an answer')
  t.equal(await delayed, 'failed', 'the pending delay ends without an answer')
})

t.test('session tokens: sliding idle expiry, Invalid and Expired, several at once', async (t) => {
  const { sim, base, advanceMs } = await startSimulator(t, { sessionIdleSeconds: 60 })
  const bearer = await accessToken(base)
  const first = await sessionToken(base, bearer)
  const account = async (session?: string): Promise<Response> => call(base, '/api/m2m/v1/accounts/TestAccount-1', { bearer, session })

  advanceMs(59_000)
  t.equal((await account(first)).status, 200)
  advanceMs(59_000)
  t.equal((await account(first)).status, 200, 'each use restarts the idle clock (118 s since login)')
  advanceMs(60_000)
  t.equal((await account(first)).status, 200, 'exactly the idle limit is still valid')
  t.same(sim.activeSessionTokens(), [first])

  advanceMs(60_001)
  t.same(sim.activeSessionTokens(), [], 'idle too long: no longer active')
  await expectUwsError(t, await account(first), 400, 'UnifiedWebService.REQUEST_FAILED.SessionToken.Expired')
  await expectUwsError(t, await account(first), 400, 'UnifiedWebService.REQUEST_FAILED.SessionToken.Expired')

  await expectUwsError(t, await account(), 400, 'UnifiedWebService.INPUT_INVALID.SessionToken.Invalid')
  await expectUwsError(t, await account('00000000-0000-4000-8000-000000000000'), 400, 'UnifiedWebService.INPUT_INVALID.SessionToken.Invalid')
  await expectUwsError(t, await account(''), 400, 'UnifiedWebService.INPUT_INVALID.SessionToken.Invalid')

  const second = await sessionToken(base, bearer)
  const third = await sessionToken(base, bearer)
  t.not(second, third, 'each login mints a new token')
  t.same(sim.activeSessionTokens().sort(), [second, third].sort())
  t.equal((await account(second)).status, 200)
  t.equal((await account(third)).status, 200)

  sim.expireSessions()
  t.same(sim.activeSessionTokens(), [])
  await expectUwsError(t, await account(second), 400, 'UnifiedWebService.REQUEST_FAILED.SessionToken.Expired')
  await expectUwsError(t, await account(third), 400, 'UnifiedWebService.REQUEST_FAILED.SessionToken.Expired')
  const fourth = await sessionToken(base, bearer)
  t.equal((await account(fourth)).status, 200, 'a new login works after expireSessions()')
  t.equal(sim.stats.dataRequests, 6, 'requests refused for their session token never reach the handler')
})

t.test('logout ends exactly the session it names', async (t) => {
  const { sim, base } = await startSimulator(t)
  const bearer = await accessToken(base)
  const ended = await sessionToken(base, bearer)
  const kept = await sessionToken(base, bearer)

  await expectUwsError(t, await call(base, '/api/m2m/v1/session/logout', { method: 'POST', bearer }), 400, 'UnifiedWebService.INPUT_INVALID.SessionToken.Invalid')
  await expectFault(t, await call(base, '/api/m2m/v1/session/logout', { method: 'POST', session: ended }), '900902', 'Missing Credentials')

  const res = await call(base, '/api/m2m/v1/session/logout', { method: 'POST', bearer, session: ended })
  t.equal(res.status, 200)
  t.same(await res.json(), { sessionToken: ended })
  t.equal(sim.stats.logouts, 1)
  t.same(sim.activeSessionTokens(), [kept])

  await expectUwsError(t, await call(base, '/api/m2m/v1/accounts/A', { bearer, session: ended }), 400, 'UnifiedWebService.INPUT_INVALID.SessionToken.Invalid')
  await expectUwsError(t, await call(base, '/api/m2m/v1/session/logout', { method: 'POST', bearer, session: ended }), 400, 'UnifiedWebService.INPUT_INVALID.SessionToken.Invalid')
  t.equal((await call(base, '/api/m2m/v1/accounts/A', { bearer, session: kept })).status, 200, 'the other session lives on')
  t.equal(sim.stats.logouts, 1)
})

t.test('password reset: both tokens, wrong old password, new password effective immediately', async (t) => {
  const { sim, base } = await startSimulator(t)
  const bearer = await accessToken(base)
  const session = await sessionToken(base, bearer)
  const reset = async (body: unknown, withSession: string | null = session): Promise<Response> =>
    call(base, '/api/m2m/v1/session/password/actions/reset', { method: 'PUT', bearer, session: withSession ?? undefined, json: body })

  await expectUwsError(t, await reset({ oldPassword: DEMO_CREDENTIALS.password }, null), 400, 'UnifiedWebService.INPUT_INVALID.SessionToken.Invalid')
  await expectUwsError(t, await reset({ oldPassword: 'not-it' }), 400, 'UnifiedWebService.REQUEST_FAILED.InvalidPassword')
  await expectUwsError(t, await reset({}), 400, 'UnifiedWebService.INPUT_INVALID.BadRequest')
  await expectUwsError(t, await call(base, '/api/m2m/v1/session/password/actions/reset', {
    method: 'POST', bearer, session, json: { oldPassword: DEMO_CREDENTIALS.password }
  }), 404, 'UnifiedWebService.REQUEST_FAILED.NotFound')
  t.equal(sim.password, DEMO_CREDENTIALS.password, 'unchanged so far')
  t.equal(sim.stats.passwordResets, 0)

  const res = await reset({ oldPassword: DEMO_CREDENTIALS.password })
  t.equal(res.status, 200)
  const body = await res.json() as Record<string, unknown>
  t.same(Object.keys(body), ['newPassword'])
  const newPassword = body.newPassword as string
  t.match(newPassword, /^[A-Za-z0-9]{12,}$/)
  t.match(newPassword, /[A-Za-z]/)
  t.match(newPassword, /[0-9]/)
  t.not(newPassword, DEMO_CREDENTIALS.password)
  t.equal(sim.password, newPassword)
  t.equal(sim.stats.passwordResets, 1)

  await expectUwsError(t, await login(base, bearer), 400, 'UnifiedWebService.REQUEST_FAILED.InvalidCredentials')
  t.equal((await login(base, bearer, DEMO_CREDENTIALS.username, newPassword)).status, 200)
  await expectUwsError(t, await reset({ oldPassword: DEMO_CREDENTIALS.password }), 400, 'UnifiedWebService.REQUEST_FAILED.InvalidPassword')

  const passwords = new Set<string>()
  let current = newPassword
  for (let i = 0; i < 5; i++) {
    current = (await reset({ oldPassword: current }).then(async (r) => await r.json() as { newPassword: string })).newPassword
    passwords.add(current)
  }
  t.equal(passwords.size, 5, 'every reset generates a different password')
})

t.test('data endpoints: account, paged device list, usage; deterministic', async (t) => {
  const { sim, base } = await startSimulator(t)
  const other = await startSimulator(t)
  const bearer = await accessToken(base)
  const session = await sessionToken(base, bearer)
  const otherBearer = await accessToken(other.base)
  const otherSession = await sessionToken(other.base, otherBearer)

  const account = await call(base, '/api/m2m/v1/accounts/TestAccount-1', { bearer, session })
  t.equal(account.status, 200)
  const accountBody = await account.json() as Record<string, unknown>
  t.match(accountBody, { accountName: 'TestAccount-1', accountNumber: String, organizationName: String, isProvisioningAllowed: true })
  const otherAccount = await call(other.base, '/api/m2m/v1/accounts/TestAccount-1', { bearer: otherBearer, session: otherSession })
  t.same(await otherAccount.json(), accountBody, 'the same account from another simulator instance')
  const differentAccount = await call(base, '/api/m2m/v1/accounts/Other', { bearer, session }).then(async (r) => await r.json() as Record<string, unknown>)
  t.equal(differentAccount.accountName, 'Other')
  t.not(differentAccount.accountNumber, accountBody.accountNumber)

  const list = async (json: unknown): Promise<Response> => call(base, '/api/m2m/v1/devices/actions/list', { bearer, session, json })
  const pages: DevicePageBody[] = []
  let largestDeviceIdSeen: string | undefined
  for (;;) {
    const res = await list({ accountName: 'TestAccount-1', largestDeviceIdSeen })
    t.equal(res.status, 200)
    const page = await res.json() as DevicePageBody
    pages.push(page)
    if (!page.hasMoreData) break
    largestDeviceIdSeen = page.devices.at(-1)?.deviceIds.find((id) => id.kind === 'imei')?.id
    if (pages.length > 5) break
  }
  t.same(pages.map((page) => page.devices.length), [10, 10, 5], 'default page size 10, 25 devices')
  t.same(pages.map((page) => page.hasMoreData), [true, true, false])
  const paged = pages.flatMap((page) => page.devices)
  const imeis = paged.map((device) => device.deviceIds.find((id) => id.kind === 'imei')?.id)
  t.equal(new Set(imeis).size, 25, 'distinct devices')
  for (const device of paged) {
    t.equal(device.accountName, 'TestAccount-1')
    t.same(device.deviceIds.map((id) => id.kind), ['imei', 'iccid'])
    t.match(device.deviceIds[0]?.id, /^\d{15}$/)
    t.match(device.deviceIds[1]?.id, /^\d{19,20}$/)
    t.type(device.state, 'string')
    t.match(device.ipAddress, /^\d+\.\d+\.\d+\.\d+$/)
    t.type(device.connected, 'boolean')
    t.ok(!Number.isNaN(Date.parse(device.lastActivationDate)), 'lastActivationDate is a date')
  }

  const all = await list({ accountName: 'TestAccount-1', maxNumberOfDevices: 25 }).then(async (r) => await r.json() as DevicePageBody)
  t.equal(all.hasMoreData, false)
  t.same(all.devices, paged, 'one big page equals the paged walk')
  const numeric = await list({ accountName: 'TestAccount-1', maxNumberOfDevices: 3, largestDeviceIdSeen: Number(imeis[21]) }).then(async (r) => await r.json() as DevicePageBody)
  t.same(numeric.devices, paged.slice(22), 'largestDeviceIdSeen may be a number')
  t.equal(numeric.hasMoreData, false)

  await expectUwsError(t, await list({}), 400, 'UnifiedWebService.INPUT_INVALID.BadRequest')
  await expectUwsError(t, await list({ accountName: 'A', maxNumberOfDevices: 0 }), 400, 'UnifiedWebService.INPUT_INVALID.BadRequest')
  await expectUwsError(t, await list({ accountName: 'A', largestDeviceIdSeen: 'abc' }), 400, 'UnifiedWebService.INPUT_INVALID.BadRequest')

  const usage = async (json: unknown): Promise<Response> => call(base, '/api/m2m/v1/devices/usage/actions/list', { bearer, session, json })
  const usageRequest = { deviceId: { id: imeis[0], kind: 'imei' }, earliest: '2025-03-01T00:00:00Z', latest: '2025-03-03T12:00:00Z' }
  const usageRes = await usage(usageRequest)
  t.equal(usageRes.status, 200)
  const usageBody = await usageRes.json() as UsageBody
  t.equal(usageBody.hasMoreData, false)
  t.equal(usageBody.usageHistory.length, 3, 'one record per day in range')
  for (const record of usageBody.usageHistory) {
    t.ok(Number.isInteger(record.bytesUsed) && record.bytesUsed >= 0)
    t.ok(Number.isInteger(record.smsUsed) && record.smsUsed >= 0)
    const ms = Date.parse(record.timestamp)
    t.ok(ms >= Date.parse(usageRequest.earliest) && ms <= Date.parse(usageRequest.latest), 'timestamp within range')
  }
  t.same(await usage(usageRequest).then(async (r) => await r.json()), usageBody, 'deterministic')
  await expectUwsError(t, await usage({ deviceId: { id: '1' }, earliest: 'x', latest: 'y' }), 400, 'UnifiedWebService.INPUT_INVALID.BadRequest')
  await expectUwsError(t, await usage({ ...usageRequest, latest: 'not a date' }), 400, 'UnifiedWebService.INPUT_INVALID.BadRequest')

  t.equal(sim.stats.dataRequests, 14, 'every data request that reached a handler, including the rejected bodies')
  await expectUwsError(t, await call(base, '/api/m2m/v1/devices/actions/list', {
    bearer, session, headers: { 'content-type': 'application/json' }, body: '{"accountName":'
  }), 400, 'UnifiedWebService.INPUT_INVALID.BadRequest')
  t.equal(sim.stats.dataRequests, 14, 'malformed JSON never reaches the handler')
})

t.test('echo: method, url, headers and a digest of the raw body, any content type', async (t) => {
  const { sim, base } = await startSimulator(t)
  const bearer = await accessToken(base)
  const session = await sessionToken(base, bearer)
  const echo = async (options: CallOptions, query = ''): Promise<Response> =>
    call(base, `/api/m2m/v1/simulator/echo${query}`, { bearer, session, ...options })

  const payload = new Uint8Array(randomBytes(100_000))
  const res = await echo({ method: 'POST', body: payload, headers: { 'content-type': 'application/octet-stream', 'x-trace': 'abc' } }, '?a=1&b=%20two')
  t.equal(res.status, 200)
  const body = await res.json() as EchoBody
  t.equal(body.method, 'POST')
  t.equal(body.url, '/api/m2m/v1/simulator/echo?a=1&b=%20two')
  t.equal(body.headers['x-trace'], 'abc')
  t.equal(body.headers['vz-m2m-token'], fingerprint(session), 'the session token as its fingerprint')
  t.equal(body.headers.authorization, `Bearer ${fingerprint(bearer)}`, 'the bearer as its fingerprint, the scheme kept')
  t.equal(body.headers['content-type'], 'application/octet-stream')
  t.equal(body.bodyLength, payload.length)
  t.equal(body.bodySha256, sha256Hex(payload))

  const empty = await echo({ method: 'GET' }).then(async (r) => await r.json() as EchoBody)
  t.equal(empty.method, 'GET')
  t.equal(empty.bodyLength, 0)
  t.equal(empty.bodySha256, EMPTY_SHA256)

  const notJson = '{this is not json'
  const raw = await echo({ method: 'PUT', body: notJson, headers: { 'content-type': 'application/json' } })
  t.equal(raw.status, 200, 'JSON is not parsed here: bytes are echoed as received')
  const rawBody = await raw.json() as EchoBody
  t.equal(rawBody.method, 'PUT')
  t.equal(rawBody.bodySha256, sha256Hex(Buffer.from(notJson)))

  const untyped = await echo({ method: 'PATCH', body: new Uint8Array([1, 2, 3]) }).then(async (r) => await r.json() as EchoBody)
  t.equal(untyped.method, 'PATCH')
  t.equal(untyped.headers['content-type'], undefined, 'no content type sent')
  t.equal(untyped.bodyLength, 3)

  const deleted = await echo({ method: 'DELETE' }).then(async (r) => await r.json() as EchoBody)
  t.equal(deleted.method, 'DELETE')

  const limitBytes = 25 * 1024 * 1024
  const atLimit = await echo({ method: 'POST', body: new Uint8Array(limitBytes).fill(7), headers: { 'content-type': 'application/octet-stream' } })
  t.equal(atLimit.status, 200, '25 MB is accepted')
  t.equal((await atLimit.json() as EchoBody).bodyLength, limitBytes)
  const tooLarge = await echo({ method: 'POST', body: new Uint8Array(limitBytes + 1), headers: { 'content-type': 'application/octet-stream' } })
  await expectUwsError(t, tooLarge, 413, 'UnifiedWebService.INPUT_INVALID.RequestTooLarge')

  await expectUwsError(t, await call(base, '/api/m2m/v1/simulator/echo', { bearer }), 400, 'UnifiedWebService.INPUT_INVALID.SessionToken.Invalid')
  t.equal(sim.stats.dataRequests, 6)
})

t.test('echo: the answer holds no live token, only fingerprints', async (t) => {
  const { base } = await startSimulator(t)
  const bearer = await accessToken(base)
  const session = await sessionToken(base, bearer)
  const res = await call(base, '/api/m2m/v1/simulator/echo', { bearer, session })
  t.equal(res.status, 200)
  const text = await res.text()
  t.notOk(text.includes(bearer), 'no bearer')
  t.notOk(text.includes(session), 'no session token')
  const echoed = (JSON.parse(text) as EchoBody).headers
  t.match(echoed['vz-m2m-token'], /^[0-9a-f]{8}$/)
  t.match(echoed.authorization, /^Bearer [0-9a-f]{8}$/)
  const other = await call(base, '/api/m2m/v1/simulator/echo', { bearer, session, headers: { authorization: `bearer  ${bearer}` } })
  t.notOk((await other.text()).includes(bearer), 'nor in another spelling of the header')
})

t.test('lenientPaths: any case, trailing and repeated slashes, ;params, as a servlet container matches them', async (t) => {
  const strict = await startSimulator(t)
  const lenient = await startSimulator(t, { lenientPaths: true })
  for (const { sim, base } of [strict, lenient]) {
    const bearer = await accessToken(base)
    for (const path of ['/api/m2m/v1/session/logout/', '/api/m2m/v1//session/logout', '/api/m2m/v1/session/LOGOUT', '/api/m2m/v1/session/logout;x']) {
      const res = await call(base, path, { method: 'POST', bearer, session: await sessionToken(base, bearer) })
      t.equal(res.status, sim === lenient.sim ? 200 : 404, `${sim === lenient.sim ? 'lenient' : 'strict'}: POST ${path}`)
      await res.arrayBuffer()
    }
    t.equal(sim.stats.logouts, sim === lenient.sim ? 4 : 0)
  }
})

t.test('requestsReceived counts every request, unknown paths and refusals too', async (t) => {
  const { sim, base } = await startSimulator(t)
  await (await fetch(`${base}/nowhere`)).arrayBuffer()
  await (await call(base, '/api/m2m/v1/accounts/A')).arrayBuffer() // no bearer: refused by the gateway
  await accessToken(base)
  t.equal(sim.stats.requestsReceived, 3)
})

t.test('bytes: a streamed deterministic pattern with content-length', async (t) => {
  const { sim, base } = await startSimulator(t)
  const bearer = await accessToken(base)
  const session = await sessionToken(base, bearer)
  const bytes = async (count: string): Promise<Response> => call(base, `/api/m2m/v1/simulator/bytes/${count}`, { bearer, session })

  const count = 200_003 // several 64 KiB chunks and a partial one
  const res = await bytes(String(count))
  t.equal(res.status, 200)
  t.equal(res.headers.get('content-type'), 'application/octet-stream')
  t.equal(res.headers.get('content-length'), String(count))
  const received = new Uint8Array(await res.arrayBuffer())
  t.equal(received.length, count)
  let firstMismatch = -1
  for (let i = 0; i < received.length; i++) {
    if (received[i] !== i % 251) {
      firstMismatch = i
      break
    }
  }
  t.equal(firstMismatch, -1, 'byte i is i % 251')

  const none = await bytes('0')
  t.equal(none.status, 200)
  t.equal(none.headers.get('content-length'), '0')
  t.equal((await none.arrayBuffer()).byteLength, 0)

  const maxBytes = 100 * 1024 * 1024
  const max = await bytes(String(maxBytes))
  t.equal(max.status, 200, 'the 100 MB cap itself is allowed')
  t.equal(max.headers.get('content-length'), String(maxBytes))
  let streamedBytes = 0
  let lastByte = -1
  const reader = (max.body as ReadableStream<Uint8Array>).getReader()
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    streamedBytes += value.length
    lastByte = value[value.length - 1] ?? lastByte
  }
  t.equal(streamedBytes, maxBytes)
  t.equal(lastByte, (maxBytes - 1) % 251)

  await expectUwsError(t, await bytes(String(maxBytes + 1)), 400, 'UnifiedWebService.INPUT_INVALID.BadRequest')
  await expectUwsError(t, await bytes('12abc'), 400, 'UnifiedWebService.INPUT_INVALID.BadRequest')
  await expectUwsError(t, await bytes('-1'), 400, 'UnifiedWebService.INPUT_INVALID.BadRequest')
  t.equal(sim.stats.dataRequests, 6)
})

t.test('delay and reset routes', async (t) => {
  const { sim, base } = await startSimulator(t)
  const bearer = await accessToken(base)
  const session = await sessionToken(base, bearer)

  const started = Date.now()
  const res = await call(base, '/api/m2m/v1/simulator/delay/150', { bearer, session })
  const elapsedMs = Date.now() - started
  t.equal(res.status, 200)
  t.same(await res.json(), { delayedMs: 150 })
  t.ok(elapsedMs >= 140, `answered after ${elapsedMs} ms`)
  t.same(await call(base, '/api/m2m/v1/simulator/delay/0', { bearer, session }).then(async (r) => await r.json()), { delayedMs: 0 })
  await expectUwsError(t, await call(base, '/api/m2m/v1/simulator/delay/120001', { bearer, session }), 400, 'UnifiedWebService.INPUT_INVALID.BadRequest')
  await expectUwsError(t, await call(base, '/api/m2m/v1/simulator/delay/soon', { bearer, session }), 400, 'UnifiedWebService.INPUT_INVALID.BadRequest')
  await expectUwsError(t, await call(base, '/api/m2m/v1/simulator/delay/10', { bearer, session: 'nope' }), 400, 'UnifiedWebService.INPUT_INVALID.SessionToken.Invalid')
  t.equal(sim.stats.dataRequests, 4)

  await t.rejects(call(base, '/api/m2m/v1/simulator/reset', { bearer, session }), 'the connection is destroyed without an answer')
  t.ok(sim.stats.dataRequests >= 5, 'the reset request reached its handler')
  await expectFault(t, await call(base, '/api/m2m/v1/simulator/reset', { session }), '900902', 'Missing Credentials')
  t.equal((await call(base, '/api/m2m/v1/accounts/A', { bearer, session })).status, 200, 'the server keeps serving after a reset')
})

t.test('unknown routes answer 404 with an errorCode', async (t) => {
  const { base } = await startSimulator(t)
  await expectUwsError(t, await fetch(`${base}/`), 404, 'UnifiedWebService.REQUEST_FAILED.NotFound')
  await expectUwsError(t, await fetch(`${base}/api/ts/v1/oauth2/token`), 404, 'UnifiedWebService.REQUEST_FAILED.NotFound')
  await expectUwsError(t, await fetch(`${base}/api/other`, { method: 'POST', body: 'x' }), 404, 'UnifiedWebService.REQUEST_FAILED.NotFound')
})

t.test('options are validated', async (t) => {
  t.throws(() => buildSimulator({ ...DEMO_CREDENTIALS, sessionIdleSeconds: 0 }), RangeError)
  t.throws(() => buildSimulator({ ...DEMO_CREDENTIALS, oauthLifetimeSeconds: -1 }), RangeError)
  t.throws(() => buildSimulator({ ...DEMO_CREDENTIALS, lockoutThreshold: Number.NaN }), RangeError)
})

t.test('SessionStore forgets expired tokens only when it holds many', async (t) => {
  let nowMs = START_MS
  const store = new SessionStore(60, () => nowMs)
  const old = store.create()
  nowMs += 61_000
  for (let i = 0; i < 9_998; i++) store.create()
  t.equal(store.use(old), 'expired', 'below the limit an expired token is still remembered')
  const fresh = store.create() // the 10,000th remembered token
  const after = store.create() // over the limit: expired tokens are forgotten first
  t.equal(store.use(old), 'invalid', 'the long-expired token is forgotten')
  t.equal(store.use(fresh), 'valid')
  t.equal(store.use(after), 'valid')
  t.equal(store.activeTokens().length, 10_000)
})
