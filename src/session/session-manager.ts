// The two-token lifecycle: OAuth token plus VZ-M2M session, single-flight logins, replay decisions and the lockout
// guard. No HTTP framework here.

import { errorCode, messageOf } from '../errors.js'
import { LRUCache } from 'lru-cache'
import { createHash } from 'node:crypto'
import type { Clock, Timer } from '../clock.js'
import type { ThingSpaceAuthApi } from './auth-client.js'
import type { LoginGuard } from './login-guard.js'
import type { SharedSession } from './shared-session.js'
import { FleetCoordinator, type FleetHost, type FleetOptions } from './fleet-coordinator.js'
import {
  SoloLogin,
  type CachedSession,
  type FleetStatus,
  type LoginAttempt,
  type LoginStrategy
} from './login-strategy.js'
import { Backoff } from './backoff.js'
import { AuthUnavailableError, failureCause, UpstreamAuthError } from './errors.js'
import { OAUTH_REFRESH_AHEAD_MS, OAuthTokenCache, REFUSED_RENEWAL_HOLD_MS, type FetchedGrant } from './oauth-token.js'
import { ignoreSessionEvents, type PublishSessionEvent, type RenewalReason } from './events.js'

/** Tokens attached to one upstream request. */
export interface UpstreamTokens {
  readonly oauthToken: string
  readonly sessionToken: string
}

export interface SessionCredentials {
  username: string
  password: string
  clientId: string
  clientSecret: string
}

export type { LoginOutcome, RenewalReason } from './events.js'

/** Why the proxy cannot serve right now (GET /readyz, GET /admin/session). */
export type NotReadyReason =
  | 'credentials-rejected'
  | 'oauth-client-rejected'
  | 'not-logged-in'
  | 'login-failing'
  | 'fleet-store-unreachable'
  | 'fleet-key-mismatch'
  | 'state-unwritable'

export interface SessionManagerOptions {
  api: ThingSpaceAuthApi
  credentials: SessionCredentials
  guard: LoginGuard
  sessionIdleSeconds: number
  clock: Clock
  /** Where the session reports logins, renewals and warnings (src/events.ts binds it to the session channel). */
  publish?: PublishSessionEvent
  /** Absent: one process, today's behaviour. Present: logins are shared with the other replicas of the fleet. */
  fleet?: FleetOptions
}

export type SessionStatus = 'active' | 'none' | 'logging-in' | 'rejected' | 'backing-off'

export interface SessionSnapshot {
  state: SessionStatus
  /** Why not ready, as GET /readyz says; null when ready. */
  notReadyReason: NotReadyReason | null
  loggedInAt: string | null
  lastUsedAt: string | null
  idleExpiresAt: string | null
  oauthExpiresAt: string | null
  consecutiveLoginFailures: number
  maxLoginFailures: number
  logins: number
  renewals: number
  oauthFetches: number
  sessionTokenFingerprint: string | null
  oauthTokenFingerprint: string | null
  /** Whether replicas share the session through a fleet store (M2M_PROXY_REDIS_URL). */
  fleetMode: boolean
  /** null in single-process mode. */
  fleet: FleetStatus | null
}

/** Stop using a session this long before the platform's idle expiry: the request must arrive in time. */
export function idleMarginMs (sessionIdleSeconds: number): number {
  return Math.min(60_000, sessionIdleSeconds * 100) // 60 s, or 10% of short idle times
}

/** How long after its last use a session is still used (the platform's idle time less the margin). */
export function sessionTtlMs (sessionIdleSeconds: number): number {
  return sessionIdleSeconds * 1000 - idleMarginMs(sessionIdleSeconds)
}

const SESSION_KEY = 'session'

// A session logged in to replace a refused one and refused in turn is held the same way as such an OAuth token.
export { REFUSED_RENEWAL_HOLD_MS }

/** Renewal reasons that mean the platform refused the session token. */
const REFUSAL_REASONS: ReadonlySet<RenewalReason> = new Set(['expired', 'invalid'])

/** A short, one-way tag to tell tokens apart in diagnostics without revealing them. */
export function fingerprint (token: string): string {
  return createHash('sha256').update(token).digest('hex').slice(0, 8)
}

