// Tests of the ThingSpace simulator over real sockets on 127.0.0.1, with a fake clock for token lifetimes.
import { createHash, randomBytes, randomUUID } from 'node:crypto'
import t, { type Test } from 'tap'
import { request as undiciRequest } from 'undici'
import {
  buildSimulator,
  DEMO_ACCOUNT_NAME,
  DEMO_CREDENTIALS,
  type Simulator,
  type SimulatorOptions
} from '../../src/simulator/app.js'
import { SessionStore } from '../../src/simulator/sessions.js'
import { fingerprint } from '../../src/session/session-manager.js'
import { decodeBody } from '../helpers/stack.js'

const START_MS = Date.UTC(2025, 0, 1, 12, 0, 0)
const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const EMPTY_SHA256 = createHash('sha256').update(Buffer.alloc(0)).digest('hex')
/** As Verizon's examples write dates: "2020-05-09T20:00:00-04:00". */
const VERIZON_DATE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d-0[45]:00$/
const OTHER_ACCOUNT_NAME = '0000654321-00001'

interface UwsErrorBody {
  errorCode: string
  errorMessage: string
}
interface FaultBody {
  fault: { code: string; message: string; description: string }
}
interface TokenBody {
  access_token: string
  token_type: string
  expires_in: number
  scope: string
}
interface OAuthErrorBody {
  error: string
  error_description?: string
}
interface DeviceBody {
  accountName: string
  billingCycleEndDate: string
  carrierInformations: { carrierName: string; servicePlan: string; state: string }[]
  createdAt: string
  deviceIds: { id: string; kind: string }[]
  ipAddress: string
  connected: boolean
  lastActivationDate: string
  lastConnectionDate: string
}
interface DevicePageBody {
  hasMoreData: boolean
  devices: DeviceBody[]
}
interface UsageBody {
  hasMoreData: boolean
  usageHistory: {
    bytesUsed: number
    extendedAttributes: { key: string; value: string }[]
    smsUsed: number
    source: string
    timestamp: string
  }[]
}
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
  return {
    sim,
    base,
    clock,
    advanceMs: (ms) => {
      clock.nowMs += ms
    }
  }
}

function basicAuth (id: string, secret: string): string {
  return `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`
}

const DEMO_BASIC = basicAuth(DEMO_CREDENTIALS.clientId, DEMO_CREDENTIALS.clientSecret)

async function requestToken (
  base: string,
  authorization: string | undefined,
  form = 'grant_type=client_credentials'
): Promise<Response> {
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' }
  if (authorization !== undefined) headers.authorization = authorization
  return fetch(`${base}/api/ts/v1/oauth2/token`, { method: 'POST', headers, body: form })
}

async function accessToken (base: string): Promise<string> {
  const res = await requestToken(base, DEMO_BASIC)
  if (res.status !== 200) throw new Error(`token request answered ${res.status}`)
  return ((await res.json()) as TokenBody).access_token
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
  return fetch(`${base}${path}`, {
    method: options.method ?? (body === undefined ? 'GET' : 'POST'),
    headers,
    body,
    signal: options.signal
  })
}

async function login (
  base: string,
  bearer: string,
  username: string = DEMO_CREDENTIALS.username,
  password: string = DEMO_CREDENTIALS.password
): Promise<Response> {
  return call(base, '/api/m2m/v1/session/login', { bearer, json: { username, password } })
}

async function sessionToken (base: string, bearer: string): Promise<string> {
  const res = await login(base, bearer)
  if (res.status !== 200) throw new Error(`login answered ${res.status}: ${await res.text()}`)
  return ((await res.json()) as { sessionToken: string }).sessionToken
}

async function expectUwsError (t: Test, res: Response, status: number, errorCode: string): Promise<void> {
  t.equal(res.status, status, `status ${status} for ${errorCode}`)
  const body = (await res.json()) as UwsErrorBody
  t.equal(body.errorCode, errorCode)
  t.type(body.errorMessage, 'string')
  t.ok(body.errorMessage.length > 0, 'errorMessage is not empty')
}

async function expectFault (t: Test, res: Response, code: string, message: string): Promise<void> {
  t.equal(res.status, 401)
  const body = (await res.json()) as FaultBody
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
    const body = (await res.json()) as OAuthErrorBody
    t.equal(body.error, 'invalid_client', label)
    t.type(body.error_description, 'string')
  }

  const wrongGrant = await requestToken(base, DEMO_BASIC, 'grant_type=password')
  t.equal(wrongGrant.status, 400)
  t.equal(((await wrongGrant.json()) as OAuthErrorBody).error, 'unsupported_grant_type')
  const noGrant = await requestToken(base, DEMO_BASIC, '')
  t.equal(noGrant.status, 400)
  t.equal(((await noGrant.json()) as OAuthErrorBody).error, 'unsupported_grant_type')
  t.equal(sim.stats.oauthTokensIssued, 0, 'no token minted for rejected requests')
  t.equal(sim.currentOAuthToken(), undefined)

  const ok = await requestToken(base, DEMO_BASIC)
  t.equal(ok.status, 200)
  const body = (await ok.json()) as TokenBody
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
  const firstBody = (await first.json()) as TokenBody

  advanceMs(1000_500)
  const again = await requestToken(base, DEMO_BASIC).then(async (res) => (await res.json()) as TokenBody)
  t.equal(again.access_token, firstBody.access_token, 'same token within the hour')
  t.equal(again.expires_in, 2599, 'remaining whole seconds')

  advanceMs(2599_000) // 3599.5 s after first issue
  const nearEnd = await requestToken(base, DEMO_BASIC).then(async (res) => (await res.json()) as TokenBody)
  t.equal(nearEnd.access_token, firstBody.access_token)
  t.equal(nearEnd.expires_in, 1, 'never below 1 second')
  const stillAccepted = await call(base, '/api/m2m/v1/no-such-thing', { bearer: firstBody.access_token })
  t.equal(stillAccepted.status, 404, 'gateway accepts the token until its expiry')

  advanceMs(500) // exactly 3600 s: expired
  const expired = await call(base, '/api/m2m/v1/no-such-thing', { bearer: firstBody.access_token })
  await expectFault(t, expired, '900901', 'Invalid Credentials')
  t.equal(sim.currentOAuthToken(), undefined, 'no current token once expired')

  const second = await requestToken(base, DEMO_BASIC).then(async (res) => (await res.json()) as TokenBody)
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

  await expectFault(
    t,
    await call(base, '/api/m2m/v1/session/login', { json: { username: 'a', password: 'b' } }),
    '900902',
    'Missing Credentials'
  )
  await expectFault(
    t,
    await call(base, '/api/m2m/v1/session/login', {
      headers: { authorization: DEMO_BASIC },
      json: { username: 'a', password: 'b' }
    }),
    '900902',
    'Missing Credentials'
  )
  await expectFault(t, await login(base, 'wrong-token'), '900901', 'Invalid Credentials')
  t.equal(sim.stats.failedLogins, 0, 'logins stopped at the gateway are not failed logins')

  await expectFault(t, await call(base, `/api/m2m/v1/accounts/${DEMO_ACCOUNT_NAME}`), '900902', 'Missing Credentials')
  await expectFault(
    t,
    await call(base, `/api/m2m/v1/accounts/${DEMO_ACCOUNT_NAME}`, { bearer: 'wrong' }),
    '900901',
    'Invalid Credentials'
  )
  await expectFault(t, await call(base, '/api/m2m/v1/unknown/path'), '900902', 'Missing Credentials')
  await expectFault(
    t,
    await call(base, '/api/m2m/v1/session/login', {
      bearer: 'wrong',
      headers: { 'content-type': 'application/json' },
      body: '{not json'
    }),
    '900901',
    'Invalid Credentials'
  )
  await expectFault(
    t,
    await call(base, '/api/%6d2m/v1/session/login', {
      json: { username: DEMO_CREDENTIALS.username, password: DEMO_CREDENTIALS.password }
    }),
    '900902',
    'Missing Credentials'
  )
  t.equal(sim.stats.logins, 0, 'a percent-encoded path does not slip past the gateway')
  await expectUwsError(
    t,
    await call(base, '/api/m2m/v1/unknown/path', { bearer }),
    404,
    'UnifiedWebService.REQUEST_FAILED.NotFound'
  )
  t.equal(sim.stats.dataRequests, 0)
})

