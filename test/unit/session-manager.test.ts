// Unit tests of the two-token session lifecycle with a fake clock and a fake ThingSpace auth API: single flight, idle
// expiry, OAuth refresh, lockout guard, backoff.
import { randomBytes } from 'node:crypto'
import t, { type Test } from 'tap'
import { MockAgent } from 'undici'
import {
  LOGIN_PATH,
  OAUTH_TOKEN_PATH,
  retryAfterSecondsOf,
  ThingSpaceAuthClient,
  type OAuthGrant,
  type ThingSpaceAuthApi
} from '../../src/session/auth-client.js'
import { BACKOFF_BASE_MS, BACKOFF_MAX_MS, RETRY_AFTER_MAX_MS } from '../../src/session/backoff.js'
import {
  AuthUnavailableError,
  failureCause,
  UpstreamAuthError,
  type FailureCause,
  type UnavailableReason
} from '../../src/session/errors.js'
import { LoginGuard } from '../../src/session/login-guard.js'
import { OAUTH_EXPIRY_MARGIN_MS, OAuthTokenCache } from '../../src/session/oauth-token.js'
import {
  fingerprint,
  idleMarginMs,
  REFUSED_RENEWAL_HOLD_MS,
  SessionManager,
  type LoginOutcome,
  type RenewalReason,
  type SessionCredentials,
  type UpstreamTokens
} from '../../src/session/session-manager.js'
import { FakeClock, TimerClock } from '../helpers/fake-clock.js'

const START_MS = Date.UTC(2025, 0, 1, 12, 0, 0)
const CREDENTIALS: SessionCredentials = {
  username: 'uws-user@example.com',
  password: 'Pw-initial-5f0c2e91',
  clientId: 'app-key-7d21aa',
  clientSecret: 'app-secret-c3b9e4f0'
}

interface Deferred<T> {
  promise: Promise<T>
  resolve: (value: T) => void
  reject: (error: unknown) => void
}

function deferred<T> (): Deferred<T> {
  let resolve!: (value: T) => void
  let reject!: (error: unknown) => void
  const promise = new Promise<T>((_resolve, _reject) => {
    resolve = _resolve
    reject = _reject
  })
  return { promise, resolve, reject }
}

/** Lets pending promise chains run (no timers involved). */
async function flush (): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise<void>((resolve) => setImmediate(resolve))
}

function secretToken (kind: string, n: number): string {
  return `${kind}-${n}-${randomBytes(12).toString('hex')}`
}

/** A ThingSpace auth API that records calls; handlers can be swapped to delay or fail. */
class FakeApi implements ThingSpaceAuthApi {
  readonly oauthCalls: Array<{ clientId: string; clientSecret: string }> = []
  readonly loginCalls: Array<{ oauthToken: string; username: string; password: string }> = []
  readonly logoutCalls: Array<{ oauthToken: string; sessionToken: string }> = []
  readonly issuedOAuth: string[] = []
  readonly issuedSessions: string[] = []
  oauthLifetimeSeconds = 3600

  oauthHandler: (call: number) => Promise<OAuthGrant> = async () => this.issueOAuth()
  loginHandler: (call: number) => Promise<string> = async () => this.issueSession()

  issueOAuth (expiresInSeconds = this.oauthLifetimeSeconds): OAuthGrant {
    const accessToken = secretToken('oauth', this.issuedOAuth.length + 1)
    this.issuedOAuth.push(accessToken)
    return { accessToken, expiresInSeconds }
  }

  issueSession (): string {
    const token = secretToken('session', this.issuedSessions.length + 1)
    this.issuedSessions.push(token)
    return token
  }

  async fetchOAuthToken (clientId: string, clientSecret: string): Promise<OAuthGrant> {
    this.oauthCalls.push({ clientId, clientSecret })
    return await this.oauthHandler(this.oauthCalls.length)
  }

  async login (oauthToken: string, username: string, password: string): Promise<string> {
    this.loginCalls.push({ oauthToken, username, password })
    return await this.loginHandler(this.loginCalls.length)
  }

  async logout (oauthToken: string, sessionToken: string): Promise<void> {
    this.logoutCalls.push({ oauthToken, sessionToken })
  }

  readonly resetCalls: Array<{ oauthToken: string; sessionToken: string; oldPassword: string }> = []
  async resetPassword (oauthToken: string, sessionToken: string, oldPassword: string): Promise<string> {
    this.resetCalls.push({ oauthToken, sessionToken, oldPassword })
    return `Generated${this.resetCalls.length}x`
  }
}

interface Recorded {
  logins: Array<{ outcome: LoginOutcome; consecutiveRejections: number; message?: string; cause?: FailureCause }>
  renewals: RenewalReason[]
  oauthFetches: string[]
  oauthCauses: FailureCause[]
  logoutFailures: Array<{ message: string; cause: FailureCause; replaced: boolean }>
  backgroundRetries: number[]
  warnings: string[]
  infos: string[]
}

interface Harness {
  manager: SessionManager
  api: FakeApi
  clock: FakeClock
  guard: LoginGuard
  dir: string
  events: Recorded
}

interface SetupOptions {
  api?: FakeApi
  clock?: FakeClock
  dir?: string
  maxFailures?: number
  sessionIdleSeconds?: number
  credentials?: SessionCredentials
}

function setup (t: Test, options: SetupOptions = {}): Harness {
  const api = options.api ?? new FakeApi()
  const clock = options.clock ?? new FakeClock(START_MS)
  const dir = options.dir ?? t.testdir({})
  const credentials = options.credentials ?? CREDENTIALS
  const guard = LoginGuard.open(dir, options.maxFailures ?? 2, credentials)
  const events: Recorded = {
    logins: [],
    renewals: [],
    oauthFetches: [],
    oauthCauses: [],
    logoutFailures: [],
    backgroundRetries: [],
    warnings: [],
    infos: []
  }
  const manager = new SessionManager({
    api,
    credentials,
    guard,
    sessionIdleSeconds: options.sessionIdleSeconds ?? 1200,
    clock,
    publish: (event) => {
      switch (event.type) {
        case 'login': {
          const { type, ...detail } = event
          events.logins.push(detail)
          return
        }
        case 'renewal':
          events.renewals.push(event.reason)
          return
        case 'oauth-fetch':
          events.oauthFetches.push(event.outcome)
          if (event.cause !== undefined) events.oauthCauses.push(event.cause)
          return
        case 'logout-failed':
          events.logoutFailures.push({ message: event.message, cause: event.cause, replaced: event.replaced })
          return
        case 'background-retry':
          events.backgroundRetries.push(event.delayMs)
          return
        case 'warning':
          events.warnings.push(event.message)
          return
        case 'info':
          events.infos.push(event.message)
      }
    }
  })
  return { manager, api, clock, guard, dir, events }
}

/** Awaits `promise`, which must reject with AuthUnavailableError, and returns the error. */
async function unavailable (promise: Promise<unknown>): Promise<AuthUnavailableError> {
  try {
    await promise
  } catch (error) {
    if (error instanceof AuthUnavailableError) return error
    throw error
  }
  throw new Error('expected AuthUnavailableError, got tokens')
}

async function expectUnavailable (
  t: Test,
  promise: Promise<unknown>,
  reason: UnavailableReason,
  message?: string
): Promise<AuthUnavailableError> {
  const error = await unavailable(promise)
  t.equal(error.reason, reason, message ?? `reason ${reason}`)
  t.ok(error.retryAfterSeconds >= 1, 'Retry-After is at least one second')
  return error
}

function sessionTtlMs (idleSeconds: number): number {
  return idleSeconds * 1000 - idleMarginMs(idleSeconds)
}

t.test('idle margin: sessions are dropped before the platform would expire them', async (t) => {
  for (const idle of [10, 60, 600, 1200, 86400]) {
    const margin = idleMarginMs(idle)
    t.ok(margin > 0, `margin > 0 for ${idle} s`)
    t.ok(margin < (idle * 1000) / 2, `margin leaves most of the ${idle} s`)
  }
})

t.test('startSession logs in once and fetches OAuth once; tokens are then synchronous', async (t) => {
  const { manager, api, events } = setup(t)
  t.equal(manager.currentTokens(), undefined, 'no tokens before start')
  await manager.startSession()
  t.equal(api.oauthCalls.length, 1)
  t.same(api.oauthCalls[0], { clientId: CREDENTIALS.clientId, clientSecret: CREDENTIALS.clientSecret })
  t.equal(api.loginCalls.length, 1)
  t.same(
    api.loginCalls[0],
    { oauthToken: api.issuedOAuth[0], username: CREDENTIALS.username, password: CREDENTIALS.password },
    'login sent with the OAuth bearer'
  )
  const tokens = manager.currentTokens()
  t.same(tokens, { oauthToken: api.issuedOAuth[0], sessionToken: api.issuedSessions[0] })
  t.same(await manager.acquireTokens(), tokens)
  for (let i = 0; i < 50; i++) manager.currentTokens()
  t.equal(api.loginCalls.length, 1, 'using the tokens does not log in again')
  t.equal(api.oauthCalls.length, 1)
  t.ok(manager.ready)
  t.same(
    events.logins.map((e) => e.outcome),
    ['success']
  )
  t.same(events.oauthFetches, ['success'])
  t.same(events.renewals, [], 'the first login is not a renewal')
})

t.test('currentTokens expires after the idle TTL without use', async (t) => {
  const { manager, api, clock, events } = setup(t, { sessionIdleSeconds: 1200 })
  await manager.startSession()
  const ttl = sessionTtlMs(1200)
  t.ok(ttl < 1200 * 1000, "the TTL is below the platform's 20 minutes")
  clock.advance(ttl - 1)
  t.ok(manager.currentTokens(), 'still valid just before the TTL (this use renews it)')
  clock.advance(ttl + 1)
  t.equal(manager.currentTokens(), undefined, 'gone after a full TTL without use')
  t.equal(manager.snapshot().state, 'none')
  const tokens = await manager.acquireTokens()
  t.equal(api.loginCalls.length, 2, 'logs in before sending instead of using a dead token')
  t.equal(tokens.sessionToken, api.issuedSessions[1])
  t.equal(api.oauthCalls.length, 1, 'the OAuth token was still valid')
  t.same(events.renewals, ['idle'])
  t.equal(manager.snapshot().renewals, 1)
})