export class SessionManager {
  private readonly sessions: LRUCache<string, CachedSession>
  private readonly oauth: OAuthTokenCache
  private readonly loginBackoff: Backoff
  private loginInFlight: Promise<CachedSession> | undefined
  private credentials: SessionCredentials
  private readonly publish: PublishSessionEvent
  private lastUsedAt: number | undefined
  /**
   * What the last login (sent or taken up) came to; 'unknown-outcome': sent but unanswered, ThingSpace may have counted
   * it.
   */
  private lastLogin: 'none' | 'succeeded' | 'rejected' | 'failed' | 'unknown-outcome' = 'none'
  private lastTokens: UpstreamTokens | undefined
  private logins = 0
  private renewals = 0
  /** Why the next login replaces a session, for the renewal counter. */
  private pendingRenewal: RenewalReason | undefined
  /** The held session a warning was logged for: one warning per held session, not one per request. */
  private warnedHeldSession: CachedSession | undefined
  /**
   * The next login tried without a client, while ThingSpace is failing and the proxy is not ready; `waitsForStore`:
   * the fleet store's return ends its wait early, ThingSpace's backoff does not.
   */
  private backgroundRetry: { timer: Timer; waitsForStore: boolean } | undefined
  private closed = false
  /** Fleet mode: the last credentials an operator's file proposed were rejected by ThingSpace (readiness says so). */
  private candidateRejected = false
  /** The last login was not sent because the failure count could not be written (a full or read-only disk). */
  private stateUnwritable = false
  /**
   * The last session this replica held (cached or not): the one a renewal replaces, to tell a newer shared session from
   * it.
   */
  private lastSession: CachedSession | undefined
  /** Alone, or shared with a fleet (logins, the idle clock and the OAuth token). */
  private readonly strategy: LoginStrategy

  constructor (private readonly options: SessionManagerOptions) {
    this.credentials = options.credentials
    this.publish = options.publish ?? ignoreSessionEvents
    const ttl = sessionTtlMs(options.sessionIdleSeconds)
    // lru-cache reads a start time of 0 as "no TTL": count from 1 at construction instead of the clock's origin.
    const epoch = options.clock.now()
    this.sessions = new LRUCache<string, CachedSession>({
      max: 1,
      ttl,
      updateAgeOnGet: true, // sliding expiry: each use renews, as upstream does
      ttlResolution: 0,
      perf: { now: () => options.clock.now() - epoch + 1 },
      dispose: (_value, _key, reason) => {
        if (reason === 'expire' || reason === 'evict') this.pendingRenewal ??= 'idle'
      }
    })
    this.oauth = new OAuthTokenCache(async (avoid) => await this.fetchOAuthGrant(avoid), options.clock, this.publish)
    this.loginBackoff = new Backoff(options.clock)
    this.strategy =
      options.fleet === undefined
        ? new SoloLogin(async () => await this.attemptLogin())
        : new FleetCoordinator(options.fleet, this.fleetHost(), {
          clock: options.clock,
          maxFailures: options.guard.maxFailures,
          sessionTtlMs: ttl,
          publish: this.publish
        })
  }

  /**
   * Both tokens when they are cached and usable: the hot path, synchronous, no allocation.
   * Counts as a use of the session (renews its idle expiry).
   */
  currentTokens (): UpstreamTokens | undefined {
    const oauthToken = this.oauth.peek()
    if (oauthToken === undefined) return undefined
    const session = this.sessions.get(SESSION_KEY)
    if (session === undefined) return undefined
    this.lastUsedAt = this.options.clock.now()
    const cached = this.lastTokens
    if (cached !== undefined && cached.oauthToken === oauthToken && cached.sessionToken === session.token) return cached
    this.lastTokens = { oauthToken, sessionToken: session.token } // immutable, shared by requests until a token changes
    return this.lastTokens
  }

  /** Both tokens, logging in or fetching first when needed. Throws AuthUnavailableError. */
  async acquireTokens (): Promise<UpstreamTokens> {
    const cached = this.currentTokens()
    if (cached !== undefined) return cached
    const session = this.sessions.get(SESSION_KEY) ?? (await this.login())
    const oauthToken = await this.oauth.get()
    this.lastUsedAt = this.options.clock.now()
    return { oauthToken, sessionToken: session.token }
  }