t.test('login: success, wrong credentials, lockout after 5 consecutive failures, unlock', async (t) => {
  const { sim, base } = await startSimulator(t)
  const bearer = await accessToken(base)

  const ok = await login(base, bearer)
  t.equal(ok.status, 200)
  const okBody = (await ok.json()) as Record<string, unknown>
  t.same(Object.keys(okBody), ['sessionToken'], 'the answer holds the session token and nothing else')
  t.match(okBody.sessionToken, UUID_PATTERN)
  t.equal(sim.stats.logins, 1)

  for (let i = 1; i <= 4; i++) {
    await expectUwsError(
      t,
      await login(base, bearer, DEMO_CREDENTIALS.username, 'wrong'),
      400,
      'UnifiedWebService.REQUEST_FAILED.InvalidCredentials'
    )
    t.equal(sim.stats.consecutiveFailedLogins, i)
  }
  t.equal(sim.locked, false, 'not locked below the threshold')
  t.equal((await login(base, bearer)).status, 200, 'right password still works after 4 failures')
  t.equal(sim.stats.consecutiveFailedLogins, 0, 'a success resets the consecutive count')
  t.equal(sim.stats.failedLogins, 4)

  await expectUwsError(
    t,
    await login(base, bearer, 'someone-else', DEMO_CREDENTIALS.password),
    400,
    'UnifiedWebService.REQUEST_FAILED.InvalidCredentials'
  )
  for (let i = 2; i <= 5; i++) {
    t.equal(sim.locked, false)
    await expectUwsError(
      t,
      await login(base, bearer, DEMO_CREDENTIALS.username, `wrong-${i}`),
      400,
      'UnifiedWebService.REQUEST_FAILED.InvalidCredentials'
    )
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

  await expectUwsError(
    t,
    await call(base, '/api/m2m/v1/session/login', { bearer, json: { username: DEMO_CREDENTIALS.username } }),
    400,
    'UnifiedWebService.INPUT_INVALID.BadRequest'
  )
  await expectUwsError(
    t,
    await call(base, '/api/m2m/v1/session/login', {
      bearer,
      headers: { 'content-type': 'application/json' },
      body: '{"username": '
    }),
    400,
    'UnifiedWebService.INPUT_INVALID.BadRequest'
  )
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
  await t.rejects(
    call(base, '/api/m2m/v1/session/login', {
      bearer,
      json: { username: DEMO_CREDENTIALS.username, password: DEMO_CREDENTIALS.password },
      signal: AbortSignal.timeout(300)
    }),
    { name: 'TimeoutError' },
    'hang never answers'
  )
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
  t.teardown(async () => {
    if (!closed) await sim.app.close()
  })
  const bearer = await accessToken(base)
  const session = await sessionToken(base, bearer)

  sim.failNextLogins(1, 'hang')
  const hung = login(base, bearer).then(
    () => 'answered',
    () => 'failed'
  )
  const delayed = call(base, '/api/m2m/v1/simulator/delay/60000', { bearer, session }).then(
    () => 'answered',
    () => 'failed'
  )
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
  const account = async (session?: string): Promise<Response> =>
    call(base, `/api/m2m/v1/accounts/${DEMO_ACCOUNT_NAME}`, { bearer, session })

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
  await expectUwsError(
    t,
    await account('00000000-0000-4000-8000-000000000000'),
    400,
    'UnifiedWebService.INPUT_INVALID.SessionToken.Invalid'
  )
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

  await expectUwsError(
    t,
    await call(base, '/api/m2m/v1/session/logout', { method: 'POST', bearer }),
    400,
    'UnifiedWebService.INPUT_INVALID.SessionToken.Invalid'
  )
  await expectFault(
    t,
    await call(base, '/api/m2m/v1/session/logout', { method: 'POST', session: ended }),
    '900902',
    'Missing Credentials'
  )

  const res = await call(base, '/api/m2m/v1/session/logout', { method: 'POST', bearer, session: ended })
  t.equal(res.status, 200)
  t.same(await res.json(), { sessionToken: ended })
  t.equal(sim.stats.logouts, 1)
  t.same(sim.activeSessionTokens(), [kept])

  await expectUwsError(
    t,
    await call(base, '/api/m2m/v1/accounts/A', { bearer, session: ended }),
    400,
    'UnifiedWebService.INPUT_INVALID.SessionToken.Invalid'
  )
  await expectUwsError(
    t,
    await call(base, '/api/m2m/v1/session/logout', { method: 'POST', bearer, session: ended }),
    400,
    'UnifiedWebService.INPUT_INVALID.SessionToken.Invalid'
  )
  t.equal(
    (await call(base, `/api/m2m/v1/accounts/${DEMO_ACCOUNT_NAME}`, { bearer, session: kept })).status,
    200,
    'the other session lives on'
  )
  t.equal(sim.stats.logouts, 1)
})

t.test('password reset: both tokens, wrong old password, new password effective immediately', async (t) => {
  const { sim, base } = await startSimulator(t)
  const bearer = await accessToken(base)
  const session = await sessionToken(base, bearer)
  const reset = async (body: unknown, withSession: string | null = session): Promise<Response> =>
    call(base, '/api/m2m/v1/session/password/actions/reset', {
      method: 'PUT',
      bearer,
      session: withSession ?? undefined,
      json: body
    })

  await expectUwsError(
    t,
    await reset({ oldPassword: DEMO_CREDENTIALS.password }, null),
    400,
    'UnifiedWebService.INPUT_INVALID.SessionToken.Invalid'
  )
  await expectUwsError(
    t,
    await reset({ oldPassword: 'not-it' }),
    400,
    'UnifiedWebService.REQUEST_FAILED.InvalidPassword'
  )
  await expectUwsError(t, await reset({}), 400, 'UnifiedWebService.INPUT_INVALID.BadRequest')
  await expectUwsError(
    t,
    await call(base, '/api/m2m/v1/session/password/actions/reset', {
      method: 'POST',
      bearer,
      session,
      json: { oldPassword: DEMO_CREDENTIALS.password }
    }),
    404,
    'UnifiedWebService.REQUEST_FAILED.NotFound'
  )
  t.equal(sim.password, DEMO_CREDENTIALS.password, 'unchanged so far')
  t.equal(sim.stats.passwordResets, 0)

  const res = await reset({ oldPassword: DEMO_CREDENTIALS.password })
  t.equal(res.status, 200)
  const body = (await res.json()) as Record<string, unknown>
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
  await expectUwsError(
    t,
    await reset({ oldPassword: DEMO_CREDENTIALS.password }),
    400,
    'UnifiedWebService.REQUEST_FAILED.InvalidPassword'
  )

  const passwords = new Set<string>()
  let current = newPassword
  for (let i = 0; i < 5; i++) {
    current = (await reset({ oldPassword: current }).then(async (r) => (await r.json()) as { newPassword: string }))
      .newPassword
    passwords.add(current)
  }
  t.equal(passwords.size, 5, 'every reset generates a different password')
})

t.test('data endpoints: account, paged device list, usage; deterministic', async (t) => {
  const { sim, base } = await startSimulator(t, { accounts: [DEMO_ACCOUNT_NAME, OTHER_ACCOUNT_NAME] })
  const other = await startSimulator(t)
  const bearer = await accessToken(base)
  const session = await sessionToken(base, bearer)
  const otherBearer = await accessToken(other.base)
  const otherSession = await sessionToken(other.base, otherBearer)

  const account = await call(base, `/api/m2m/v1/accounts/${DEMO_ACCOUNT_NAME}`, { bearer, session })
  t.equal(account.status, 200)
  const accountBody = (await account.json()) as Record<string, unknown>
  t.match(accountBody, {
    accountName: DEMO_ACCOUNT_NAME,
    accountNumber: String,
    organizationName: String,
    isProvisioningAllowed: true
  })
  const otherAccount = await call(other.base, `/api/m2m/v1/accounts/${DEMO_ACCOUNT_NAME}`, {
    bearer: otherBearer,
    session: otherSession
  })
  t.same(await otherAccount.json(), accountBody, 'the same account from another simulator instance')
  const differentAccount = await call(base, `/api/m2m/v1/accounts/${OTHER_ACCOUNT_NAME}`, { bearer, session }).then(
    async (r) => (await r.json()) as Record<string, unknown>
  )
  t.equal(differentAccount.accountName, OTHER_ACCOUNT_NAME)
  t.not(differentAccount.accountNumber, accountBody.accountNumber)

  const list = async (json: unknown): Promise<Response> =>
    call(base, '/api/m2m/v1/devices/actions/list', { bearer, session, json })
  const pages: DevicePageBody[] = []
  let largestDeviceIdSeen: string | undefined
  for (;;) {
    const res = await list({ accountName: DEMO_ACCOUNT_NAME, largestDeviceIdSeen })
    t.equal(res.status, 200)
    const page = (await res.json()) as DevicePageBody
    pages.push(page)
    if (!page.hasMoreData) break
    largestDeviceIdSeen = page.devices.at(-1)?.deviceIds.find((id) => id.kind === 'imei')?.id
    if (pages.length > 5) break
  }
  t.same(
    pages.map((page) => page.devices.length),
    [10, 10, 5],
    'default page size 10, 25 devices'
  )
  t.same(
    pages.map((page) => page.hasMoreData),
    [true, true, false]
  )
  const paged = pages.flatMap((page) => page.devices)
  const imeis = paged.map((device) => device.deviceIds.find((id) => id.kind === 'imei')?.id)
  t.equal(new Set(imeis).size, 25, 'distinct devices')
  for (const device of paged) {
    t.equal(device.accountName, DEMO_ACCOUNT_NAME)
    t.same(
      device.deviceIds.map((id) => id.kind),
      ['imei', 'iccid']
    )
    t.match(device.deviceIds[0]?.id, /^\d{15}$/)
    t.match(device.deviceIds[1]?.id, /^\d{19,20}$/)
    t.notOk('state' in device, "no top-level state (the SDK's device has none)")
    t.match(device.carrierInformations, [
      { carrierName: 'Verizon Wireless', servicePlan: String, state: /^(active|deactive|suspend)$/ }
    ])
    for (const date of [
      device.billingCycleEndDate,
      device.createdAt,
      device.lastActivationDate,
      device.lastConnectionDate
    ]) {
      t.match(date, VERIZON_DATE, "dates as Verizon's examples write them")
    }
    t.match(device.ipAddress, /^\d+\.\d+\.\d+\.\d+$/)
    t.type(device.connected, 'boolean')
    t.ok(!Number.isNaN(Date.parse(device.lastActivationDate)), 'lastActivationDate is a date')
  }

  const all = await list({ accountName: DEMO_ACCOUNT_NAME, maxNumberOfDevices: 25 }).then(
    async (r) => (await r.json()) as DevicePageBody
  )
  t.equal(all.hasMoreData, false)
  t.same(all.devices, paged, 'one big page equals the paged walk')
  const numeric = await list({
    accountName: DEMO_ACCOUNT_NAME,
    maxNumberOfDevices: 3,
    largestDeviceIdSeen: Number(imeis[21])
  }).then(async (r) => (await r.json()) as DevicePageBody)
  t.same(numeric.devices, paged.slice(22), 'largestDeviceIdSeen may be a number')
  t.equal(numeric.hasMoreData, false)

  await expectUwsError(t, await list({}), 400, 'UnifiedWebService.INPUT_INVALID.BadRequest')
  await expectUwsError(
    t,
    await list({ accountName: 'A', maxNumberOfDevices: 0 }),
    400,
    'UnifiedWebService.INPUT_INVALID.BadRequest'
  )
  await expectUwsError(
    t,
    await list({ accountName: 'A', largestDeviceIdSeen: 'abc' }),
    400,
    'UnifiedWebService.INPUT_INVALID.BadRequest'
  )

  const usage = async (json: unknown): Promise<Response> =>
    call(base, '/api/m2m/v1/devices/usage/actions/list', { bearer, session, json })
  const usageRequest = {
    deviceId: { id: imeis[0], kind: 'imei' },
    earliest: '2025-03-01T00:00:00Z',
    latest: '2025-03-03T12:00:00Z'
  }
  const usageRes = await usage(usageRequest)
  t.equal(usageRes.status, 200)
  const usageBody = (await usageRes.json()) as UsageBody
  t.equal(usageBody.hasMoreData, false)
  t.equal(usageBody.usageHistory.length, 3, 'one record per day in range')
  for (const record of usageBody.usageHistory) {
    t.same(
      Object.keys(record),
      ['bytesUsed', 'extendedAttributes', 'smsUsed', 'source', 'timestamp'],
      "the fields of the SDK's usage record"
    )
    t.equal(record.source, 'Raw Usage')
    t.match(record.extendedAttributes, [
      { key: 'MoSms', value: /^\d+$/ },
      { key: 'MtSms', value: /^\d+$/ }
    ])
    t.equal(
      record.extendedAttributes.reduce((sum, attribute) => sum + Number(attribute.value), 0),
      record.smsUsed,
      'MO plus MT is smsUsed'
    )
    t.match(record.timestamp, /^\d{4}-\d\d-\d\dT00:00:00Z$/)
    t.ok(Number.isInteger(record.bytesUsed) && record.bytesUsed >= 0)
    t.ok(Number.isInteger(record.smsUsed) && record.smsUsed >= 0)
    const ms = Date.parse(record.timestamp)
    t.ok(ms >= Date.parse(usageRequest.earliest) && ms <= Date.parse(usageRequest.latest), 'timestamp within range')
  }
  t.same(await usage(usageRequest).then(async (r) => await r.json()), usageBody, 'deterministic')
  await expectUwsError(
    t,
    await usage({ deviceId: { id: '1' }, earliest: 'x', latest: 'y' }),
    400,
    'UnifiedWebService.INPUT_INVALID.BadRequest'
  )
  await expectUwsError(
    t,
    await usage({ ...usageRequest, latest: 'not a date' }),
    400,
    'UnifiedWebService.INPUT_INVALID.BadRequest'
  )

  t.equal(sim.stats.dataRequests, 14, 'every data request that reached a handler, including the rejected bodies')
  await expectUwsError(
    t,
    await call(base, '/api/m2m/v1/devices/actions/list', {
      bearer,
      session,
      headers: { 'content-type': 'application/json' },
      body: '{"accountName":'
    }),
    400,
    'UnifiedWebService.INPUT_INVALID.BadRequest'
  )
  t.equal(sim.stats.dataRequests, 14, 'malformed JSON never reaches the handler')
})

t.test('echo: method, url, headers and a digest of the raw body, any content type', async (t) => {
  const { sim, base } = await startSimulator(t)
  const bearer = await accessToken(base)
  const session = await sessionToken(base, bearer)
  const echo = async (options: CallOptions, query = ''): Promise<Response> =>
    call(base, `/api/m2m/v1/simulator/echo${query}`, { bearer, session, ...options })

  const payload = new Uint8Array(randomBytes(100_000))
  const res = await echo(
    { method: 'POST', body: payload, headers: { 'content-type': 'application/octet-stream', 'x-trace': 'abc' } },
    '?a=1&b=%20two'
  )
  t.equal(res.status, 200)
  const body = (await res.json()) as EchoBody
  t.equal(body.method, 'POST')
  t.equal(body.url, '/api/m2m/v1/simulator/echo?a=1&b=%20two')
  t.equal(body.headers['x-trace'], 'abc')
  t.equal(body.headers['vz-m2m-token'], fingerprint(session), 'the session token as its fingerprint')
  t.equal(body.headers.authorization, `Bearer ${fingerprint(bearer)}`, 'the bearer as its fingerprint, the scheme kept')
  t.equal(body.headers['content-type'], 'application/octet-stream')
  t.equal(body.bodyLength, payload.length)
  t.equal(body.bodySha256, sha256Hex(payload))

  const empty = await echo({ method: 'GET' }).then(async (r) => (await r.json()) as EchoBody)
  t.equal(empty.method, 'GET')
  t.equal(empty.bodyLength, 0)
  t.equal(empty.bodySha256, EMPTY_SHA256)

  const notJson = '{this is not json'
  const raw = await echo({ method: 'PUT', body: notJson, headers: { 'content-type': 'application/json' } })
  t.equal(raw.status, 200, 'JSON is not parsed here: bytes are echoed as received')
  const rawBody = (await raw.json()) as EchoBody
  t.equal(rawBody.method, 'PUT')
  t.equal(rawBody.bodySha256, sha256Hex(Buffer.from(notJson)))

  const untyped = await echo({ method: 'PATCH', body: new Uint8Array([1, 2, 3]) }).then(
    async (r) => (await r.json()) as EchoBody
  )
  t.equal(untyped.method, 'PATCH')
  t.equal(untyped.headers['content-type'], undefined, 'no content type sent')
  t.equal(untyped.bodyLength, 3)

  const deleted = await echo({ method: 'DELETE' }).then(async (r) => (await r.json()) as EchoBody)
  t.equal(deleted.method, 'DELETE')

  const limitBytes = 25 * 1024 * 1024
  const atLimit = await echo({
    method: 'POST',
    body: new Uint8Array(limitBytes).fill(7),
    headers: { 'content-type': 'application/octet-stream' }
  })
  t.equal(atLimit.status, 200, '25 MB is accepted')
  t.equal(((await atLimit.json()) as EchoBody).bodyLength, limitBytes)
  const tooLarge = await echo({
    method: 'POST',
    body: new Uint8Array(limitBytes + 1),
    headers: { 'content-type': 'application/octet-stream' }
  })
  await expectUwsError(t, tooLarge, 413, 'UnifiedWebService.INPUT_INVALID.RequestTooLarge')

  await expectUwsError(
    t,
    await call(base, '/api/m2m/v1/simulator/echo', { bearer }),
    400,
    'UnifiedWebService.INPUT_INVALID.SessionToken.Invalid'
  )
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
  const other = await call(base, '/api/m2m/v1/simulator/echo', {
    bearer,
    session,
    headers: { authorization: `bearer  ${bearer}` }
  })
  t.notOk((await other.text()).includes(bearer), 'nor in another spelling of the header')
})

t.test(
  'lenientPaths: any case, trailing and repeated slashes, ;params, as a servlet container matches them',
  async (t) => {
    const strict = await startSimulator(t)
    const lenient = await startSimulator(t, { lenientPaths: true })
    for (const { sim, base } of [strict, lenient]) {
      const bearer = await accessToken(base)
      for (const path of [
        '/api/m2m/v1/session/logout/',
        '/api/m2m/v1//session/logout',
        '/api/m2m/v1/session/LOGOUT',
        '/api/m2m/v1/session/logout;x'
      ]) {
        const res = await call(base, path, { method: 'POST', bearer, session: await sessionToken(base, bearer) })
        t.equal(
          res.status,
          sim === lenient.sim ? 200 : 404,
          `${sim === lenient.sim ? 'lenient' : 'strict'}: POST ${path}`
        )
        await res.arrayBuffer()
      }
      t.equal(sim.stats.logouts, sim === lenient.sim ? 4 : 0)
    }
  }
)

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
  const bytes = async (count: string): Promise<Response> =>
    call(base, `/api/m2m/v1/simulator/bytes/${count}`, { bearer, session })

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
  t.same(await call(base, '/api/m2m/v1/simulator/delay/0', { bearer, session }).then(async (r) => await r.json()), {
    delayedMs: 0
  })
  await expectUwsError(
    t,
    await call(base, '/api/m2m/v1/simulator/delay/120001', { bearer, session }),
    400,
    'UnifiedWebService.INPUT_INVALID.BadRequest'
  )
  await expectUwsError(
    t,
    await call(base, '/api/m2m/v1/simulator/delay/soon', { bearer, session }),
    400,
    'UnifiedWebService.INPUT_INVALID.BadRequest'
  )
  await expectUwsError(
    t,
    await call(base, '/api/m2m/v1/simulator/delay/10', { bearer, session: 'nope' }),
    400,
    'UnifiedWebService.INPUT_INVALID.SessionToken.Invalid'
  )
  t.equal(sim.stats.dataRequests, 4)

  await t.rejects(
    call(base, '/api/m2m/v1/simulator/reset', { bearer, session }),
    'the connection is destroyed without an answer'
  )
  t.ok(sim.stats.dataRequests >= 5, 'the reset request reached its handler')
  await expectFault(t, await call(base, '/api/m2m/v1/simulator/reset', { session }), '900902', 'Missing Credentials')
  t.equal(
    (await call(base, `/api/m2m/v1/accounts/${DEMO_ACCOUNT_NAME}`, { bearer, session })).status,
    200,
    'the server keeps serving after a reset'
  )
})