t.test('idle expiry with a short idle time', async (t) => {
  const { manager, api, clock } = setup(t, { sessionIdleSeconds: 60 })
  await manager.startSession()
  const ttl = sessionTtlMs(60)
  t.ok(ttl < 60_000)
  clock.advance(ttl + 1)
  t.equal(manager.currentTokens(), undefined)
  await manager.acquireTokens()
  t.equal(api.loginCalls.length, 2)
})

t.test('sliding expiry: regular use keeps the session', async (t) => {
  const { manager, api, clock } = setup(t, { sessionIdleSeconds: 1200 })
  await manager.startSession()
  const first = manager.currentTokens()
  const step = sessionTtlMs(1200) - 1000
  for (let i = 0; i < 5; i++) {
    clock.advance(step)
    // The OAuth token may be refreshed meanwhile (its hour is shorter than 5 steps): compare the session only.
    const tokens = manager.currentTokens() ?? (await manager.acquireTokens())
    t.equal(tokens.sessionToken, first?.sessionToken, `still the same session after ${i + 1} steps`)
    await flush()
  }
  t.ok(5 * step > 1200 * 1000, 'more than the idle time has passed in total')
  t.equal((await manager.acquireTokens()).sessionToken, first?.sessionToken)
  t.equal(api.loginCalls.length, 1)
  t.match(manager.snapshot(), { state: 'active', logins: 1, renewals: 0 })
})

t.test('300 concurrent acquireTokens while the login is pending: exactly one login', async (t) => {
  const { manager, api } = setup(t)
  const login = deferred<string>()
  api.loginHandler = async () => await login.promise
  const calls = Array.from({ length: 300 }, async () => await manager.acquireTokens())
  await flush()
  t.equal(api.loginCalls.length, 1)
  t.equal(api.oauthCalls.length, 1)
  t.equal(manager.snapshot().state, 'logging-in')
  login.resolve('session-shared-0b5e7a')
  const results = await Promise.all(calls)
  t.equal(results.length, 300)
  t.ok(
    results.every((r) => r.sessionToken === 'session-shared-0b5e7a' && r.oauthToken === api.issuedOAuth[0]),
    'every caller gets the one session'
  )
  t.equal(api.loginCalls.length, 1)
  t.equal(api.oauthCalls.length, 1)
})

t.test('300 concurrent acquireTokens while the OAuth fetch is pending: one fetch, one login', async (t) => {
  const { manager, api } = setup(t)
  const grant = deferred<OAuthGrant>()
  api.oauthHandler = async () => await grant.promise
  const calls = Array.from({ length: 300 }, async () => await manager.acquireTokens())
  await flush()
  t.equal(api.oauthCalls.length, 1)
  t.equal(api.loginCalls.length, 0, 'no login before the bearer exists')
  grant.resolve({ accessToken: 'oauth-shared-9c1d', expiresInSeconds: 3600 })
  const results = await Promise.all(calls)
  t.ok(results.every((r) => r.oauthToken === 'oauth-shared-9c1d' && r.sessionToken === api.issuedSessions[0]))
  t.equal(api.oauthCalls.length, 1)
  t.equal(api.loginCalls.length, 1)
})

t.test('tokensAfterRejection(session) from 300 callers: one login, all get the new token', async (t) => {
  const { manager, api, events } = setup(t)
  await manager.startSession()
  const stale = manager.currentTokens() as UpstreamTokens
  const login = deferred<string>()
  api.loginHandler = async () => await login.promise
  const calls = Array.from({ length: 300 }, async () => await manager.tokensAfterRejection(stale, 'session', 'expired'))
  await flush()
  t.equal(api.loginCalls.length, 2, 'one re-login for all 300')
  login.resolve('session-renewed-71ac')
  const results = await Promise.all(calls)
  t.ok(
    results.every((r) => r?.sessionToken === 'session-renewed-71ac'),
    'all get the new session token'
  )
  t.ok(
    results.every((r) => r?.oauthToken === stale.oauthToken),
    'the OAuth token is kept'
  )
  t.equal(api.loginCalls.length, 2)
  t.equal(api.oauthCalls.length, 1)
  t.same(events.renewals, ['expired'])

  const late = await manager.tokensAfterRejection(stale, 'session', 'expired')
  t.equal(late?.sessionToken, 'session-renewed-71ac', 'a caller holding an older token gets the current one')
  t.equal(api.loginCalls.length, 2, 'without another login')
  t.equal(manager.snapshot().renewals, 1)
})

t.test('tokensAfterRejection(session) records the reason and renews once per stale token', async (t) => {
  const { manager, api, clock, events } = setup(t)
  await manager.startSession()
  const first = manager.currentTokens() as UpstreamTokens
  const second = (await manager.tokensAfterRejection(first, 'session', 'invalid')) as UpstreamTokens
  t.not(second.sessionToken, first.sessionToken)
  clock.advance(REFUSED_RENEWAL_HOLD_MS) // a renewed session refused at once is held (tested below)
  const third = (await manager.tokensAfterRejection(second, 'session', 'expired')) as UpstreamTokens
  t.not(third.sessionToken, second.sessionToken)
  t.equal(
    (await manager.tokensAfterRejection(first, 'session'))?.sessionToken,
    third.sessionToken,
    'the oldest token maps to the current one'
  )
  t.equal(api.loginCalls.length, 3)
  t.same(events.renewals, ['invalid', 'expired'])
})

t.test('tokensAfterRejection(oauth) from 300 callers: one OAuth fetch, no login', async (t) => {
  const { manager, api, events } = setup(t)
  await manager.startSession()
  const stale = manager.currentTokens() as UpstreamTokens
  const grant = deferred<OAuthGrant>()
  api.oauthHandler = async () => await grant.promise
  const calls = Array.from({ length: 300 }, async () => await manager.tokensAfterRejection(stale, 'oauth'))
  await flush()
  t.equal(api.oauthCalls.length, 2, 'one fetch for all 300')
  grant.resolve({ accessToken: 'oauth-renewed-3e8f', expiresInSeconds: 3600 })
  const results = await Promise.all(calls)
  t.ok(results.every((r) => r?.oauthToken === 'oauth-renewed-3e8f' && r.sessionToken === stale.sessionToken))
  t.equal(api.oauthCalls.length, 2)
  t.equal(api.loginCalls.length, 1, 'the session is kept')
  const late = await manager.tokensAfterRejection(stale, 'oauth')
  t.equal(late?.oauthToken, 'oauth-renewed-3e8f', 'a late caller with the old bearer gets the new one')
  t.equal(api.oauthCalls.length, 2, 'without another fetch')
  t.same(manager.currentTokens(), late)
  t.same(events.renewals, [], 'an OAuth renewal is not a session renewal')
})

t.test('OAuth expiry: the token is not sent past expires_in and is fetched again', async (t) => {
  const { manager, api, clock } = setup(t, { sessionIdleSeconds: 86400 })
  api.oauthLifetimeSeconds = 600
  await manager.startSession()
  const first = manager.currentTokens() as UpstreamTokens
  clock.advance(600 * 1000 - OAUTH_EXPIRY_MARGIN_MS + 1)
  t.equal(manager.currentTokens(), undefined, 'not usable any more near expiry')
  const tokens = await manager.acquireTokens()
  t.equal(api.oauthCalls.length, 2)
  t.not(tokens.oauthToken, first.oauthToken)
  t.equal(tokens.oauthToken, api.issuedOAuth[1])
  t.equal(tokens.sessionToken, first.sessionToken, 'the session is kept')
  t.equal(api.loginCalls.length, 1)
})

t.test('OAuth expiry seen by 300 concurrent callers: one fetch', async (t) => {
  const { manager, api, clock } = setup(t, { sessionIdleSeconds: 86400 })
  await manager.startSession()
  clock.advance(3600 * 1000)
  const grant = deferred<OAuthGrant>()
  api.oauthHandler = async () => await grant.promise
  const calls = Array.from({ length: 300 }, async () => await manager.acquireTokens())
  await flush()
  t.equal(api.oauthCalls.length, 2)
  grant.resolve({ accessToken: 'oauth-next-hour', expiresInSeconds: 3600 })
  const results = await Promise.all(calls)
  t.ok(results.every((r) => r.oauthToken === 'oauth-next-hour'))
  t.equal(api.oauthCalls.length, 2)
  t.equal(api.loginCalls.length, 1)
})

t.test('OAuth refresh ahead of expiry happens in the background', async (t) => {
  const { manager, api, clock } = setup(t, { sessionIdleSeconds: 86400 })
  await manager.startSession()
  const first = manager.currentTokens() as UpstreamTokens
  clock.advance(3600 * 1000 - OAUTH_EXPIRY_MARGIN_MS - 60_000)
  const grant = deferred<OAuthGrant>()
  api.oauthHandler = async () => await grant.promise
  t.same(manager.currentTokens(), first, 'the current token is still served while refreshing')
  await flush()
  t.equal(api.oauthCalls.length, 2, 'a refresh started ahead of expiry')
  manager.currentTokens()
  manager.currentTokens()
  t.equal(api.oauthCalls.length, 2, 'only one refresh at a time')
  grant.resolve({ accessToken: 'oauth-refreshed', expiresInSeconds: 3600 })
  await flush()
  t.equal(manager.currentTokens()?.oauthToken, 'oauth-refreshed')
})