  /**
   * The platform refused `stale` because of the session token (`session`) or the bearer (`oauth`).
   * Returns tokens to replay with: newer ones if another request already renewed them, otherwise
   * after one shared login or token fetch. Returns undefined when the refused session (or OAuth
   * token) is one just fetched to replace a refused one (see REFUSED_RENEWAL_HOLD_MS): it is not
   * renewed again so soon, and the caller passes the platform's answer on.
   */
  async tokensAfterRejection (
    stale: UpstreamTokens,
    cause: 'session' | 'oauth',
    reason: RenewalReason = 'expired'
  ): Promise<UpstreamTokens | undefined> {
    if (cause === 'oauth') {
      const oauthToken = await this.oauth.replace(stale.oauthToken)
      if (oauthToken === undefined) return undefined
      const session = this.sessions.get(SESSION_KEY) ?? (await this.login())
      return { oauthToken, sessionToken: session.token }
    }
    const session = this.sessions.peek(SESSION_KEY)
    if (session !== undefined && session.token === stale.sessionToken) {
      if (this.holdsRenewalOf(session, reason)) return undefined
      this.sessions.delete(SESSION_KEY)
      this.pendingRenewal = reason
    }
    return await this.acquireTokens()
  }

  /**
   * A request replayed with `tokens` after a renewal was answered, not refused: the session and the
   * OAuth token work, so their next refusal is renewed at once even within REFUSED_RENEWAL_HOLD_MS (the
   * hold is for an upstream that refuses every fresh token, not for two genuine expiries close together).
   */
  replayServed (tokens: UpstreamTokens): void {
    const session = this.sessions.peek(SESSION_KEY)
    if (session !== undefined && session.token === tokens.sessionToken) session.served = true
    this.oauth.served(tokens.oauthToken)
  }

  /**
   * True when `session` replaced a refused one moments ago and is refused in turn: renewing it at once would likely
   * loop.
   */
  private holdsRenewalOf (session: CachedSession, reason: RenewalReason): boolean {
    const ageMs = this.options.clock.now() - session.loggedInAt
    if (!session.replacedRefusedSession || session.served === true || ageMs >= REFUSED_RENEWAL_HOLD_MS) return false
    if (this.warnedHeldSession !== session) {
      this.warnedHeldSession = session
      this.publish({
        type: 'warning',
        message:
          `ThingSpace refused the session (${reason}) ${Math.round(ageMs / 1000)} s after the login that replaced a refused one; ` +
          `it is not renewed again before ${REFUSED_RENEWAL_HOLD_MS / 1000} s after that login, and clients get ThingSpace's answer meanwhile`
      })
    }
    return true
  }

  /** One warning when logins stop for an unwritable state directory, one line when they can go again. */
  private stateNotWritable (error: unknown): void {
    if (this.stateUnwritable) return
    this.stateUnwritable = true
    this.publish({
      type: 'warning',
      message:
        `the login failure count cannot be written to the state directory (${errorCode(error)}: a full or read-only ` +
        'disk?); no login is sent until it can, and clients get 503 meanwhile. Free space or make ' +
        'M2M_PROXY_STATE_DIR writable: the next login goes by itself'
    })
  }

  private stateWritable (): void {
    if (!this.stateUnwritable) return
    this.stateUnwritable = false
    this.publish({ type: 'info', message: 'the state directory is writable again: logins go again' })
  }

  /** Log in now (start-up); resolves once a session is cached. */
  async startSession (reason?: RenewalReason): Promise<void> {
    if (reason !== undefined) this.pendingRenewal = reason
    await this.login()
  }

  /**
   * Logs in afresh even though a session may be cached (operator request, new password), then logs the
   * replaced session out upstream. Requests keep using the old session until the new one is in place.
   */
  async restartSession (reason: RenewalReason): Promise<void> {
    // A login already under way may use the previous credentials: let it finish, then log in again.
    if (this.loginInFlight !== undefined) await this.loginInFlight.catch(() => undefined)
    const replaced = this.sessions.peek(SESSION_KEY)
    this.pendingRenewal = reason
    const fresh = await this.login()
    if (replaced !== undefined && replaced.token !== fresh.token) {
      try {
        await this.options.api.logout(await this.oauth.get(), replaced.token)
      } catch (error) {
        this.publish({
          type: 'logout-failed',
          message: `logout of the replaced session failed: ${messageOf(error)}`,
          cause: failureCause(error),
          replaced: true
        })
      }
    }
  }