t.test('unknown routes answer 404 with an errorCode', async (t) => {
  const { base } = await startSimulator(t)
  await expectUwsError(t, await fetch(`${base}/`), 404, 'UnifiedWebService.REQUEST_FAILED.NotFound')
  await expectUwsError(
    t,
    await fetch(`${base}/api/ts/v1/oauth2/token`),
    404,
    'UnifiedWebService.REQUEST_FAILED.NotFound'
  )
  await expectUwsError(
    t,
    await fetch(`${base}/api/other`, { method: 'POST', body: 'x' }),
    404,
    'UnifiedWebService.REQUEST_FAILED.NotFound'
  )
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

t.test(
  "accounts: the SDK's Account fields only; an unknown account answers AccountNotFound, not invented data",
  async (t) => {
    const { sim, base } = await startSimulator(t)
    const bearer = await accessToken(base)
    const session = await sessionToken(base, bearer)
    t.equal(DEMO_ACCOUNT_NAME, '0000123456-00001', "named as Verizon's examples name accounts")

    const account = await call(base, `/api/m2m/v1/accounts/${DEMO_ACCOUNT_NAME}`, { bearer, session }).then(
      async (r) => (await r.json()) as Record<string, unknown>
    )
    t.same(Object.keys(account).sort(), [
      'accountName',
      'accountNumber',
      'carriers',
      'features',
      'iPPools',
      'isProvisioningAllowed',
      'organizationName',
      'servicePlans'
    ])
    t.notOk('operationsAllowed' in account, 'no operationsAllowed')
    t.match(account.servicePlans, [
      { name: String, code: String, sizeKb: Number, carrierServicePlanCode: String, extendedAttributes: [] }
    ])

    await expectUwsError(
      t,
      await call(base, '/api/m2m/v1/accounts/TestAccount-1', { bearer, session }),
      400,
      'UnifiedWebService.REQUEST_FAILED.AccountNotFound'
    )
    await expectUwsError(
      t,
      await call(base, '/api/m2m/v1/devices/actions/list', {
        bearer,
        session,
        json: { accountName: '0000999999-00001' }
      }),
      400,
      'UnifiedWebService.REQUEST_FAILED.AccountNotFound'
    )
    t.equal(sim.stats.dataRequests, 3)
  }
)

interface FamilyCase {
  label: string
  method: 'GET' | 'POST'
  path: (account: string) => string
  json?: (account: string) => unknown
  /** A t.match pattern of the answer for the demo account. */
  shape: unknown
  /** Status and t.match pattern of the family's own error for an unknown account. */
  unknown: { status: number; body: unknown }
}

const FAMILY_ERROR = { errorCode: String, errorMessage: String }
const FAMILY_CASES: FamilyCase[] = [
  {
    label: 'Thingspace /api/v1 account details',
    method: 'GET',
    path: (account) => `/api/v1/accounts/${account}`,
    shape: {
      accountName: DEMO_ACCOUNT_NAME,
      accountNumber: String,
      organizationName: String,
      isProvisioningAllowed: Boolean,
      carriers: [{ carriers: String }],
      features: [{ features: String }],
      servicePlans: [{ name: String, code: String, sizeKb: String, carrierServicePlanCode: String }]
    },
    unknown: { status: 400, body: { errorCode: 'UnifiedWebService.REQUEST_FAILED.AccountNotFound' } }
  },
  {
    label: 'Thingspace /api/v1 service plans',
    method: 'GET',
    path: (account) => `/api/v1/plans/${account}`,
    shape: { accountName: DEMO_ACCOUNT_NAME, servicePlans: Array },
    unknown: { status: 400, body: { errorCode: 'UnifiedWebService.REQUEST_FAILED.AccountNotFound' } }
  },
  {
    label: 'Thingspace /api/m2m/v2 global device list',
    method: 'POST',
    path: () => '/api/m2m/v2/devices/actions/list',
    json: (accountName) => ({ accountName }),
    shape: { requestId: UUID_PATTERN },
    unknown: { status: 400, body: { errorCode: 'UnifiedWebService.REQUEST_FAILED.AccountNotFound' } }
  },
  {
    label: 'Device Location subscription',
    method: 'GET',
    path: (account) => `/api/loc/v1/subscriptions/${account}`,
    shape: { accountName: DEMO_ACCOUNT_NAME, locType: String, maxAllowance: /^\d+$/, purchaseTime: String },
    unknown: { status: 400, body: { ...FAMILY_ERROR, errorCode: 'INVALID_ACCOUNT' } }
  },
  {
    label: 'Device Location synchronous locations',
    method: 'POST',
    path: () => '/api/loc/v1/locations',
    json: (accountName) => ({ accountName, deviceList: [{ id: '7892345678', kind: 'mdn' }] }),
    shape: [
      {
        msid: '7892345678',
        pd: { time: /^\d{14}$/, x: /^-?\d+\.\d+$/, y: /^-?\d+\.\d+$/, radius: /^\d+$/, qos: false, utcoffset: String }
      }
    ],
    unknown: { status: 400, body: { ...FAMILY_ERROR, errorCode: 'INVALID_ACCOUNT' } }
  },
  {
    label: 'Device Location callbacks',
    method: 'GET',
    path: (account) => `/api/loc/v1/callbacks/${account}`,
    shape: [],
    unknown: { status: 400, body: { ...FAMILY_ERROR, errorCode: 'INVALID_ACCOUNT' } }
  },
  {
    label: 'Subscription Server managed accounts',
    method: 'GET',
    path: (account) => `/api/subsc/v1/managedaccounts/${account}/service/Location`,
    shape: { accountName: DEMO_ACCOUNT_NAME, ManagedAccAddedList: [], managedAccProvisionedList: [] },
    unknown: { status: 400, body: { ...FAMILY_ERROR, errorCode: 'INVALID_ACCOUNT' } }
  },
  {
    label: 'Subscription Server usage trigger',
    method: 'POST',
    path: () => '/api/subsc/v1/usage/triggers',
    json: (accountName) => ({
      accountName,
      triggerName: '95% usage alert',
      serviceName: 'Location',
      thresholdValue: '95',
      allowExcess: true
    }),
    shape: {
      triggerId: UUID_PATTERN,
      triggerName: '95% usage alert',
      accountName: DEMO_ACCOUNT_NAME,
      serviceName: 'Location',
      thresholdValue: '95',
      allowExcess: true,
      sendSmsNotification: false,
      createDate: /^\d{4}-\d\d-\d\d$/,
      updateDate: /^\d{4}-\d\d-\d\d$/
    },
    unknown: { status: 400, body: { ...FAMILY_ERROR, errorCode: 'INVALID_ACCOUNT' } }
  },
  ...(['v1', 'v2', 'v3'] as const).map((version): FamilyCase => ({
    label: `Software Management ${version} subscription`,
    method: 'GET',
    path: (account) => `/api/fota/${version}/subscriptions/${account}`,
    shape: {
      accountName: DEMO_ACCOUNT_NAME,
      purchaseType: 'TS-HFOTA-EVNT,TS-HFOTA-MRC',
      licenseCount: Number,
      licenseUsedCount: Number,
      updateTime: String
    },
    unknown: { status: 400, body: { ...FAMILY_ERROR, errorCode: 'INVALID_ACCOUNT' } }
  })),
  {
    label: 'Software Management v1 firmware',
    method: 'GET',
    path: (account) => `/api/fota/v1/firmware/${account}`,
    shape: [
      {
        firmwareName: String,
        participantName: DEMO_ACCOUNT_NAME,
        launchDate: String,
        model: String,
        make: String,
        fromVersion: String,
        toVersion: String
      }
    ],
    unknown: { status: 400, body: FAMILY_ERROR }
  },
  {
    label: 'Software Management v2 software',
    method: 'GET',
    path: (account) => `/api/fota/v2/software/${account}`,
    shape: [
      {
        softwareName: String,
        launchDate: /^\d{4}-\d\d-\d\d$/,
        model: String,
        make: String,
        distributionType: 'HTTP',
        devicePlatformId: String
      }
    ],
    unknown: { status: 400, body: FAMILY_ERROR }
  },
  {
    label: 'Software Management v3 firmware',
    method: 'GET',
    path: (account) => `/api/fota/v3/firmware/${account}`,
    shape: [
      {
        firmwareName: String,
        firmwareFrom: String,
        firmwareTo: String,
        launchDate: String,
        releaseNote: String,
        model: String,
        make: String,
        protocol: 'LWM2M'
      }
    ],
    unknown: { status: 400, body: FAMILY_ERROR }
  },
  {
    label: 'Device Diagnostics subscription',
    method: 'GET',
    path: (account) => `/api/diagnostics/v1/subscriptions?accountName=${account}`,
    shape: {
      accountName: DEMO_ACCOUNT_NAME,
      skuName: String,
      totalAllowed: Number,
      totalUsed: Number,
      createdOn: String,
      lastUpdated: String
    },
    unknown: { status: 400, body: { ...FAMILY_ERROR, errorCode: 'INVALID_PARAMETER' } }
  },
  {
    label: 'Device Diagnostics callbacks',
    method: 'GET',
    path: (account) => `/api/diagnostics/v1/callbacks?accountName=${account}`,
    shape: [{ accountName: DEMO_ACCOUNT_NAME, serviceName: 'Diagnostics', endpoint: String, createdOn: String }],
    unknown: { status: 400, body: { ...FAMILY_ERROR, errorCode: 'INVALID_PARAMETER' } }
  },
  {
    label: 'Cloud Connector subscriptions',
    method: 'POST',
    path: () => '/api/cc/v1/subscriptions/actions/query',
    json: (billingaccountid) => ({ accountidentifier: { billingaccountid } }),
    shape: [
      {
        id: UUID_PATTERN,
        kind: 'ts.subscription',
        streamkind: 'ts.event',
        targetid: UUID_PATTERN,
        disabled: false,
        configurationfailures: 0
      }
    ],
    unknown: { status: 404, body: { error: 'not_found', error_description: String, cause: String } }
  },
  {
    label: 'Cloud Connector targets',
    method: 'POST',
    path: () => '/api/cc/v1/targets/actions/query',
    json: (billingaccountid) => ({ accountidentifier: { billingaccountid } }),
    shape: [
      {
        id: UUID_PATTERN,
        kind: 'ts.target',
        billingaccountid: DEMO_ACCOUNT_NAME,
        address: String,
        addressscheme: String
      }
    ],
    unknown: { status: 404, body: { error: 'not_found', error_description: String, cause: String } }
  },
  {
    label: 'Hyper Precise Location device services',
    method: 'GET',
    path: (account) => `/api/hyper-precise/v1/devices/services?accountNumber=${account}`,
    shape: {
      accountNumber: DEMO_ACCOUNT_NAME,
      deviceList: [
        { imei: /^\d{15}$/, BullseyeEnable: Boolean, responseType: { responseCode: 'SUCCESS', message: String } }
      ],
      responseType: { responseCode: 'SUCCESS' }
    },
    unknown: { status: 400, body: { responseCode: 'INVALID_PARAMETER', message: String } }
  },
  {
    label: 'Hyper Precise Location callbacks',
    method: 'GET',
    path: (account) => `/api/hyper-precise/v1/callbacks?accountNumber=${account}`,
    shape: [{ aname: DEMO_ACCOUNT_NAME, name: 'BullseyeReporting', url: String }],
    unknown: { status: 400, body: { responseCode: 'INVALID_PARAMETER', message: String } }
  }
]

t.test(
  "API families: SDK-shaped answers, both tokens required, each family's own error for an unknown account",
  async (t) => {
    const { sim, base } = await startSimulator(t)
    const bearer = await accessToken(base)
    const session = await sessionToken(base, bearer)
    const send = async (
      family: FamilyCase,
      account: string,
      tokens: { bearer?: string; session?: string }
    ): Promise<Response> =>
      call(base, family.path(account), { method: family.method, ...tokens, json: family.json?.(account) })

    for (const family of FAMILY_CASES) {
      const ok = await send(family, DEMO_ACCOUNT_NAME, { bearer, session })
      t.equal(ok.status, 200, `${family.label}: 200`)
      t.match(await ok.json(), family.shape, `${family.label}: the SDK model's shape`)
      const unknown = await send(family, '0000999999-00001', { bearer, session })
      t.equal(unknown.status, family.unknown.status, `${family.label}: unknown account status`)
      t.match(await unknown.json(), family.unknown.body, `${family.label}: the family's error body`)

      await expectFault(t, await send(family, DEMO_ACCOUNT_NAME, { session }), '900902', 'Missing Credentials')
      await expectFault(
        t,
        await send(family, DEMO_ACCOUNT_NAME, { bearer: 'not-the-token', session }),
        '900901',
        'Invalid Credentials'
      )
      await expectUwsError(
        t,
        await send(family, DEMO_ACCOUNT_NAME, { bearer }),
        400,
        'UnifiedWebService.INPUT_INVALID.SessionToken.Invalid'
      )
    }
    sim.expireSessions()
    for (const family of FAMILY_CASES) {
      await expectUwsError(
        t,
        await send(family, DEMO_ACCOUNT_NAME, { bearer, session }),
        400,
        'UnifiedWebService.REQUEST_FAILED.SessionToken.Expired'
      )
    }
    t.equal(sim.stats.dataRequests, FAMILY_CASES.length * 2, 'only the requests with both tokens reached a handler')
  }
)

t.test('API families: asynchronous request status and bad requests', async (t) => {
  const { base } = await startSimulator(t)
  const bearer = await accessToken(base)
  const session = await sessionToken(base, bearer)
  const { requestId } = await call(base, '/api/m2m/v2/devices/actions/list', {
    bearer,
    session,
    json: { accountName: DEMO_ACCOUNT_NAME }
  }).then(async (r) => (await r.json()) as { requestId: string })
  const status = await call(base, `/api/m2m/v2/accounts/${DEMO_ACCOUNT_NAME}/requests/${requestId}/status`, {
    bearer,
    session
  })
  t.equal(status.status, 200)
  t.match(await status.json(), {
    requestId,
    status: 'Success',
    subrequests: [{ ids: { kind: 'imei', id: /^\d{15}$/ }, status: 'Success' }]
  })
  await expectUwsError(
    t,
    await call(base, `/api/m2m/v2/accounts/${DEMO_ACCOUNT_NAME}/requests/${randomUUID()}/status`, { bearer, session }),
    400,
    'UnifiedWebService.INPUT_INVALID.BadRequest'
  )
  await expectUwsError(
    t,
    await call(base, `/api/m2m/v2/accounts/0000999999-00001/requests/${requestId}/status`, { bearer, session }),
    400,
    'UnifiedWebService.REQUEST_FAILED.AccountNotFound'
  )
  await expectUwsError(
    t,
    await call(base, '/api/m2m/v2/devices/actions/list', { bearer, session, json: {} }),
    400,
    'UnifiedWebService.INPUT_INVALID.BadRequest'
  )

  const badBodies: Array<[string, unknown, number, unknown]> = [
    [
      '/api/loc/v1/locations',
      { accountName: DEMO_ACCOUNT_NAME, deviceList: [] },
      400,
      { errorCode: 'INVALID_REQUEST' }
    ],
    ['/api/subsc/v1/usage/triggers', { accountName: DEMO_ACCOUNT_NAME }, 400, { errorCode: 'INVALID_REQUEST' }],
    ['/api/cc/v1/targets/actions/query', {}, 400, { error: 'bad_request', error_description: String, cause: String }]
  ]
  for (const [path, json, expectedStatus, body] of badBodies) {
    const res = await call(base, path, { bearer, session, json })
    t.equal(res.status, expectedStatus, path)
    t.match(await res.json(), body, path)
  }
  for (const path of ['/api/diagnostics/v1/subscriptions', '/api/hyper-precise/v1/callbacks']) {
    const res = await call(base, path, { bearer, session })
    t.equal(res.status, 400, `${path} without its account query parameter`)
    await res.arrayBuffer()
  }
  const oneDevice = await call(
    base,
    `/api/hyper-precise/v1/devices/services?accountNumber=${DEMO_ACCOUNT_NAME}&imei=709312034493372`,
    { bearer, session }
  ).then(async (r) => (await r.json()) as { deviceList: unknown[] })
  t.match(oneDevice.deviceList, [{ imei: '709312034493372' }])
  t.equal(oneDevice.deviceList.length, 1)
})

/** A raw request (no automatic decoding): status, headers and the body bytes as they came over the wire. */
async function rawCall (
  base: string,
  path: string,
  headers: Record<string, string>,
  body?: string
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; bytes: Buffer }> {
  const res = await undiciRequest(`${base}${path}`, { method: body === undefined ? 'GET' : 'POST', headers, body })
  return { status: res.statusCode, headers: res.headers, bytes: Buffer.from(await res.body.arrayBuffer()) }
}

t.test(
  'compression: br, gzip and deflate as the client accepts, error answers included; off with compression: false',
  async (t) => {
    const { base } = await startSimulator(t)
    const bearer = await accessToken(base)
    const session = await sessionToken(base, bearer)
    const auth = { authorization: `Bearer ${bearer}`, 'vz-m2m-token': session }

    for (const encoding of ['gzip', 'deflate', 'br']) {
      const ok = await rawCall(base, `/api/m2m/v1/accounts/${DEMO_ACCOUNT_NAME}`, {
        ...auth,
        'accept-encoding': encoding
      })
      t.equal(ok.status, 200)
      t.equal(ok.headers['content-encoding'], encoding, `${encoding}: a 200 answer`)
      t.match(ok.headers.vary, /accept-encoding/i)
      t.match(JSON.parse(decodeBody(ok.bytes, encoding).toString('utf8')), { accountName: DEMO_ACCOUNT_NAME })

      const errors: Array<[string, Record<string, string>, number, unknown]> = [
        ['/api/m2m/v1/accounts/x', {}, 401, { fault: { code: '900902' } }],
        ['/api/loc/v1/subscriptions/x', { authorization: 'Bearer wrong' }, 401, { fault: { code: '900901' } }],
        [
          '/api/m2m/v1/accounts/x',
          { authorization: `Bearer ${bearer}`, 'vz-m2m-token': 'nope' },
          400,
          { errorCode: 'UnifiedWebService.INPUT_INVALID.SessionToken.Invalid' }
        ],
        ['/api/m2m/v1/accounts/x', auth, 400, { errorCode: 'UnifiedWebService.REQUEST_FAILED.AccountNotFound' }],
        [
          '/api/m2m/v1/no-such-thing',
          { authorization: `Bearer ${bearer}` },
          404,
          { errorCode: 'UnifiedWebService.REQUEST_FAILED.NotFound' }
        ],
        ['/nowhere', {}, 404, { errorCode: 'UnifiedWebService.REQUEST_FAILED.NotFound' }]
      ]
      for (const [path, headers, status, body] of errors) {
        const answer = await rawCall(base, path, { ...headers, 'accept-encoding': encoding })
        t.equal(answer.status, status, `${encoding} ${path}`)
        t.equal(answer.headers['content-encoding'], encoding, `${encoding}: the ${status} answer is compressed too`)
        t.match(JSON.parse(decodeBody(answer.bytes, encoding).toString('utf8')), body)
      }
    }
    const preferred = await rawCall(base, '/nowhere', { 'accept-encoding': 'gzip, deflate, br' })
    t.ok(
      ['br', 'gzip'].includes(String(preferred.headers['content-encoding'])),
      "the SDK's Accept-Encoding gets a compressed answer"
    )

    const plain = await rawCall(base, `/api/m2m/v1/accounts/${DEMO_ACCOUNT_NAME}`, auth)
    t.equal(plain.headers['content-encoding'], undefined, 'no Accept-Encoding: plain')
    t.match(JSON.parse(plain.bytes.toString('utf8')), { accountName: DEMO_ACCOUNT_NAME })
    const identity = await rawCall(base, '/nowhere', { 'accept-encoding': 'identity' })
    t.equal(identity.headers['content-encoding'], undefined, 'identity: plain')
    const stream = await rawCall(base, '/api/m2m/v1/simulator/bytes/5000', { ...auth, 'accept-encoding': 'gzip' })
    t.equal(stream.headers['content-encoding'], undefined, 'byte streams are not compressed')
    t.equal(stream.headers['content-length'], '5000')
    const echo = await rawCall(
      base,
      '/api/m2m/v1/simulator/echo',
      { ...auth, 'content-type': 'application/json', 'content-encoding': 'gzip' },
      '{"raw":true}'
    )
    t.equal(
      (JSON.parse(echo.bytes.toString('utf8')) as EchoBody).bodySha256,
      sha256Hex(Buffer.from('{"raw":true}')),
      'request bodies are not decoded'
    )

    const off = await startSimulator(t, { compression: false })
    for (const encoding of ['gzip', 'deflate', 'br']) {
      const answer = await rawCall(off.base, '/api/m2m/v1/accounts/x', { 'accept-encoding': encoding })
      t.equal(answer.status, 401)
      t.equal(answer.headers['content-encoding'], undefined, `compression: false leaves ${encoding} answers plain`)
      t.match(JSON.parse(answer.bytes.toString('utf8')), { fault: { code: '900902' } })
    }
  }
)

t.test(
  'control routes: expire or invalidate sessions, expire the OAuth token, fail or hang logins, counters',
  async (t) => {
    const { sim, base } = await startSimulator(t)
    const control = async (path: string, json?: unknown): Promise<Response> =>
      fetch(
        `${base}/simulator/control${path}`,
        json === undefined
          ? { method: path === '/stats' ? 'GET' : 'POST' }
          : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(json) }
      )
    const bearer = await accessToken(base)
    const first = await sessionToken(base, bearer)
    const second = await sessionToken(base, bearer)
    const account = async (session: string, withBearer = bearer): Promise<Response> =>
      call(base, `/api/m2m/v1/accounts/${DEMO_ACCOUNT_NAME}`, { bearer: withBearer, session })

    const stats = await control('/stats')
    t.equal(stats.status, 200, 'no token needed')
    t.match(await stats.json(), {
      logins: 2,
      tokenRequests: 1,
      locked: false,
      activeSessions: 2,
      pendingLoginFaults: 0
    })

    const invalidated = await control('/sessions/invalidate', { sessionToken: first })
    t.same(await invalidated.json(), { invalidated: true })
    await expectUwsError(t, await account(first), 400, 'UnifiedWebService.INPUT_INVALID.SessionToken.Invalid')
    t.equal((await account(second)).status, 200, 'the other session lives on')
    t.equal((await control('/sessions/invalidate', { sessionToken: first })).status, 404, 'no longer live')
    t.equal((await control('/sessions/invalidate', {})).status, 400)

    t.same(await control('/sessions/expire').then(async (r) => await r.json()), { expired: 1 })
    await expectUwsError(t, await account(second), 400, 'UnifiedWebService.REQUEST_FAILED.SessionToken.Expired')

    t.same(await control('/oauth/expire').then(async (r) => await r.json()), { expired: true })
    await expectFault(t, await login(base, bearer), '900901', 'Invalid Credentials')
    const newBearer = await accessToken(base)
    t.not(newBearer, bearer)

    t.same(await control('/logins/fail', { count: 2, mode: 'status', status: 503 }).then(async (r) => await r.json()), {
      queued: 2,
      pendingLoginFaults: 2
    })
    await expectUwsError(t, await login(base, newBearer), 503, 'UnifiedWebService.INTERNAL_ERROR')
    await expectUwsError(t, await login(base, newBearer), 503, 'UnifiedWebService.INTERNAL_ERROR')
    t.equal((await login(base, newBearer)).status, 200)
    await control('/logins/fail', { status: 429 })
    await expectUwsError(t, await login(base, newBearer), 429, 'UnifiedWebService.REQUEST_FAILED.SimulatedFault')
    await control('/logins/fail', { mode: 'status', status: 401 })
    await expectFault(t, await login(base, newBearer), '900901', 'Invalid Credentials')
    await control('/logins/fail', { count: 1, mode: 'reject' })
    await expectUwsError(t, await login(base, newBearer), 400, 'UnifiedWebService.REQUEST_FAILED.InvalidCredentials')
    t.equal(sim.stats.consecutiveFailedLogins, 1, 'an injected rejection counts toward the lockout')
    await control('/logins/fail', { mode: 'hang' })
    await t.rejects(
      call(base, '/api/m2m/v1/session/login', {
        bearer: newBearer,
        json: { username: DEMO_CREDENTIALS.username, password: DEMO_CREDENTIALS.password },
        signal: AbortSignal.timeout(300)
      }),
      { name: 'TimeoutError' },
      'hang never answers'
    )
    await control('/logins/fail', { mode: 'reset' })
    await t.rejects(login(base, newBearer), 'reset destroys the connection')

    for (const body of [
      { count: -1 },
      { count: 1.5 },
      { count: 1001 },
      { mode: 'explode' },
      { status: 200 },
      { status: '500' }
    ]) {
      t.equal((await control('/logins/fail', body)).status, 400, JSON.stringify(body))
    }
    t.equal((await control('/logins/fail')).status, 200, 'no body: one 500')
    await expectUwsError(t, await login(base, newBearer), 500, 'UnifiedWebService.INTERNAL_ERROR')

    sim.failNextLogins(5, 'reject')
    for (let i = 0; i < 5; i++) await login(base, newBearer)
    t.equal(sim.locked, true)
    t.same(await control('/unlock').then(async (r) => await r.json()), { locked: false })
    t.equal((await login(base, newBearer)).status, 200)
    t.match(await control('/stats').then(async (r) => await r.json()), {
      locked: false,
      pendingLoginFaults: 0,
      logins: 4,
      activeSessions: 2
    })

    t.throws(() => sim.failNextLogins(1, { status: 302 }), RangeError)
    const viaApi = await call(base, '/api/m2m/v1/simulator/control/stats', { bearer: newBearer })
    t.equal(viaApi.status, 404, 'nothing under /api/ reaches the control routes')
    await viaApi.arrayBuffer()
  }
)