t.test('a reissued OAuth token is not fetched again in a loop', async (t) => {
  const { manager, api, clock } = setup(t, { sessionIdleSeconds: 86400 })
  // Like ThingSpace: the same token until an hour after its first issue, with the remaining lifetime.
  let current: { token: string; issuedAt: number } | undefined
  api.oauthHandler = async () => {
    if (current === undefined || clock.now() - current.issuedAt >= 3600 * 1000) {
      current = { token: secretToken('oauth', api.oauthCalls.length), issuedAt: clock.now() }
    }
    return {
      accessToken: current.token,
      expiresInSeconds: Math.floor((current.issuedAt + 3600 * 1000 - clock.now()) / 1000)
    }
  }
  await manager.startSession()
  const firstToken = manager.currentTokens()?.oauthToken
  // Walk through the hour in 10 s steps, using the tokens at each step.
  const changedAt: number[] = []
  for (let elapsed = 0; elapsed < 3600 * 1000 - 10_000; elapsed += 10_000) {
    clock.advance(10_000)
    const tokens = manager.currentTokens() ?? (await manager.acquireTokens())
    await flush()
    if (tokens.oauthToken !== firstToken) changedAt.push(elapsed)
  }
  t.same(changedAt, [], 'the same token is used all hour')
  t.ok(api.oauthCalls.length <= 3, `at most a couple of fetches during the hour (got ${api.oauthCalls.length})`)
  const beforeExpiry = api.oauthCalls.length
  clock.advance(20_000)
  const after = manager.currentTokens() ?? (await manager.acquireTokens())
  await flush()
  t.not(after.oauthToken, firstToken, 'a new token after the hour')
  t.ok(api.oauthCalls.length <= beforeExpiry + 1, 'one fetch for the new token')
  for (let i = 0; i < 100; i++) {
    clock.advance(1000)
    manager.currentTokens()
    await flush()
  }
  t.ok(api.oauthCalls.length <= beforeExpiry + 1, 'and no fetches afterwards')
})

t.test('rejected logins: at most maxLoginFailures attempts, however many requests', async (t) => {
  const api = new FakeApi()
  api.loginHandler = async () => {
    throw new UpstreamAuthError(
      'rejected',
      'session login answered 400 UnifiedWebService.REQUEST_FAILED.Unauthorized',
      400
    )
  }
  const first = setup(t, { api, maxFailures: 2 })
  const { manager, clock, events } = first
  await expectUnavailable(t, manager.acquireTokens(), 'credentials-rejected')
  t.equal(api.loginCalls.length, 1)
  t.equal(manager.guardEngaged, false)
  clock.advance(BACKOFF_MAX_MS)
  await expectUnavailable(t, manager.acquireTokens(), 'credentials-rejected')
  t.equal(api.loginCalls.length, 2)
  t.ok(manager.guardEngaged)
  for (let round = 0; round < 20; round++) {
    clock.advance(BACKOFF_MAX_MS * 10)
    const results = await Promise.allSettled(Array.from({ length: 15 }, async () => await manager.acquireTokens()))
    t.ok(
      results.every(
        (r) =>
          r.status === 'rejected' &&
          r.reason instanceof AuthUnavailableError &&
          r.reason.reason === 'credentials-rejected'
      ),
      `round ${round}: all refused with credentials-rejected`
    )
  }
  await expectUnavailable(t, manager.startSession(), 'credentials-rejected')
  await expectUnavailable(
    t,
    manager.tokensAfterRejection({ oauthToken: 'x', sessionToken: 'y' }, 'session'),
    'credentials-rejected'
  )
  t.equal(api.loginCalls.length, 2, 'no login after the guard engaged')
  t.equal(manager.snapshot().state, 'rejected')
  t.equal(manager.snapshot().consecutiveLoginFailures, 2)
  t.notOk(manager.ready)
  t.same(
    events.logins.map((e) => [e.outcome, e.consecutiveRejections]),
    [
      ['rejected', 1],
      ['rejected', 2]
    ]
  )

  // A restart (new guard, new manager, same state directory) keeps the count.
  const restartedApi = new FakeApi()
  const restarted = setup(t, { api: restartedApi, dir: first.dir, clock, maxFailures: 2 })
  t.ok(restarted.manager.guardEngaged)
  await expectUnavailable(t, restarted.manager.startSession(), 'credentials-rejected')
  await expectUnavailable(t, restarted.manager.acquireTokens(), 'credentials-rejected')
  t.equal(restartedApi.loginCalls.length, 0, 'no login after the restart')
})

t.test('a rejection count survives a restart part way', async (t) => {
  const dir = t.testdir({})
  const clock = new FakeClock(START_MS)
  const rejecting = async (): Promise<string> => {
    throw new UpstreamAuthError('rejected', 'session login answered 401', 401)
  }
  const apiA = new FakeApi()
  apiA.loginHandler = rejecting
  await expectUnavailable(
    t,
    setup(t, { api: apiA, dir, clock, maxFailures: 2 }).manager.acquireTokens(),
    'credentials-rejected'
  )
  const apiB = new FakeApi()
  apiB.loginHandler = rejecting
  const second = setup(t, { api: apiB, dir, clock, maxFailures: 2 })
  await expectUnavailable(t, second.manager.startSession(), 'credentials-rejected')
  t.equal(apiB.loginCalls.length, 1)
  clock.advance(BACKOFF_MAX_MS * 2)
  await expectUnavailable(t, second.manager.acquireTokens(), 'credentials-rejected')
  t.equal(apiA.loginCalls.length + apiB.loginCalls.length, 2, 'two attempts in total across the restart')
})

t.test('a success between rejections resets the count', async (t) => {
  const { manager, api, clock, guard } = setup(t, { maxFailures: 2 })
  let reject = true
  api.loginHandler = async () => {
    if (reject) throw new UpstreamAuthError('rejected', 'answered 400', 400)
    return api.issueSession()
  }
  await unavailable(manager.acquireTokens())
  t.equal(guard.consecutiveRejections, 1)
  clock.advance(BACKOFF_MAX_MS)
  reject = false
  await manager.acquireTokens()
  t.equal(guard.consecutiveRejections, 0)
  reject = true
  await unavailable(manager.tokensAfterRejection(manager.currentTokens() as UpstreamTokens, 'session'))
  t.equal(guard.consecutiveRejections, 1)
  t.notOk(manager.guardEngaged)
})

/** A wall clock that can be set back (NTP, an operator) while the process's monotonic clock goes on. */
class SteppedClock extends FakeClock {
  private monotonic = 0
  readonly monotonicNow = (): number => this.monotonic
  override advance (ms: number): void {
    super.advance(ms)
    this.monotonic += ms
  }

  setWallClockBack (ms: number): void {
    this.ms -= ms
  }
}

t.test('a wall clock set back during the login backoff does not lengthen it', async (t) => {
  const clock = new SteppedClock(START_MS)
  const { manager, api } = setup(t, { clock })
  let failing = true
  api.loginHandler = async () => {
    if (failing) throw new UpstreamAuthError('unavailable', 'session login answered 503', 503)
    return api.issueSession()
  }
  await expectUnavailable(t, manager.acquireTokens(), 'upstream-unavailable')
  failing = false
  clock.setWallClockBack(3_600_000)
  const during = await expectUnavailable(t, manager.acquireTokens(), 'upstream-unavailable', 'still backing off')
  t.ok(during.retryAfterSeconds <= BACKOFF_BASE_MS / 1000, `Retry-After ${during.retryAfterSeconds} s, not an hour`)
  clock.advance(BACKOFF_BASE_MS + 1)
  await manager.acquireTokens()
  t.equal(api.loginCalls.length, 2, 'the login goes once the backoff has passed')
})

t.test('unavailable errors back off exponentially and never engage the guard', async (t) => {
  const { manager, api, clock, guard } = setup(t, { maxFailures: 2 })
  api.loginHandler = async () => {
    throw new UpstreamAuthError('unavailable', 'session login answered 503', 503)
  }
  await expectUnavailable(t, manager.acquireTokens(), 'upstream-unavailable')
  t.equal(api.loginCalls.length, 1)
  await expectUnavailable(
    t,
    manager.acquireTokens(),
    'upstream-unavailable',
    'immediately again: refused by the backoff'
  )
  t.equal(api.loginCalls.length, 1, 'without calling login')
  t.equal(manager.snapshot().state, 'backing-off')
  clock.advance(BACKOFF_BASE_MS + 1)
  await expectUnavailable(t, manager.acquireTokens(), 'upstream-unavailable')
  t.equal(api.loginCalls.length, 2, 'after the backoff it tries again')
  clock.advance(BACKOFF_BASE_MS + 1)
  await unavailable(manager.acquireTokens())
  t.equal(api.loginCalls.length, 2, 'the second backoff is longer than the first')
  clock.advance(BACKOFF_BASE_MS)
  await unavailable(manager.acquireTokens())
  t.equal(api.loginCalls.length, 3)
  for (let i = 0; i < 20; i++) {
    clock.advance(BACKOFF_MAX_MS + 1)
    await unavailable(manager.acquireTokens())
  }
  t.equal(api.loginCalls.length, 23, 'backoff is capped: one attempt per cap interval')
  t.equal(guard.consecutiveRejections, 0)
  t.notOk(manager.guardEngaged)
  const error = await unavailable(manager.acquireTokens())
  t.ok(error.retryAfterSeconds <= BACKOFF_MAX_MS / 1000, 'Retry-After within the cap')
  api.loginHandler = async () => api.issueSession()
  clock.advance(BACKOFF_MAX_MS + 1)
  const tokens = await manager.acquireTokens()
  t.equal(tokens.sessionToken, api.issuedSessions[0])
  t.ok(manager.ready)
})

t.test('unknown-outcome failures count toward the guard', async (t) => {
  const { manager, api, clock, guard } = setup(t, { maxFailures: 2 })
  api.loginHandler = async () => {
    throw new UpstreamAuthError('unknown-outcome', 'session login failed: UND_ERR_SOCKET')
  }
  await expectUnavailable(t, manager.acquireTokens(), 'upstream-unavailable')
  t.equal(guard.consecutiveRejections, 1)
  clock.advance(BACKOFF_MAX_MS)
  await unavailable(manager.acquireTokens())
  t.equal(guard.consecutiveRejections, 2)
  t.ok(manager.guardEngaged)
  clock.advance(BACKOFF_MAX_MS * 5)
  await expectUnavailable(t, manager.acquireTokens(), 'credentials-rejected')
  t.equal(api.loginCalls.length, 2)
})

t.test('a non-UpstreamAuthError from login is not counted', async (t) => {
  const { manager, api, guard } = setup(t, { maxFailures: 2 })
  api.loginHandler = async () => {
    throw new TypeError('bug in the client')
  }
  await t.rejects(manager.acquireTokens(), TypeError)
  t.equal(guard.consecutiveRejections, 0)
})