  /**
   * Fleet mode: proves `candidate` (an operator's changed credentials file) with one login of its own,
   * holding the fleet's login lock and counted in the fleet's failure count, before anything is shared:
   * on success it is in force and its session is the fleet's; on a rejection the credentials in force
   * stay, ThingSpace's answer is remembered (never sent again) and readiness says credentials-rejected
   * until new credentials are tried. Also the way back after failed checks: the fleet's own password,
   * proved again, resets the fleet's count. Throws AuthUnavailableError as a login does.
   */
  async verifyCredentials (candidate: SessionCredentials): Promise<void> {
    const guard = this.options.guard
    if (guard.atAccountCeiling) {
      throw new AuthUnavailableError('credentials-rejected', guard.accountCeilingMessage, 300)
    }
    if (this.loginInFlight !== undefined) await this.loginInFlight.catch(() => undefined)
    const previous = this.credentials
    this.useCredentials(candidate)
    this.pendingRenewal = 'admin'
    const verification = this.strategy.login('verify')
    // Requests that need a session meanwhile join this login; its failure is theirs and this method's, never unhandled.
    const joined = verification.finally(() => {
      this.loginInFlight = undefined
    })
    joined.catch(() => undefined)
    this.loginInFlight = joined
    try {
      await verification
      this.candidateRejected = false
    } catch (error) {
      if (previous !== candidate) this.useCredentials(previous)
      // Only a login ThingSpace answered with a rejection, not a guard that sent nothing.
      if (this.strategy.rejectedBefore(candidate.password)) this.candidateRejected = true
      throw error
    }
  }

  /** Fleet mode: an operator's file holds a password ThingSpace rejected before: readiness says so until it changes. */
  markCredentialsRejected (): void {
    this.candidateRejected = true
  }

  /** Ends the credentials-rejected state of a rejected check; true when it was on. */
  clearCredentialsRejected (): boolean {
    const was = this.candidateRejected
    this.candidateRejected = false
    return was
  }

  /** Logs the current session out upstream and forgets it; false when there was none. */
  async endSession (): Promise<boolean> {
    const session = this.sessions.peek(SESSION_KEY)
    if (session === undefined) return false
    this.sessions.delete(SESSION_KEY)
    this.pendingRenewal = undefined
    // The other replicas must not take up a session logged out here.
    await this.strategy.clearSession()
    // Forgotten locally first: even if the logout fails, the token is never sent again.
    try {
      await this.options.api.logout(await this.oauth.get(), session.token)
    } catch (error) {
      // ThingSpace had already ended it (20 minutes idle, or another logout): ended all the same.
      if (error instanceof UpstreamAuthError && error.kind === 'session-invalid') return true
      this.publish({
        type: 'logout-failed',
        message: `logout failed: ${messageOf(error)}`,
        cause: failureCause(error),
        replaced: false
      })
      throw error
    }
    return true
  }

  /**
   * Runs `action` holding the fleet's login lock, so that no replica logs in meanwhile (a password
   * reset: between ThingSpace changing the password and the fleet learning it, a login would fail).
   * Waits for the lock as a login does. `action` must not log in itself (the lock is not re-entrant).
   * In single-process mode it just runs `action`.
   */
  async withLoginLock<T>(action: () => Promise<T>): Promise<T> {
    return await this.strategy.withLoginLock(action)
  }

  /** Stops the background login retry for good (shutdown, close); requests may still log in. */
  close (): void {
    this.closed = true
    this.cancelBackgroundRetry()
    this.strategy.close()
  }

  /** New credentials (reload or rotation): the guard is released if they differ, caches start afresh. */
  useCredentials (credentials: SessionCredentials): void {
    if (!sameSessionCredentials(credentials, this.credentials)) this.candidateRejected = false
    const appChanged =
      credentials.clientId !== this.credentials.clientId || credentials.clientSecret !== this.credentials.clientSecret
    this.credentials = credentials
    if (this.options.guard.useCredentials(credentials)) {
      this.loginBackoff.reset()
      if (this.lastLogin === 'rejected') this.lastLogin = 'none' // no verdict on these credentials yet
    }
    if (appChanged) this.oauth.clear()
  }

  /** The credentials in force (for rotation and reload); never to be logged. */
  get currentCredentials (): SessionCredentials {
    return this.credentials
  }

  /** Resolves once no login is under way (shutdown lets one finish: cut off, it would stay counted as failed). */
  async settled (): Promise<void> {
    await this.loginInFlight?.catch(() => {})
  }

  /** A login is under way: a caller now joins it (single flight) rather than sending one. */
  get loginInProgress (): boolean {
    return this.loginInFlight !== undefined
  }

  /** The last login with the credentials in force was rejected (reset when they change). */
  get lastLoginRejected (): boolean {
    return this.lastLogin === 'rejected'
  }

  get guardEngaged (): boolean {
    return this.options.guard.engaged || (this.strategy.guardIsEngaged && !this.sessions.has(SESSION_KEY))
  }

  /** Rejected logins that may still be sent before logins stop (here, for the account, or in the fleet); 0 engaged. */
  get loginAttemptsLeft (): number {
    if (this.guardEngaged) return 0
    const fleetFailures = this.strategy.status()?.consecutiveLoginFailures ?? 0
    return Math.max(0, Math.min(this.options.guard.attemptsLeft, this.options.guard.maxFailures - fleetFailures))
  }

  /** Fleet mode only: whether the fleet store can be reached now; undefined in single-process mode. */
  get fleetStoreConnected (): boolean | undefined {
    return this.strategy.status()?.storeConnected
  }

  /** Ready: a session is held, or the last login succeeded. */
  get ready (): boolean {
    return this.notReadyReason() === undefined
  }

  /**
   * Why the proxy cannot serve right now, or undefined when it holds a session or its last login
   * succeeded. A refused app key or login says so, as the clients' 503 errors do; 'not-logged-in' and
   * 'login-failing' mean ThingSpace is failing (unreachable, 5xx, timeouts, throttling).
   */
  notReadyReason (): NotReadyReason | undefined {
    if (this.options.guard.engaged || this.candidateRejected) return 'credentials-rejected'
    if (this.sessions.has(SESSION_KEY)) return undefined
    // No login is sent while the count cannot be written: a login that succeeded earlier does not make it ready.
    if (this.stateUnwritable) return 'state-unwritable'
    // Fleet mode: without the store no login is sent, so only a session held serves.
    if (!this.strategy.connected) return 'fleet-store-unreachable'
    if (this.strategy.keyMismatch) return 'fleet-key-mismatch'
    if (this.strategy.guardIsEngaged) return 'credentials-rejected'
    if (this.oauth.clientRejected) return 'oauth-client-rejected'
    if (this.lastLogin === 'succeeded') return undefined
    if (this.lastLogin === 'rejected') return 'credentials-rejected'
    return this.logins === 0 ? 'not-logged-in' : 'login-failing'
  }

  snapshot (): SessionSnapshot {
    const now = this.options.clock.now()
    const session = this.sessions.peek(SESSION_KEY)
    const remainingMs = this.sessions.getRemainingTTL(SESSION_KEY)
    const oauth = this.oauth.current
    const iso = (ms: number | undefined): string | null => (ms === undefined ? null : new Date(ms).toISOString())
    let state: SessionStatus = 'none'
    if (this.options.guard.engaged) state = 'rejected'
    else if (this.strategy.guardIsEngaged && session === undefined) state = 'rejected'
    else if (session !== undefined && remainingMs > 0) state = 'active'
    else if (this.loginInFlight !== undefined) state = 'logging-in'
    else if (this.loginBackoff.remainingMs() > 0) state = 'backing-off'
    return {
      state,
      notReadyReason: this.notReadyReason() ?? null,
      loggedInAt: iso(session?.loggedInAt),
      lastUsedAt: iso(this.lastUsedAt),
      idleExpiresAt: session === undefined ? null : iso(now + remainingMs),
      oauthExpiresAt: iso(oauth?.usableUntil),
      consecutiveLoginFailures: this.options.guard.consecutiveRejections,
      maxLoginFailures: this.options.guard.maxFailures,
      logins: this.logins,
      renewals: this.renewals,
      oauthFetches: this.oauth.fetchCount,
      sessionTokenFingerprint: session === undefined ? null : fingerprint(session.token),
      oauthTokenFingerprint: oauth === undefined ? null : fingerprint(oauth.value),
      fleetMode: this.strategy.shared,
      fleet: this.strategy.status()
    }
  }