t.test('oauth-invalid at login: one OAuth refetch and one retry, not counted', async (t) => {
  const { manager, api, guard } = setup(t, { maxFailures: 2 })
  api.loginHandler = async (call) => {
    if (call === 1) throw new UpstreamAuthError('oauth-invalid', 'session login answered 401 900901', 401, '900901')
    return api.issueSession()
  }
  await manager.startSession()
  t.equal(api.oauthCalls.length, 2, 'one refetch')
  t.equal(api.loginCalls.length, 2, 'one retry')
  t.equal(api.loginCalls[1]?.oauthToken, api.issuedOAuth[1], 'the retry uses the new bearer')
  t.equal(guard.consecutiveRejections, 0)
  t.same(manager.currentTokens(), { oauthToken: api.issuedOAuth[1], sessionToken: api.issuedSessions[0] })
})

t.test('oauth-invalid twice at login: gives up after one retry, still not counted', async (t) => {
  const { manager, api, clock, guard } = setup(t, { maxFailures: 2 })
  api.loginHandler = async () => {
    throw new UpstreamAuthError('rejected', 'answered 400', 400)
  }
  await unavailable(manager.acquireTokens())
  t.equal(guard.consecutiveRejections, 1)
  clock.advance(BACKOFF_MAX_MS)
  api.loginHandler = async () => {
    throw new UpstreamAuthError('oauth-invalid', 'session login answered 401 900901', 401, '900901')
  }
  await expectUnavailable(t, manager.acquireTokens(), 'upstream-unavailable')
  t.equal(api.loginCalls.length, 3, 'one attempt and one retry')
  t.equal(api.oauthCalls.length, 2, 'one refetch')
  t.equal(guard.consecutiveRejections, 1, 'the earlier rejection still counts, the oauth failures do not')
  t.notOk(manager.guardEngaged)
})

t.test('useCredentials with a new password releases the guard', async (t) => {
  const { manager, api, clock, guard } = setup(t, { maxFailures: 2 })
  api.loginHandler = async (call) => {
    const last = api.loginCalls[call - 1]
    if (last?.password === CREDENTIALS.password) throw new UpstreamAuthError('rejected', 'answered 400', 400)
    return api.issueSession()
  }
  await unavailable(manager.acquireTokens())
  clock.advance(BACKOFF_MAX_MS)
  await unavailable(manager.acquireTokens())
  t.ok(manager.guardEngaged)
  manager.useCredentials({ ...CREDENTIALS })
  t.ok(manager.guardEngaged, 'the same credentials do not release it')
  await expectUnavailable(t, manager.acquireTokens(), 'credentials-rejected')
  t.equal(api.loginCalls.length, 2)
  manager.useCredentials({ ...CREDENTIALS, password: 'Pw-rotated-aa19c0' })
  t.notOk(manager.guardEngaged)
  t.equal(guard.consecutiveRejections, 0)
  const tokens = await manager.acquireTokens()
  t.equal(api.loginCalls.length, 3, 'logs in at once, without waiting for the backoff')
  t.equal(api.loginCalls[2]?.password, 'Pw-rotated-aa19c0')
  t.equal(tokens.sessionToken, api.issuedSessions[0])
  t.equal(api.oauthCalls.length, 1, 'same app key: the OAuth token is kept')
})

t.test('useCredentials with a new app secret fetches a new OAuth token with it', async (t) => {
  const { manager, api, clock } = setup(t, { sessionIdleSeconds: 86400 })
  await manager.startSession()
  manager.useCredentials({ ...CREDENTIALS, clientSecret: 'app-secret-new-00ff' })
  clock.advance(1)
  const tokens = await manager.acquireTokens()
  t.equal(api.oauthCalls.length, 2)
  t.same(api.oauthCalls[1], { clientId: CREDENTIALS.clientId, clientSecret: 'app-secret-new-00ff' })
  t.equal(tokens.oauthToken, api.issuedOAuth[1])
  t.equal(api.loginCalls.length, 1, 'same UWS login: no new session')
})

t.test('endSession logs out with the session token, then reports there is none', async (t) => {
  const { manager, api } = setup(t)
  await manager.startSession()
  const tokens = manager.currentTokens() as UpstreamTokens
  t.equal(await manager.endSession(), true)
  t.same(api.logoutCalls, [{ oauthToken: tokens.oauthToken, sessionToken: tokens.sessionToken }])
  t.equal(manager.currentTokens(), undefined)
  t.equal(await manager.endSession(), false)
  t.equal(api.logoutCalls.length, 1, 'no second logout')
  const next = await manager.acquireTokens()
  t.not(next.sessionToken, tokens.sessionToken, 'the next request logs in again')
})

t.test('endSession logs out upstream even when the cached OAuth token has expired', async (t) => {
  const { manager, api, clock } = setup(t, { sessionIdleSeconds: 1200 })
  await manager.startSession()
  const session = manager.currentTokens()?.sessionToken
  // Keep the session in use until just before the OAuth token's end, then let the bearer lapse.
  for (let i = 0; i < 3; i++) {
    clock.advance(1100 * 1000)
    manager.currentTokens()
    api.oauthHandler = async () => {
      throw new UpstreamAuthError('unavailable', 'token endpoint answered 503', 503)
    }
    await flush()
  }
  clock.advance(400 * 1000)
  api.oauthHandler = async () => api.issueOAuth()
  t.equal(await manager.endSession(), true)
  t.equal(api.logoutCalls.length, 1, 'logout was sent')
  t.equal(api.logoutCalls[0]?.sessionToken, session)
})

t.test('endSession before any login returns false without calling logout', async (t) => {
  const { manager, api } = setup(t)
  t.equal(await manager.endSession(), false)
  t.equal(api.logoutCalls.length, 0)
})

t.test('snapshot shows fingerprints, never the token values or secrets', async (t) => {
  const { manager, api, clock } = setup(t)
  const empty = manager.snapshot()
  t.match(empty, {
    state: 'none',
    sessionTokenFingerprint: null,
    oauthTokenFingerprint: null,
    logins: 0,
    maxLoginFailures: 2,
    consecutiveLoginFailures: 0
  })
  await manager.startSession()
  clock.advance(5000)
  manager.currentTokens()
  const snapshot = manager.snapshot()
  const json = JSON.stringify(snapshot)
  const secrets = [
    api.issuedOAuth[0],
    api.issuedSessions[0],
    CREDENTIALS.password,
    CREDENTIALS.clientSecret,
    CREDENTIALS.username
  ] as string[]
  for (const secret of secrets) {
    t.notOk(json.includes(secret), 'snapshot does not contain a secret')
    t.notOk(json.includes(secret.slice(-12)), 'nor the end of one')
  }
  t.match(snapshot, {
    state: 'active',
    logins: 1,
    renewals: 0,
    oauthFetches: 1,
    maxLoginFailures: 2,
    consecutiveLoginFailures: 0
  })
  t.match(snapshot.sessionTokenFingerprint, /^[0-9a-f]{6,}$/)
  t.match(snapshot.oauthTokenFingerprint, /^[0-9a-f]{6,}$/)
  t.equal(snapshot.sessionTokenFingerprint, fingerprint(api.issuedSessions[0] as string))
  t.not(snapshot.sessionTokenFingerprint, snapshot.oauthTokenFingerprint)
  t.equal(snapshot.loggedInAt, new Date(START_MS).toISOString())
  t.equal(snapshot.lastUsedAt, new Date(START_MS + 5000).toISOString())
  t.equal(snapshot.idleExpiresAt, new Date(START_MS + 5000 + sessionTtlMs(1200)).toISOString())
  t.ok(snapshot.oauthExpiresAt !== null && Date.parse(snapshot.oauthExpiresAt) <= START_MS + 3600 * 1000)

  await manager.tokensAfterRejection(manager.currentTokens() as UpstreamTokens, 'session')
  const renewed = manager.snapshot()
  t.not(renewed.sessionTokenFingerprint, snapshot.sessionTokenFingerprint, 'the fingerprint follows the token')
  t.equal(renewed.oauthTokenFingerprint, snapshot.oauthTokenFingerprint)
  t.notOk(JSON.stringify(renewed).includes(api.issuedSessions[1] as string))
})

t.test('events fire with outcomes and reasons, and carry no secret', async (t) => {
  const { manager, api, clock, events } = setup(t, { sessionIdleSeconds: 600 })
  await manager.startSession()
  clock.advance(sessionTtlMs(600) + 1)
  await manager.acquireTokens()
  await manager.tokensAfterRejection(manager.currentTokens() as UpstreamTokens, 'session', 'invalid')
  await manager.startSession('admin')
  t.same(events.renewals, ['idle', 'invalid', 'admin'])
  t.same(
    events.logins.map((e) => e.outcome),
    ['success', 'success', 'success', 'success']
  )
  t.same(events.oauthFetches, ['success'])
  const all = JSON.stringify(events)
  for (const secret of [...api.issuedOAuth, ...api.issuedSessions, CREDENTIALS.password, CREDENTIALS.clientSecret]) {
    t.notOk(all.includes(secret), 'no secret in any event')
  }
})

t.test('OAuth client rejected: reason oauth-client-rejected, no login attempted, guard untouched', async (t) => {
  const { manager, api, clock, guard, events } = setup(t)
  api.oauthHandler = async () => {
    throw new UpstreamAuthError('rejected', 'OAuth token request answered 401 invalid_client', 401, 'invalid_client')
  }
  await expectUnavailable(t, manager.acquireTokens(), 'oauth-client-rejected')
  t.equal(api.loginCalls.length, 0)
  t.equal(guard.consecutiveRejections, 0)
  await expectUnavailable(t, manager.acquireTokens(), 'oauth-client-rejected', 'still rejected during the backoff')
  t.equal(api.oauthCalls.length, 1, 'no fetch during the backoff')
  clock.advance(BACKOFF_BASE_MS + 1)
  await unavailable(manager.acquireTokens())
  t.equal(api.oauthCalls.length, 2)
  t.same(events.oauthFetches, ['rejected', 'rejected'])
})