  /**
   * Single-flight, level 1 (this process): every caller joins the one login promise under way.
   * Level 2 (the fleet) is the store's login lock, taken in fleetLogin().
   */
  private login (): Promise<CachedSession> {
    if (this.loginInFlight === undefined) {
      this.loginInFlight = this.loginOnce().finally(() => {
        this.loginInFlight = undefined
      })
      this.loginInFlight.catch((error: unknown) => this.retryInBackground(error))
    }
    return this.loginInFlight
  }

  /**
   * After a login (or its OAuth token fetch) failed because ThingSpace is failing, not because it
   * refused anything, and the proxy is not ready: logs in again once the backoff allows, without
   * waiting for a client request (an unready pod gets none). Rejections are never retried here: they
   * wait for new credentials (the lockout guard). Uses login(), so it joins a client's login under way.
   */
  private retryInBackground (error: unknown): void {
    const setTimer = this.options.clock.setTimer
    if (this.closed || setTimer === undefined || this.backgroundRetry !== undefined) return
    if (
      !(error instanceof AuthUnavailableError) ||
      !BACKGROUND_RETRY_REASONS.has(error.reason) ||
      !this.waitingForUpstream()
    ) { return }
    // It counts toward the lockout guard: the budget is not spent without a client or an operator asking.
    if (this.lastLogin === 'unknown-outcome') return
    // Nothing was sent for want of a writable count: the last login that was sent decides, and a rejection waits for
    // new credentials.
    if (error.reason === 'state-unwritable' && this.lastLogin === 'rejected') return
    const delayMs = Math.max(1, error.retryAfterSeconds) * 1000
    const waitsForStore = error.reason === 'fleet-store-unreachable'
    this.publish({
      type: 'background-retry',
      delayMs,
      cause:
        error.reason === 'fleet-store-unreachable' || error.reason === 'state-unwritable'
          ? error.reason
          : 'upstream-unavailable'
    })
    const timer = setTimer(() => {
      this.retryInBackgroundNow()
    }, delayMs)
    this.backgroundRetry = { timer, waitsForStore }
  }

  private cancelBackgroundRetry (): void {
    this.backgroundRetry?.timer.cancel()
    this.backgroundRetry = undefined
  }

  private retryInBackgroundNow (): void {
    this.cancelBackgroundRetry()
    if (this.closed || !this.waitingForUpstream()) return
    this.login().catch(() => {
      /* reported through the events; a failure schedules the next retry */
    })
  }

  /**
   * Fleet mode: the store answers again (reconnected, or answering after a stall). A background login that failed for
   * want of it goes now rather than at its timer, so that a replica is ready as soon as Redis is back.
   */
  private storeAnswersAgain (): void {
    if (this.backgroundRetry?.waitsForStore === true) this.retryInBackgroundNow()
  }

  /** Not ready, and for no rejection: ThingSpace was unreachable or failing. */
  private waitingForUpstream (): boolean {
    const reason = this.notReadyReason()
    return (
      reason === 'not-logged-in' ||
      reason === 'login-failing' ||
      reason === 'fleet-store-unreachable' ||
      reason === 'state-unwritable'
    )
  }

  private async loginOnce (): Promise<CachedSession> {
    const guard = this.options.guard
    if (guard.atAccountCeiling) {
      throw new AuthUnavailableError('credentials-rejected', guard.accountCeilingMessage, 300)
    }
    if (guard.engaged) {
      throw new AuthUnavailableError(
        'credentials-rejected',
        `ThingSpace rejected the credentials ${guard.consecutiveRejections} times in a row; logins are paused to avoid the account lockout until the credentials file changes`,
        60
      )
    }
    const waitMs = this.loginBackoff.remainingMs()
    if (waitMs > 0) {
      throw this.lastLogin === 'rejected'
        ? new AuthUnavailableError(
          'credentials-rejected',
            `ThingSpace rejected the last login; ${guard.maxFailures - guard.consecutiveRejections} more attempt(s) before logins pause`,
            Math.ceil(waitMs / 1000)
        )
        : new AuthUnavailableError(
          'upstream-unavailable',
          'ThingSpace session login is failing; retrying with backoff',
          Math.ceil(waitMs / 1000)
        )
    }
    return await this.strategy.login()
  }

  /**
   * The one login sent to ThingSpace, counted in the local guard first. Never throws: a failure says whether it stays
   * counted (rejected, or sent without an answer: ThingSpace may have counted it), here and in the fleet alike.
   */
  private async attemptLogin (): Promise<LoginAttempt> {
    const guard = this.options.guard
    try {
      let oauthToken = await this.oauth.get()
      // One more try only when the gateway refused our bearer: the login itself was never evaluated.
      for (let attempt = 1; ; attempt++) {
        try {
          guard.beginAttempt()
          this.stateWritable()
        } catch (writeError) {
          // Without the count on disk a crash loop could not be stopped: do not log in.
          this.stateNotWritable(writeError)
          const error = new AuthUnavailableError(
            'state-unwritable',
            'the login failure count cannot be written to the state directory (M2M_PROXY_STATE_DIR); no login is sent until it can',
            30
          )
          return { ok: false, error, counted: false }
        }
        try {
          const token = await this.options.api.login(oauthToken, this.credentials.username, this.credentials.password)
          return { ok: true, session: this.loggedIn(token) }
        } catch (error) {
          if (!(error instanceof UpstreamAuthError)) {
            guard.attemptNotCounted()
            return { ok: false, error, counted: false }
          }
          if (error.kind === 'oauth-invalid' && attempt === 1) {
            let replaced: string | undefined
            try {
              replaced = await this.oauth.replace(oauthToken)
            } catch (fetchError) {
              guard.attemptNotCounted()
              throw fetchError
            }
            // Undefined: a bearer fetched moments ago for a refused one, refused again (held); failed as below.
            if (replaced !== undefined) {
              guard.attemptNotCounted()
              oauthToken = replaced
              continue
            }
          }
          return {
            ok: false,
            error: this.loginFailed(error),
            counted: error.kind === 'rejected' || error.kind === 'unknown-outcome'
          }
        }
      }
    } catch (error) {
      // No OAuth token: nothing was sent.
      return { ok: false, error, counted: false }
    }
  }

  /** What the fleet coordinator reads and does in this replica. */
  private fleetHost (): FleetHost {
    return {
      held: () => this.sessions.peek(SESSION_KEY),
      replacing: () => this.lastSession,
      renewingIdle: () => this.pendingRenewal === 'idle',
      lastUsedAt: () => this.lastUsedAt,
      sendLogin: async () => await this.attemptLogin(),
      password: () => this.credentials.password,
      drop: () => {
        this.sessions.delete(SESSION_KEY)
        this.pendingRenewal = undefined
        this.publish({ type: 'warning', message: "the fleet's session was ended on another replica: dropped here too" })
      },
      takeUp: (shared, ttlMs, renewal) => this.takeUpShared(shared, ttlMs, renewal),
      storeAnswersAgain: () => this.storeAnswersAgain(),
      closed: () => this.closed
    }
  }

  /**
   * A session the fleet shares replaces this one's, without a login: another replica logged it in, or
   * kept it in use while this replica was idle. `renewal`: it ends this replica's renewal; otherwise it
   * follows a notification. Cached for `ttlMs`, what is left of it on the fleet's idle clock.
   */
  private takeUpShared (shared: SharedSession, ttlMs: number, renewal: boolean): CachedSession {
    const session: CachedSession = { token: shared.token, loggedInAt: shared.loggedInAt, replacedRefusedSession: false }
    if (renewal) {
      session.replacedRefusedSession = this.pendingRenewal !== undefined && REFUSAL_REASONS.has(this.pendingRenewal)
      this.pendingRenewal = undefined
      this.cancelBackgroundRetry()
      this.loginBackoff.reset()
      this.lastLogin = 'succeeded'
      this.lastUsedAt = this.options.clock.now()
    }
    this.sessions.set(SESSION_KEY, session, { ttl: Math.max(1, Math.min(ttlMs, this.sessions.ttl)) })
    this.lastSession = session
    return session
  }