t.test('OAuthTokenCache on its own', async (t) => {
  t.test('caches until expiry minus the margin, then fetches', async (t) => {
    const clock = new FakeClock(START_MS)
    let n = 0
    const cache = new OAuthTokenCache(async () => ({ accessToken: `tok-${++n}`, expiresInSeconds: 3600 }), clock)
    t.equal(cache.peek(), undefined)
    t.equal(await cache.get(), 'tok-1')
    t.equal(await cache.get(), 'tok-1')
    t.equal(cache.fetchCount, 1)
    clock.advance(3600 * 1000 - OAUTH_EXPIRY_MARGIN_MS)
    t.equal(cache.peek(), undefined, 'not used within the margin')
    t.equal(await cache.get(), 'tok-2')
    t.equal(cache.fetchCount, 2)
  })

  t.test('a failing fetch backs off and keeps serving nothing stale', async (t) => {
    const clock = new FakeClock(START_MS)
    let fail = true
    let calls = 0
    const cache = new OAuthTokenCache(async () => {
      calls += 1
      if (fail) throw new UpstreamAuthError('unavailable', 'OAuth token request answered 502', 502)
      return { accessToken: 'tok-ok', expiresInSeconds: 3600 }
    }, clock)
    await expectUnavailable(t, cache.get(), 'upstream-unavailable')
    await expectUnavailable(t, cache.get(), 'upstream-unavailable')
    t.equal(calls, 1, 'backoff: no second call at once')
    fail = false
    clock.advance(BACKOFF_BASE_MS)
    t.equal(await cache.get(), 'tok-ok')
    t.equal(calls, 2)
  })

  t.test('a failing background refresh is reported and the token is served until it expires', async (t) => {
    const clock = new FakeClock(START_MS)
    const errors: string[] = []
    let calls = 0
    const cache = new OAuthTokenCache(
      async () => {
        calls += 1
        if (calls > 1) throw new UpstreamAuthError('unavailable', 'answered 503', 503)
        return { accessToken: 'tok-1', expiresInSeconds: 3600 }
      },
      clock,
      (event) => {
        if (event.type === 'warning') errors.push(event.message)
      }
    )
    await cache.get()
    clock.advance(3600 * 1000 - OAUTH_EXPIRY_MARGIN_MS - 1000)
    t.equal(cache.peek(), 'tok-1')
    await flush()
    t.equal(calls, 2)
    t.equal(errors.length, 1)
    t.match(errors[0], /^background OAuth token refresh failed: cannot get an OAuth token \(answered 503\)/)
    t.equal(cache.peek(), 'tok-1', 'still served')
    t.equal(calls, 2, 'no refetch during the backoff')
  })

  t.test('replace fetches once for a stale token and returns newer tokens without fetching', async (t) => {
    const clock = new FakeClock(START_MS)
    let n = 0
    const cache = new OAuthTokenCache(async () => ({ accessToken: `tok-${++n}`, expiresInSeconds: 3600 }), clock)
    await cache.get()
    t.equal(await cache.replace('tok-1'), 'tok-2')
    t.equal(await cache.replace('tok-1'), 'tok-2')
    t.equal(cache.fetchCount, 2)
    cache.clear()
    t.equal(cache.peek(), undefined)
    t.equal(await cache.get(), 'tok-3')
  })
})

t.test('idle expiry works with a clock that starts at 0 (Clock: only differences matter)', async (t) => {
  const clock = new FakeClock(START_MS)
  clock.ms = 0
  const { manager, api } = setup(t, { clock, sessionIdleSeconds: 1200 })
  api.oauthLifetimeSeconds = 1_000_000
  await manager.startSession()
  clock.advance(sessionTtlMs(1200) + 1)
  t.equal(manager.currentTokens(), undefined, 'the idle session is gone')
})

t.test('while backing off after a rejected login, the 503 reason says the credentials were rejected', async (t) => {
  const api = new FakeApi()
  api.loginHandler = async () => {
    throw new UpstreamAuthError('rejected', 'session login answered 400', 400)
  }
  const { manager } = setup(t, { api, maxFailures: 3 })
  await expectUnavailable(t, manager.acquireTokens(), 'credentials-rejected')
  const during = await expectUnavailable(
    t,
    manager.acquireTokens(),
    'credentials-rejected',
    'still credentials-rejected during the backoff'
  )
  t.match(during.message, /2 more attempt/)
  t.equal(api.loginCalls.length, 1, 'no login during the backoff')
})

t.test('a state directory that became unwritable stops logins with a clear reason', async (t) => {
  const { manager, api, dir, events } = setup(t)
  const fs = await import('node:fs')
  const path = await import('node:path')
  // Replace the state directory by a file: writes into it fail even for root.
  fs.rmSync(dir, { recursive: true, force: true })
  fs.writeFileSync(dir, 'not a directory')
  t.teardown(() => fs.rmSync(dir, { force: true }))
  await expectUnavailable(t, manager.acquireTokens(), 'state-unwritable')
  t.equal(api.loginCalls.length, 0, 'no login sent without a persisted count')
  t.equal(manager.notReadyReason(), 'state-unwritable', 'readiness names it, not an outage of ThingSpace')
  t.match(events.warnings, [/login failure count cannot be written to the state directory \(ENOTDIR.*M2M_PROXY_STATE_DIR/])
  t.notOk(fs.existsSync(path.join(dir, 'login-guard.json')))
})

t.test('logins refused for an unwritable state directory are not counted: once it is writable, the login goes', async (t) => {
  const { manager, api, dir, events } = setup(t, { maxFailures: 2 })
  const fs = await import('node:fs')
  await manager.startSession()
  // A full or read-only disk, as in the test above: writes into the directory fail.
  fs.rmSync(dir, { recursive: true, force: true })
  fs.writeFileSync(dir, 'not a directory')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  for (let attempt = 1; attempt <= 4; attempt++) {
    await expectUnavailable(t, manager.restartSession('admin'), 'state-unwritable', `attempt ${attempt}: state-unwritable`)
  }
  t.equal(api.loginCalls.length, 1, 'no login sent meanwhile')
  t.equal(manager.snapshot().consecutiveLoginFailures, 0, 'no failure counted for logins never sent')
  t.equal(manager.notReadyReason(), undefined, 'the session held still serves: ready')
  t.equal(events.warnings.filter((message) => /cannot be written to the state directory \(ENOTDIR/.test(message)).length, 1,
    'one warning for the episode, with the code')
  fs.rmSync(dir, { force: true })
  fs.mkdirSync(dir)
  await manager.restartSession('admin')
  t.equal(api.loginCalls.length, 2, 'the login goes once the directory is writable again')
  t.equal(manager.snapshot().state, 'active')
  t.equal(manager.notReadyReason(), undefined)
  t.match(events.infos, [/writable again/])
})

/** One canned answer of the mocked ThingSpace. */
interface CannedAnswer {
  status: number
  body: object
  headers?: Record<string, string>
}

const UPSTREAM_ORIGIN = 'https://thingspace.example.test'
const THROTTLED: CannedAnswer = {
  status: 429,
  body: { errorCode: 'UnifiedWebService.REQUEST_FAILED.TooManyRequests', errorMessage: 'Too many requests' }
}
const REQUEST_TIMEOUT: CannedAnswer = {
  status: 408,
  body: { errorCode: 'UnifiedWebService.REQUEST_FAILED.RequestTimeout', errorMessage: 'Request timeout' }
}

/**
 * A session manager over the real HTTP auth client, answered by an undici MockAgent: the status codes
 * are classified as in production. `answerLogin` and `answerToken` decide each answer.
 */
function setupOverHttp (
  t: Test
): Harness & {
  http: { answerLogin: () => CannedAnswer; answerToken: () => CannedAnswer; loginCalls: number; tokenCalls: number }
} {
  const agent = new MockAgent()
  agent.disableNetConnect()
  t.teardown(() => agent.close())
  const http = {
    loginCalls: 0,
    tokenCalls: 0,
    answerLogin: (): CannedAnswer => ({ status: 200, body: { sessionToken: secretToken('session', http.loginCalls) } }),
    answerToken: (): CannedAnswer => ({
      status: 200,
      body: { access_token: secretToken('oauth', http.tokenCalls), token_type: 'bearer', expires_in: 3600 }
    })
  }
  const reply = (
    answer: CannedAnswer
  ): { statusCode: number; data: string; responseOptions: { headers: Record<string, string> } } => ({
    statusCode: answer.status,
    data: JSON.stringify(answer.body),
    responseOptions: { headers: { 'content-type': 'application/json', ...answer.headers } }
  })
  const pool = agent.get(UPSTREAM_ORIGIN)
  pool
    .intercept({ path: LOGIN_PATH, method: 'POST' })
    .reply(() => {
      http.loginCalls += 1
      return reply(http.answerLogin())
    })
    .persist()
  pool
    .intercept({ path: OAUTH_TOKEN_PATH, method: 'POST' })
    .reply(() => {
      http.tokenCalls += 1
      return reply(http.answerToken())
    })
    .persist()
  const client = new ThingSpaceAuthClient(UPSTREAM_ORIGIN, agent, 5000)
  // The harness's FakeApi only records; the HTTP client answers.
  const api = new FakeApi()
  api.oauthHandler = async () => await client.fetchOAuthToken(CREDENTIALS.clientId, CREDENTIALS.clientSecret)
  api.loginHandler = async () => await client.login('unused', CREDENTIALS.username, CREDENTIALS.password)
  return { ...setup(t, { api, maxFailures: 2 }), http }
}

t.test('Retry-After: delay-seconds or an HTTP date, read as seconds from now', async (t) => {
  const now = Date.UTC(2026, 0, 1, 0, 0, 0)
  t.equal(retryAfterSecondsOf('120', now), 120)
  t.equal(retryAfterSecondsOf([' 7 '], now), 7)
  t.equal(retryAfterSecondsOf(new Date(now + 90_000).toUTCString(), now), 90)
  t.equal(retryAfterSecondsOf(new Date(now - 90_000).toUTCString(), now), 0, 'a date in the past: no wait')
  t.equal(retryAfterSecondsOf(undefined, now), undefined)
  t.equal(retryAfterSecondsOf('soon', now), undefined)
  t.equal(retryAfterSecondsOf('-5', now), undefined)
})

// Issue 17, item 4: a login answered 400 with a ".SessionToken." errorCode was read as a refused session token and not
// counted.
t.test('every 4xx to a login but 429 and 408 counts toward the guard, whatever its errorCode', async (t) => {
  for (const answer of [
    { status: 400, body: { errorCode: 'UnifiedWebService.INPUT_INVALID.SessionToken.Invalid', errorMessage: 'x' } },
    { status: 401, body: { errorCode: 'UnifiedWebService.REQUEST_FAILED.SessionToken.Expired' } },
    { status: 403, body: { errorCode: 'Something.Else' } },
    { status: 404, body: {} }
  ]) {
    const { manager, clock, guard, http } = setupOverHttp(t)
    http.answerLogin = () => answer
    await expectUnavailable(
      t,
      manager.acquireTokens(),
      'credentials-rejected',
      `${answer.status} ${String(answer.body.errorCode)}: a rejection`
    )
    t.equal(guard.consecutiveRejections, 1, 'counted')
    clock.advance(60_000)
    await expectUnavailable(t, manager.acquireTokens(), 'credentials-rejected')
    t.equal(guard.engaged, true, 'the guard holds at M2M_PROXY_MAX_LOGIN_FAILURES')
    clock.advance(60_000)
    await expectUnavailable(t, manager.acquireTokens(), 'credentials-rejected')
    t.equal(http.loginCalls, 2, 'no third login')
  }
})

t.test(
  '429 and 408 answers to a login are not rejected credentials: many of them never engage the guard, the backoff honours Retry-After',
  async (t) => {
    const { manager, clock, guard, events, http } = setupOverHttp(t)
    http.answerLogin = () => ({ ...THROTTLED, headers: { 'retry-after': '120' } })
    const throttled = await expectUnavailable(
      t,
      manager.acquireTokens(),
      'upstream-unavailable',
      'a throttled login is "unavailable", not a rejection'
    )
    t.equal(throttled.retryAfterSeconds, 120, 'Retry-After passed on to clients')
    t.equal(guard.consecutiveRejections, 0, 'not counted')
    clock.advance(119_000)
    const waiting = await expectUnavailable(t, manager.acquireTokens(), 'upstream-unavailable')
    t.ok(waiting.retryAfterSeconds <= 1, 'the remaining wait')
    t.equal(http.loginCalls, 1, 'no login before Retry-After has passed, although the normal backoff (1 s) has')
    clock.advance(1000)
    http.answerLogin = () => REQUEST_TIMEOUT
    const timedOut = await expectUnavailable(
      t,
      manager.acquireTokens(),
      'upstream-unavailable',
      'a 408 is "unavailable" too'
    )
    t.equal(timedOut.retryAfterSeconds, (2 * BACKOFF_BASE_MS) / 1000, 'without Retry-After: the normal backoff')
    t.equal(http.loginCalls, 2)

    // Far more than the guard's limit (2) and the account's ceiling (4), alternating, with short or past Retry-After
    // values.
    for (let i = 0; i < 10; i++) {
      clock.advance(BACKOFF_MAX_MS)
      http.answerLogin = () =>
        i % 2 === 0
          ? { ...THROTTLED, headers: { 'retry-after': new Date(Date.now() - 5000).toUTCString() } }
          : REQUEST_TIMEOUT
      const error = await expectUnavailable(t, manager.acquireTokens(), 'upstream-unavailable')
      t.ok(
        error.retryAfterSeconds * 1000 >= Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (i + 2)),
        'a past Retry-After does not shorten the normal backoff'
      )
    }
    t.equal(http.loginCalls, 12)
    t.equal(guard.consecutiveRejections, 0)
    t.equal(guard.accountConsecutiveRejections, 0)
    t.notOk(manager.guardEngaged, 'the guard is not engaged')
    t.notOk(
      events.logins.some((e) => e.outcome === 'rejected'),
      'no login reported as rejected'
    )

    clock.advance(BACKOFF_MAX_MS)
    http.answerLogin = () => ({ ...THROTTLED, headers: { 'retry-after': '86400' } })
    const capped = await expectUnavailable(t, manager.acquireTokens(), 'upstream-unavailable')
    t.equal(capped.retryAfterSeconds, RETRY_AFTER_MAX_MS / 1000, 'a day-long Retry-After is capped')
    clock.advance(RETRY_AFTER_MAX_MS)
    http.answerLogin = () => ({ status: 200, body: { sessionToken: 'session-after-throttling-5e1f' } })
    t.equal(
      (await manager.acquireTokens()).sessionToken,
      'session-after-throttling-5e1f',
      'logs in once the platform accepts logins again'
    )
    t.equal(http.loginCalls, 14)
  }
)

t.test(
  '429 and 408 answers to the OAuth token request are not a rejected app key: backoff honouring Retry-After, no login',
  async (t) => {
    const { manager, clock, guard, events, http } = setupOverHttp(t)
    http.answerToken = () => ({
      status: 429,
      body: { error: 'too_many_requests', error_description: 'slow down' },
      headers: { 'retry-after': '30' }
    })
    const throttled = await expectUnavailable(
      t,
      manager.acquireTokens(),
      'upstream-unavailable',
      'not oauth-client-rejected'
    )
    t.equal(throttled.retryAfterSeconds, 30)
    clock.advance(29_000)
    await expectUnavailable(t, manager.acquireTokens(), 'upstream-unavailable')
    t.equal(http.tokenCalls, 1, 'no token request before Retry-After has passed')
    clock.advance(1000)
    http.answerToken = () => ({ status: 408, body: { error: 'request_timeout', error_description: 'request timeout' } })
    await expectUnavailable(t, manager.acquireTokens(), 'upstream-unavailable', 'a 408 is "unavailable" too')
    t.equal(http.tokenCalls, 2)
    t.same(events.oauthFetches, ['error', 'error'], 'reported as errors, not rejections')
    t.equal(http.loginCalls, 0, 'no login without a bearer')
    t.equal(guard.consecutiveRejections, 0)
    clock.advance(BACKOFF_MAX_MS)
    http.answerToken = () => ({
      status: 200,
      body: { access_token: 'oauth-after-throttling-77a0', token_type: 'bearer', expires_in: 3600 }
    })
    t.equal((await manager.acquireTokens()).oauthToken, 'oauth-after-throttling-77a0')
  }
)

t.test(
  'an upstream that refuses every session: a session refused right after the login that replaced a refused one is not renewed again at once; at most a handful of logins a minute',
  async (t) => {
    const { manager, api, clock, events } = setup(t)
    const loginTimes: number[] = []
    api.loginHandler = async () => {
      loginTimes.push(clock.now())
      return api.issueSession()
    }
    await manager.startSession()
    const startedAt = clock.now()
    let passedOn = 0
    let replayed = 0
    // A constant stream of requests, 4 a second for 3 minutes, each answered SessionToken.Expired, as the proxy handles
    // them.
    for (let elapsed = 0; elapsed < 3 * 60_000; elapsed += 250) {
      const tokens = manager.currentTokens() ?? (await manager.acquireTokens())
      const renewed = await manager.tokensAfterRejection(tokens, 'session', 'expired')
      if (renewed === undefined) {
        passedOn += 1 // the client gets ThingSpace's answer
      } else {
        t.not(renewed.sessionToken, tokens.sessionToken, 'a renewal brings a new session')
        replayed += 1 // replayed once, refused again, passed on
      }
      clock.advance(250)
    }
    const perMinuteLimit = 1 + Math.ceil(60_000 / REFUSED_RENEWAL_HOLD_MS)
    t.ok(perMinuteLimit <= 5, `a handful: at most ${perMinuteLimit} logins a minute`)
    for (let minute = 0; minute < 3; minute++) {
      const logins = loginTimes.filter(
        (at) => at >= startedAt + minute * 60_000 && at < startedAt + (minute + 1) * 60_000
      ).length
      t.ok(logins <= perMinuteLimit, `minute ${minute + 1}: ${logins} logins`)
    }
    t.ok(
      api.loginCalls.length <= 1 + (3 * 60_000) / REFUSED_RENEWAL_HOLD_MS + 1,
      `${api.loginCalls.length} logins for ${passedOn + replayed} requests`
    )
    t.equal(replayed, api.loginCalls.length - 1, 'every login after the first was a renewal for a refused session')
    t.ok(passedOn > 600, 'most refusals are passed on without a login')
    t.same(
      events.renewals,
      Array.from({ length: replayed }, () => 'expired'),
      'each re-login is counted as a renewal'
    )
    t.equal(manager.snapshot().renewals, replayed)
    t.equal(events.warnings.length, replayed, 'one warning per session held, not one per request')
    t.match(events.warnings[0], /refused the session \(expired\) 0 s after the login that replaced a refused one/)
    const all = JSON.stringify(events.warnings)
    for (const secret of [...api.issuedOAuth, ...api.issuedSessions, CREDENTIALS.password, CREDENTIALS.clientSecret]) {
      t.notOk(all.includes(secret), 'no secret in a warning')
    }
  }
)

t.test(
  'a replacement session that served a replayed request is a working session: its next refusal is renewed at once, even within the hold',
  async (t) => {
    const { manager, api, clock, events } = setup(t)
    await manager.startSession()
    const replacement = await manager.tokensAfterRejection(
      manager.currentTokens() as UpstreamTokens,
      'session',
      'expired'
    )
    t.ok(replacement, 'the start-up session is renewed')
    manager.replayServed({ oauthToken: 'x', sessionToken: 'some-other-session-token' }) // says nothing about this one
    t.equal(
      await manager.tokensAfterRejection(replacement as UpstreamTokens, 'session', 'expired'),
      undefined,
      'unconfirmed: held'
    )
    await manager
      .tokensAfterRejection(manager.currentTokens() as UpstreamTokens, 'session', 'expired')
      .catch(() => undefined)
    clock.advance(REFUSED_RENEWAL_HOLD_MS)
    const third = await manager.tokensAfterRejection(manager.currentTokens() as UpstreamTokens, 'session', 'expired')
    t.ok(third, 'renewed once the hold is over')
    manager.replayServed(third as UpstreamTokens) // the proxy: the replay on it was answered
    clock.advance(1000)
    const fourth = await manager.tokensAfterRejection(third as UpstreamTokens, 'session', 'expired')
    t.ok(fourth, 'a second genuine expiry 1 s later is renewed at once')
    t.not((fourth as UpstreamTokens).sessionToken, (third as UpstreamTokens).sessionToken)
    t.equal(api.loginCalls.length, 4)
    t.equal(events.warnings.length, 1, 'only the unconfirmed session was held')
  }
)

t.test(
  'a gateway that refuses every bearer: one refused right after the fetch that replaced a refused one is not replaced again at once',
  async (t) => {
    const { manager, api, clock, events } = setup(t)
    await manager.startSession()
    const fetchTimes: number[] = []
    api.oauthHandler = async () => {
      fetchTimes.push(clock.now())
      return api.issueOAuth()
    }
    let passedOn = 0
    let replayed = 0
    // 4 requests a second for 3 minutes, each answered 401 900901, as the proxy handles them.
    for (let elapsed = 0; elapsed < 3 * 60_000; elapsed += 250) {
      const tokens = manager.currentTokens() ?? (await manager.acquireTokens())
      const renewed = await manager.tokensAfterRejection(tokens, 'oauth')
      if (renewed === undefined) passedOn += 1
      else {
        t.not(renewed.oauthToken, tokens.oauthToken, 'a replacement is a new bearer')
        replayed += 1
      }
      clock.advance(250)
    }
    t.ok(fetchTimes.length <= 1 + (3 * 60_000) / REFUSED_RENEWAL_HOLD_MS, `${fetchTimes.length} fetches in 3 minutes`)
    t.equal(replayed, fetchTimes.length)
    t.ok(passedOn > 600, `most refusals passed on without a fetch (${passedOn})`)
    t.equal(api.loginCalls.length, 1, 'the session is kept')
    t.equal(events.warnings.length, replayed, 'one warning per bearer held, not one per request')
    t.match(events.warnings[0], /refused the OAuth token 0 s after it was fetched to replace a refused one/)
    const all = JSON.stringify(events.warnings)
    for (const secret of api.issuedOAuth) t.notOk(all.includes(secret), 'no token in a warning')
  }
)

t.test('a replacement bearer that served a replayed request: its next refusal is replaced at once', async (t) => {
  const { manager, api, clock } = setup(t)
  await manager.startSession()
  const replacement = (await manager.tokensAfterRejection(manager.currentTokens() as UpstreamTokens, 'oauth')) as UpstreamTokens
  t.ok(replacement)
  manager.replayServed(replacement) // the replay with it was answered
  clock.advance(1000)
  const next = await manager.tokensAfterRejection(replacement, 'oauth')
  t.ok(next, 'replaced at once')
  t.not(next?.oauthToken, replacement.oauthToken)
  t.equal(api.oauthCalls.length, 3)
  t.equal(await manager.tokensAfterRejection(next as UpstreamTokens, 'oauth'), undefined, 'the next, unconfirmed: held')
})

t.test('oauth-invalid at login with a bearer just fetched for a refused one: no refetch, not counted', async (t) => {
  const { manager, api, guard } = setup(t, { maxFailures: 2 })
  await manager.startSession()
  await manager.tokensAfterRejection(manager.currentTokens() as UpstreamTokens, 'oauth') // fetched for a refusal
  const fetches = api.oauthCalls.length
  api.loginHandler = async () => {
    throw new UpstreamAuthError('oauth-invalid', 'session login answered 401 900901', 401, '900901')
  }
  await expectUnavailable(t, manager.restartSession('admin'), 'upstream-unavailable')
  t.equal(api.oauthCalls.length, fetches, 'the held bearer is not replaced')
  t.equal(api.loginCalls.length, 2, 'one login, no retry')
  t.equal(guard.consecutiveRejections, 0, 'not counted')
})

t.test(
  'a session not logged in for a refusal (start-up, idle, operator) is renewed at once when refused',
  async (t) => {
    const { manager, api, clock, events } = setup(t, { sessionIdleSeconds: 600 })
    await manager.startSession()
    t.ok(
      await manager.tokensAfterRejection(manager.currentTokens() as UpstreamTokens, 'session', 'expired'),
      'start-up session renewed'
    )
    await manager.startSession('admin')
    t.ok(
      await manager.tokensAfterRejection(manager.currentTokens() as UpstreamTokens, 'session', 'invalid'),
      "operator's session renewed"
    )
    clock.advance(sessionTtlMs(600) + 1)
    await manager.acquireTokens()
    t.ok(
      await manager.tokensAfterRejection(manager.currentTokens() as UpstreamTokens, 'session', 'expired'),
      'session renewed after idling renewed'
    )
    t.equal(
      await manager.tokensAfterRejection(manager.currentTokens() as UpstreamTokens, 'session', 'expired'),
      undefined,
      'but not the one logged in for that refusal'
    )
    t.equal(api.loginCalls.length, 6)
    t.same(events.renewals, ['expired', 'admin', 'invalid', 'idle', 'expired'])
    t.equal(events.warnings.length, 1)
  }
)

t.test(
  'background login retry: not ready because ThingSpace is failing, the manager logs in by itself with its backoff, no client request',
  async (t) => {
    const clock = new TimerClock(START_MS)
    const { manager, api, guard, events } = setup(t, { clock })
    const refused = (): never => {
      throw new UpstreamAuthError(
        'unavailable',
        'OAuth token request failed: ECONNREFUSED',
        undefined,
        undefined,
        undefined,
        'ECONNREFUSED'
      )
    }
    api.oauthHandler = async (call) => (call <= 2 ? refused() : api.issueOAuth())
    api.loginHandler = async (call) => {
      if (call <= 2) throw new UpstreamAuthError('unavailable', 'session login answered 503', 503)
      return api.issueSession()
    }
    await manager.startSession().catch(() => undefined)
    t.equal(manager.notReadyReason(), 'not-logged-in')
    t.same(clock.pending, [BACKOFF_BASE_MS], 'one retry, when the backoff allows it')
    clock.advance(BACKOFF_BASE_MS - 1)
    await flush()
    t.equal(api.oauthCalls.length, 1, 'not before the backoff is over')
    clock.advance(1)
    await flush()
    t.equal(api.oauthCalls.length, 2, 'retried at the end of the backoff')
    t.same(clock.pending, [2 * BACKOFF_BASE_MS], 'the next wait doubles')
    for (let i = 0; i < 10 && !manager.ready; i++) {
      clock.advance(BACKOFF_MAX_MS)
      await flush()
    }
    t.ok(manager.ready, 'ready without any client request')
    t.equal(manager.snapshot().state, 'active')
    t.equal(manager.snapshot().notReadyReason, null)
    t.equal(api.oauthCalls.length, 3)
    t.equal(api.loginCalls.length, 3, 'two failed logins, then the good one')
    t.same(clock.pending, [], 'no retry once logged in')
    t.equal(guard.consecutiveRejections, 0, 'nothing counted toward the lockout')
    t.same(
      events.logins.map((e) => e.outcome),
      ['error', 'error', 'success']
    )
    t.equal(events.backgroundRetries.length, 4, 'each failure scheduled one retry')
    clock.advance(BACKOFF_MAX_MS * 10)
    await flush()
    t.equal(api.loginCalls.length, 3, 'nothing more')
  }
)

t.test(
  'background login retry: a rejected login or app key is never retried, the guard count is unchanged',
  async (t) => {
    t.test('rejected login', async (t) => {
      const clock = new TimerClock(START_MS)
      const { manager, api, guard, events } = setup(t, { clock, maxFailures: 2 })
      api.loginHandler = async () => {
        throw new UpstreamAuthError(
          'rejected',
          'session login answered 400 UnifiedWebService.INPUT_INVALID.Credentials',
          400,
          'UnifiedWebService.INPUT_INVALID.Credentials'
        )
      }
      await manager.startSession().catch(() => undefined)
      t.equal(guard.consecutiveRejections, 1)
      t.same(clock.pending, [], 'no retry scheduled')
      clock.advance(BACKOFF_MAX_MS * 10)
      await flush()
      t.equal(api.loginCalls.length, 1, 'no login without a client')
      t.equal(guard.consecutiveRejections, 1, 'the guard count is unchanged')
      t.equal(manager.notReadyReason(), 'credentials-rejected', "the reason the clients' errors give")
      t.equal(manager.snapshot().notReadyReason, 'credentials-rejected')
      t.same(events.backgroundRetries, [])
    })
    t.test('rejected app key', async (t) => {
      const clock = new TimerClock(START_MS)
      const { manager, api, guard } = setup(t, { clock })
      api.oauthHandler = async () => {
        throw new UpstreamAuthError(
          'rejected',
          'OAuth token request answered 401 invalid_client',
          401,
          'invalid_client'
        )
      }
      await manager.startSession().catch(() => undefined)
      t.same(clock.pending, [], 'no retry scheduled')
      clock.advance(BACKOFF_MAX_MS * 10)
      await flush()
      t.equal(api.oauthCalls.length, 1)
      t.equal(api.loginCalls.length, 0)
      t.equal(guard.consecutiveRejections, 0)
      t.equal(manager.notReadyReason(), 'oauth-client-rejected')
      t.equal(manager.snapshot().notReadyReason, 'oauth-client-rejected')
    })
    t.test('a failing upstream that then rejects: the retry stops at the rejection', async (t) => {
      const clock = new TimerClock(START_MS)
      const { manager, api, guard } = setup(t, { clock, maxFailures: 2 })
      api.loginHandler = async (call) => {
        if (call === 1) throw new UpstreamAuthError('unavailable', 'session login answered 502', 502)
        throw new UpstreamAuthError('rejected', 'session login answered 400', 400)
      }
      await manager.startSession().catch(() => undefined)
      clock.advance(BACKOFF_MAX_MS)
      await flush()
      t.equal(api.loginCalls.length, 2, 'one background retry')
      t.equal(guard.consecutiveRejections, 1)
      clock.advance(BACKOFF_MAX_MS * 10)
      await flush()
      t.equal(api.loginCalls.length, 2, 'none after the rejection')
      t.same(clock.pending, [])
    })
  }
)

t.test(
  'background login retry: not after a login that was sent and got no answer (it may have counted at ThingSpace)',
  async (t) => {
    const clock = new TimerClock(START_MS)
    const { manager, api, guard, events } = setup(t, { clock, maxFailures: 2 })
    api.loginHandler = async (call) => {
      if (call === 1) {
        throw new UpstreamAuthError(
          'unknown-outcome',
          'session login timed out',
          undefined,
          undefined,
          undefined,
          'UND_ERR_HEADERS_TIMEOUT'
        )
      }
      return api.issueSession()
    }
    await manager.startSession().catch(() => undefined)
    t.equal(guard.consecutiveRejections, 1, 'counted toward the guard, as before')
    t.same(clock.pending, [], 'no retry scheduled')
    t.same(events.backgroundRetries, [])
    clock.advance(BACKOFF_MAX_MS * 10)
    await flush()
    t.equal(api.loginCalls.length, 1, 'the lockout budget is not spent without a client')
    await manager.acquireTokens()
    t.equal(api.loginCalls.length, 2, 'a client request logs in')
    t.ok(manager.ready)
  }
)

t.test('background login retry: single flight with a client login, stopped by close()', async (t) => {
  const clock = new TimerClock(START_MS)
  const { manager, api } = setup(t, { clock })
  const pending = deferred<string>()
  api.loginHandler = async (call) => {
    if (call === 1) throw new UpstreamAuthError('unavailable', 'session login answered 500', 500)
    return await pending.promise
  }
  await manager.startSession().catch(() => undefined)
  t.same(clock.pending, [BACKOFF_BASE_MS])
  clock.ms += BACKOFF_BASE_MS // the backoff is over, the timer has not run yet
  const client = manager.acquireTokens()
  await flush()
  t.equal(api.loginCalls.length, 2, 'the client logs in')
  clock.advance(0) // the background retry falls due while the client's login is under way
  await flush()
  t.equal(api.loginCalls.length, 2, 'the retry joined it: no second login')
  pending.resolve(api.issueSession())
  t.equal((await client).sessionToken, api.issuedSessions[0])
  t.same(clock.pending, [])

  // close(): the pending retry is cancelled and none is scheduled again.
  const second = setup(t, { clock: new TimerClock(START_MS) })
  second.api.loginHandler = async () => {
    throw new UpstreamAuthError('unavailable', 'session login answered 500', 500)
  }
  await second.manager.startSession().catch(() => undefined)
  const secondClock = second.clock as TimerClock
  t.equal(secondClock.pending.length, 1)
  second.manager.close()
  t.same(secondClock.pending, [], 'cancelled')
  secondClock.advance(BACKOFF_MAX_MS * 10)
  await flush()
  t.equal(second.api.loginCalls.length, 1, 'no login after close')
  await second.manager.acquireTokens().catch(() => undefined)
  t.same(secondClock.pending, [], "a client's failed login after close schedules nothing")
})

t.test('a clock without timers schedules no background retry', async (t) => {
  const { manager, api, clock } = setup(t)
  api.loginHandler = async () => {
    throw new UpstreamAuthError('unavailable', 'session login answered 500', 500)
  }
  await manager.startSession().catch(() => undefined)
  clock.advance(BACKOFF_MAX_MS * 10)
  await flush()
  t.equal(api.loginCalls.length, 1)
})

t.test(
  'failed logins, token fetches and logouts report their cause: status, errorCode, network or TLS error code, no secret',
  async (t) => {
    const { manager, api, clock, events } = setup(t)
    api.oauthHandler = async (call) => {
      if (call === 1) {
        throw new UpstreamAuthError(
          'unavailable',
          'OAuth token request failed: UNABLE_TO_VERIFY_LEAF_SIGNATURE',
          undefined,
          undefined,
          undefined,
          'UNABLE_TO_VERIFY_LEAF_SIGNATURE'
        )
      }
      return api.issueOAuth()
    }
    api.loginHandler = async (call) => {
      if (call === 1) {
        throw new UpstreamAuthError(
          'unavailable',
          'session login failed: ECONNREFUSED',
          undefined,
          undefined,
          undefined,
          'ECONNREFUSED'
        )
      }
      if (call === 2) {
        throw new UpstreamAuthError(
          'rejected',
          'session login answered 400 UnifiedWebService.INPUT_INVALID.Credentials',
          400,
          'UnifiedWebService.INPUT_INVALID.Credentials'
        )
      }
      return api.issueSession()
    }
    await unavailable(manager.acquireTokens())
    t.same(events.oauthCauses, [{ tlsError: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' }])
    clock.advance(BACKOFF_MAX_MS)
    await unavailable(manager.acquireTokens())
    t.same(events.logins.at(-1)?.cause, { networkError: 'ECONNREFUSED' })
    clock.advance(BACKOFF_MAX_MS)
    await unavailable(manager.acquireTokens())
    t.match(events.logins.at(-1), {
      outcome: 'rejected',
      cause: { status: 400, errorCode: 'UnifiedWebService.INPUT_INVALID.Credentials' }
    })
    clock.advance(BACKOFF_MAX_MS)
    await manager.acquireTokens()
    api.logout = async () => {
      throw new UpstreamAuthError(
        'unavailable',
        'session logout answered 503',
        503,
        'UnifiedWebService.REQUEST_FAILED.ServiceUnavailable'
      )
    }
    await t.rejects(manager.endSession(), UpstreamAuthError)
    t.same(events.logoutFailures, [
      {
        message: 'logout failed: session logout answered 503',
        cause: { status: 503, errorCode: 'UnifiedWebService.REQUEST_FAILED.ServiceUnavailable' },
        replaced: false
      }
    ])
    await manager.startSession()
    await manager.restartSession('admin')
    t.match(events.logoutFailures[1], { cause: { status: 503 }, replaced: true })
    const all = JSON.stringify(events)
    for (const secret of [...api.issuedOAuth, ...api.issuedSessions, CREDENTIALS.password, CREDENTIALS.clientSecret]) {
      t.notOk(all.includes(secret), 'no secret in any event')
    }
  }
)

t.test('failureCause: codes only, upstream codes truncated', async (t) => {
  t.same(
    failureCause(
      new UpstreamAuthError(
        'unknown-outcome',
        'session login failed: UND_ERR_HEADERS_TIMEOUT',
        undefined,
        undefined,
        undefined,
        'UND_ERR_HEADERS_TIMEOUT'
      )
    ),
    { networkError: 'UND_ERR_HEADERS_TIMEOUT' }
  )
  for (const code of [
    'DEPTH_ZERO_SELF_SIGNED_CERT',
    'ERR_TLS_CERT_ALTNAME_INVALID',
    'CERT_HAS_EXPIRED',
    'SELF_SIGNED_CERT_IN_CHAIN',
    'EPROTO'
  ]) {
    t.same(
      failureCause(new UpstreamAuthError('unavailable', 'x', undefined, undefined, undefined, code)),
      { tlsError: code },
      code
    )
  }
  t.same(failureCause(new UpstreamAuthError('rejected', 'x', 401, 'e'.repeat(500))).errorCode?.length, 100)
  t.same(failureCause(new AuthUnavailableError('upstream-unavailable', 'backing off', 3)), {
    reason: 'upstream-unavailable'
  })
  t.same(
    failureCause(
      Object.assign(new Error('connect ECONNREFUSED 10.0.0.1:3128 http://user:secret@proxy'), { code: 'ECONNREFUSED' })
    ),
    { networkError: 'ECONNREFUSED' },
    'the message is left out'
  )
})

t.test('the HTTP auth client keeps the network error code of a failed call, and of its cause', async (t) => {
  const agent = new MockAgent()
  agent.disableNetConnect()
  t.teardown(() => agent.close())
  const pool = agent.get(UPSTREAM_ORIGIN)
  pool
    .intercept({ path: OAUTH_TOKEN_PATH, method: 'POST' })
    .replyWithError(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }))
  pool
    .intercept({ path: OAUTH_TOKEN_PATH, method: 'POST' })
    .replyWithError(
      new Error('proxy tunnel failed', {
        cause: Object.assign(new Error('unable to verify the first certificate'), {
          code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'
        })
      })
    )
  const client = new ThingSpaceAuthClient(UPSTREAM_ORIGIN, agent, 5000)
  const first = await client.fetchOAuthToken('id', 'secret').catch((error: unknown) => error)
  t.match(first, { kind: 'unavailable', networkCode: 'ECONNREFUSED' })
  const second = await client.fetchOAuthToken('id', 'secret').catch((error: unknown) => error)
  t.match(
    second,
    { kind: 'unknown-outcome', networkCode: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' },
    "classified as before (by its own code), logged with its cause's"
  )
  t.same(failureCause(second), { tlsError: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' })
})

t.test('not ready for an unwritable state directory: once it is writable, it logs in by itself, no client request', async (t) => {
  // An unready pod gets no client request: without a login of its own it would stay state-unwritable for ever.
  const clock = new TimerClock(START_MS)
  const { manager, api, dir } = setup(t, { clock })
  const fs = await import('node:fs')
  fs.rmSync(dir, { recursive: true, force: true })
  fs.writeFileSync(dir, 'not a directory')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  await expectUnavailable(t, manager.startSession(), 'state-unwritable')
  t.equal(manager.notReadyReason(), 'state-unwritable')
  t.equal(clock.pending.length, 1, 'a retry is scheduled')
  clock.advance(60_000)
  await flush()
  t.equal(api.loginCalls.length, 0, 'no login while the count cannot be written')
  t.equal(clock.pending.length, 1, 'and the next retry is scheduled')
  fs.rmSync(dir, { force: true })
  fs.mkdirSync(dir)
  clock.advance(60_000)
  await flush()
  t.equal(api.loginCalls.length, 1, 'the login goes by itself once the directory is writable')
  t.ok(manager.ready, 'ready again without any client request')
  t.same(clock.pending, [], 'no retry once logged in')
})

t.test('no background login for an unwritable state directory after a rejection: a rejection waits for new credentials', async (t) => {
  const clock = new TimerClock(START_MS)
  const { manager, api, dir } = setup(t, { clock, maxFailures: 3 })
  api.loginHandler = async () => {
    throw new UpstreamAuthError('rejected', 'session login answered 400', 400)
  }
  await expectUnavailable(t, manager.startSession(), 'credentials-rejected')
  const fs = await import('node:fs')
  fs.rmSync(dir, { recursive: true, force: true })
  fs.writeFileSync(dir, 'not a directory')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  clock.advance(BACKOFF_MAX_MS)
  await expectUnavailable(t, manager.acquireTokens(), 'state-unwritable')
  fs.rmSync(dir, { force: true })
  fs.mkdirSync(dir)
  clock.advance(10 * BACKOFF_MAX_MS)
  await flush()
  t.equal(api.loginCalls.length, 1, 'the rejected credentials are not sent again without a client asking')
})