  /**
   * The OAuth token: in fleet mode another replica's when it has one this replica does not hold, else fetched (and
   * shared).
   */
  private async fetchOAuthGrant (avoid: readonly string[]): Promise<FetchedGrant> {
    const fetch = async (): Promise<FetchedGrant> =>
      await this.options.api.fetchOAuthToken(this.credentials.clientId, this.credentials.clientSecret)
    return await this.strategy.oauthGrant(avoid, OAUTH_REFRESH_AHEAD_MS, fetch)
  }

  private loggedIn (token: string): CachedSession {
    this.cancelBackgroundRetry()
    this.options.guard.recordSuccess()
    this.loginBackoff.reset()
    this.logins += 1
    this.lastLogin = 'succeeded'
    const replacedRefusedSession = this.pendingRenewal !== undefined && REFUSAL_REASONS.has(this.pendingRenewal)
    if (this.pendingRenewal !== undefined) {
      this.renewals += 1
      this.publish({ type: 'renewal', reason: this.pendingRenewal })
      this.pendingRenewal = undefined
    }
    const session = { token, loggedInAt: this.options.clock.now(), replacedRefusedSession }
    this.lastUsedAt = session.loggedInAt // the platform's idle clock starts at login
    this.sessions.set(SESSION_KEY, session)
    this.lastSession = session
    this.publish({ type: 'login', outcome: 'success', consecutiveRejections: 0 })
    return session
  }

  private loginFailed (error: UpstreamAuthError): AuthUnavailableError {
    const guard = this.options.guard
    if (error.kind === 'unavailable' || error.kind === 'oauth-invalid') guard.attemptNotCounted()
    // 'rejected' and 'unknown-outcome' stay counted: the platform may have counted them too.
    this.loginBackoff.recordFailure(error.retryAfterSeconds)
    this.lastLogin =
      error.kind === 'rejected' ? 'rejected' : error.kind === 'unknown-outcome' ? 'unknown-outcome' : 'failed'
    if (error.kind === 'rejected') {
      this.publish({
        type: 'login',
        outcome: 'rejected',
        consecutiveRejections: guard.consecutiveRejections,
        message: error.message,
        cause: failureCause(error)
      })
      if (guard.atAccountCeiling) this.publish({ type: 'warning', message: guard.accountCeilingMessage })
      return new AuthUnavailableError(
        'credentials-rejected',
        `ThingSpace rejected the login (${error.message}); ${guard.engaged ? 'logins are paused until the credentials file changes' : `${guard.maxFailures - guard.consecutiveRejections} more attempt(s) before logins pause`}`,
        guard.engaged ? 60 : Math.max(1, Math.ceil(this.loginBackoff.remainingMs() / 1000))
      )
    }
    this.publish({
      type: 'login',
      outcome: 'error',
      consecutiveRejections: guard.consecutiveRejections,
      message: error.message,
      cause: failureCause(error)
    })
    return new AuthUnavailableError(
      'upstream-unavailable',
      `ThingSpace session login failed (${error.message}); retrying with backoff`,
      Math.max(1, Math.ceil(this.loginBackoff.remainingMs() / 1000))
    )
  }
}

function sameSessionCredentials (a: SessionCredentials, b: SessionCredentials): boolean {
  return (
    a.username === b.username &&
    a.password === b.password &&
    a.clientId === b.clientId &&
    a.clientSecret === b.clientSecret
  )
}

/** Errors after which a login is tried again in the background while not ready. */
// state-unwritable: an unready pod gets no client request, so without a retry of its own it would stay unready once
// the state directory is writable again.
const BACKGROUND_RETRY_REASONS: ReadonlySet<string> = new Set([
  'upstream-unavailable',
  'fleet-store-unreachable',
  'state-unwritable'
])
