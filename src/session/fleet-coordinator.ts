// Fleet mode of the session logic: logins shared by the replicas of one account through the FleetStore (one login lock,
// one failure count), the fleet's idle clock, the shared OAuth token and re-seeding a store that lost its state. No
// HTTP framework here, and never on the hot path: the store is read on renewal, on notification and by a timer every
// few seconds.

import { messageOf } from '../errors.js'
import type { OAuthGrant } from './auth-client.js'
import { waitingTimer, type Clock, type Timer } from '../clock.js'
import { AuthUnavailableError } from './errors.js'
import type { PublishSessionEvent } from './events.js'
import { ForeignFleetKeyError, UntrustedRecordError, type FleetChange, type FleetLock, type LoginLedger, type SharedSession, type SharedSessionStore } from './shared-session.js'
import { ACCOUNT_FAILURE_CEILING } from './login-guard.js'
import type { CachedSession, FleetStatus, LoginAttempt, LoginMode, LoginStrategy } from './login-strategy.js'

/** Fleet mode: the state the replicas share (FleetStore) and how long one replica may hold the login lock. */
export interface FleetOptions {
  store: SharedSessionStore
  /** Longer than a login and its OAuth token fetch can take: a holder that dies frees it after this. */
  lockTtlMs: number
  /**
   * A waiter re-reads the shared session this often when no notification came (pub/sub drops messages on reconnect).
   */
  pollIntervalMs?: number
  /** How often this replica shares its last use of the session (the fleet's idle clock); never per request. */
  shareUseIntervalMs?: number
  /**
   * Called holding the login lock, right before a login is counted and sent: brings the credentials up
   * to the fleet's newest password generation (useCredentials). If it rejects, no login is sent.
   */
  beforeLogin?: () => Promise<void>
  /**
   * What this replica verified, on disk: the passwords ThingSpace rejected (never sent again) and the
   * highest fleet failure count it saw (a count set back in the store buys no extra attempt).
   */
  ledger?: LoginLedger
}

export const FLEET_POLL_INTERVAL_MS = 250
export const FLEET_SHARE_USE_INTERVAL_MS = 5000

/** What the coordinator needs from the session manager of its replica. */
export interface FleetHost {
  /** The session cached now (not idled out locally). */
  held: () => CachedSession | undefined
  /** The last session this replica held, cached or not: the one a renewal replaces. */
  replacing: () => CachedSession | undefined
  /**
   * The renewal under way is for local idleness only (not a refusal, not an operator's restart): the fleet may still
   * use the session.
   */
  renewingIdle: () => boolean
  /** This replica's last use of a session. */
  lastUsedAt: () => number | undefined
  /** Counts the attempt locally and sends the login. */
  sendLogin: () => Promise<LoginAttempt>
  /** The password the next login sends (never logged). */
  password: () => string
  /** Forgets the cached session without a logout: another replica ended it. */
  drop: () => void
  /**
   * Caches `shared` for `ttlMs` without a login; `renewal`: it ends a renewal (a login avoided), else it follows a
   * notification.
   */
  takeUp: (shared: SharedSession, ttlMs: number, renewal: boolean) => CachedSession
  /** The store answers again after an outage or a stall (a login waiting for it may go now). */
  storeAnswersAgain: () => void
  closed: () => boolean
}

/** A fleet of replicas: sessions shared through the FleetStore. */
export class FleetCoordinator implements LoginStrategy {
  readonly shared = true
  private readonly store: SharedSessionStore
  private readonly pollMs: number
  private guardEngaged = false
  /** The last store call found the shared state sealed with another fleet key. */
  private foreignKeySeen = false
  private failuresSeen: number | undefined
  private loginsAvoided = 0
  private lockWaits = 0
  /** The last use shared with the fleet, and of which session. */
  private sharedUse: { loggedInAt: number; lastUsedAt: number } | undefined
  private shareTimer: Timer | undefined
  private closed = false
  /** The last altered session record warned about: one warning, not one per read. */
  private sessionRecordProblem: string | undefined
  /** Wakes replicas waiting for another's login (a `session` notification). */
  private readonly waiters = new Set<() => void>()
  private readonly unsubscribe: () => void

  constructor (
    private readonly options: FleetOptions,
    private readonly host: FleetHost,
    private readonly env: { clock: Clock; maxFailures: number; sessionTtlMs: number; publish: PublishSessionEvent }
  ) {
    this.store = options.store
    this.pollMs = options.pollIntervalMs ?? FLEET_POLL_INTERVAL_MS
    this.unsubscribe = this.store.subscribe((change) => this.changed(change))
    this.scheduleShareUse()
  }

  get connected (): boolean {
    return this.store.connected
  }

  get keyMismatch (): boolean {
    return this.foreignKeySeen
  }

  /** The fleet's failure count was at its limit at the last attempt. */
  get guardIsEngaged (): boolean {
    return this.guardEngaged
  }

  rejectedBefore (password: string): boolean {
    return this.options.ledger?.isRejected(password) === true
  }

  status (): FleetStatus {
    return {
      storeConnected: this.store.connected,
      consecutiveLoginFailures: this.failuresSeen ?? null,
      loginsAvoided: this.loginsAvoided,
      lockWaits: this.lockWaits
    }
  }

  /**
   * Single-flight, level 2 (the fleet): a session the fleet keeps alive is taken up; otherwise one
   * replica at a time holds the login lock, and the others wait for its outcome (a notification, or
   * polling as the backstop) and take up the session it wrote. The holder re-reads the shared session
   * first: no login while a usable one is there.
   */
  async login (mode: LoginMode = 'renew'): Promise<CachedSession> {
    const replacing = this.host.replacing()
    if (mode === 'renew') {
      const current = await this.call('read the shared session', async () => await this.readSharedSession())
      if (this.usable(current, replacing)) return this.takeUp(current)
    }
    return await this.holdingLoginLock(async () => await this.loginHoldingLock(replacing, mode), {
      waiting: 'waiting for its login',
      countWait: true,
      // Between polls the holder may have logged in: its session is taken up. Else the lock may be free
      // again (the holder failed): it is taken, and the fleet's count decides.
      meanwhile:
        mode === 'verify'
          ? undefined
          : async () => {
            const shared = await this.call('read the shared session', async () => await this.readSharedSession())
            return this.usable(shared, replacing) ? this.takeUp(shared) : undefined
          }
    })
  }

  /** Runs `action` holding the login lock (see SessionManager.withLoginLock). */
  async withLoginLock<T>(action: () => Promise<T>): Promise<T> {
    return await this.holdingLoginLock(action, { waiting: 'trying again', countWait: false })
  }

  /**
   * Takes the login lock, runs `action`, releases it. While another replica holds it, waits for the next
   * notification (or a poll), at most until the lock would have expired under a dead holder; `meanwhile`
   * may end the wait with a result of its own. `countWait`: a login's wait, counted and published.
   */
  private async holdingLoginLock<T>(
    action: () => Promise<T>,
    options: { waiting: string; countWait: boolean; meanwhile?: () => Promise<T | undefined> }
  ): Promise<T> {
    const maxPolls = this.maxLockPolls()
    for (let poll = 0; ; poll++) {
      const lock = await this.call(
        'take the login lock',
        async () => await this.store.takeLock('login', this.options.lockTtlMs)
      )
      if (lock !== undefined) {
        try {
          return await action()
        } finally {
          await this.release(lock)
        }
      }
      if (poll === 0 && options.countWait) {
        this.lockWaits += 1
        this.env.publish({ type: 'fleet-lock-wait' })
      }
      if (poll >= maxPolls) {
        throw new AuthUnavailableError(
          'upstream-unavailable',
          `another replica of the fleet holds the login lock; ${options.waiting}`,
          1
        )
      }
      await this.nextChange(this.pollMs)
      if (this.closed) throw new AuthUnavailableError('upstream-unavailable', 'the proxy is closing', 1)
      const result = await options.meanwhile?.()
      if (result !== undefined) return result
    }
  }

  /** The session was logged out here: no replica may take it up. */
  async clearSession (): Promise<void> {
    await this.store
      .clearSession()
      .catch((error: unknown) =>
        this.env.publish({
          type: 'warning',
          message: `the shared session could not be cleared in the fleet store: ${messageOf(error)}`
        })
      )
  }

  /**
   * The fleet's idle clock: moves the shared session's last use to this replica's, at most every
   * FLEET_SHARE_USE_INTERVAL_MS, and only when it used the session since. When the store no longer
   * has this replica's session (flushed, restarted empty, or it never got it), puts it back unless a
   * newer one is there, which it then takes up. `force`: even without a new use (after a reconnection).
   */
  async shareUse (force = false): Promise<void> {
    const held = this.host.held()
    if (held === undefined || this.closed) return
    const lastUsedAt = Math.max(this.host.lastUsedAt() ?? held.loggedInAt, held.loggedInAt)
    const shared = this.sharedUse
    if (!force && shared !== undefined && shared.loggedInAt === held.loggedInAt && shared.lastUsedAt >= lastUsedAt) {
      return
    }
    if (await this.store.touchSession(held.loggedInAt, lastUsedAt)) {
      this.sharedUse = { loggedInAt: held.loggedInAt, lastUsedAt }
      return
    }
    const stored = await this.readSharedSession()
    if (stored !== undefined && stored.loggedInAt >= held.loggedInAt) {
      if (stored.token !== held.token && this.usable(stored, held)) {
        this.host.takeUp(stored, this.remainingMs(stored), false)
      }
      return
    }
    const session = { token: held.token, loggedInAt: held.loggedInAt, lastUsedAt }
    const written =
      stored === undefined ? await this.store.seedSession(session) : (await this.store.writeSession(session), true)
    if (written) {
      this.sharedUse = { loggedInAt: held.loggedInAt, lastUsedAt }
      this.env.publish({
        type: 'warning',
        message:
          stored === undefined
            ? 'the fleet store had no session (a Redis restarted or flushed without persistence?): re-seeded it with the session this replica holds'
            : "the fleet store held an older session than this replica: wrote this replica's session back"
      })
    }
  }

  /**
   * The OAuth token for this replica: the fleet's when another replica fetched one this replica does
   * not hold yet and it has most of its life ahead; otherwise fetched by one replica at a time (the
   * fleet's oauth lock) while the others wait for its token, so that an expiry costs the fleet one
   * fetch. The token endpoint has no lockout: a store that cannot be reached means fetching alone.
   */
  async oauthGrant (
    avoid: readonly string[],
    minLifetimeMs: number,
    fetch: () => Promise<OAuthGrant>
  ): Promise<OAuthGrant & { fromFleet?: true }> {
    const shared = await this.sharedOAuthGrant(avoid, minLifetimeMs)
    if (shared !== undefined) return { ...shared, fromFleet: true }
    for (let poll = 0; poll <= this.maxLockPolls(); poll++) {
      let lock: FleetLock | undefined
      try {
        lock = await this.store.takeLock('oauth', this.options.lockTtlMs)
      } catch {
        break
      }
      if (lock !== undefined) {
        try {
          // Another replica may have shared one between the read and the lock.
          const fresh = await this.sharedOAuthGrant(avoid, minLifetimeMs)
          if (fresh !== undefined) return { ...fresh, fromFleet: true }
          const grant = await fetch()
          await this.shareOAuthToken(grant, this.env.clock.now())
          return grant
        } finally {
          await this.release(lock)
        }
      }
      await this.nextChange(this.pollMs)
      if (this.closed) break
      const fetched = await this.sharedOAuthGrant(avoid, minLifetimeMs)
      if (fetched !== undefined) return { ...fetched, fromFleet: true }
    }
    const grant = await fetch()
    await this.shareOAuthToken(grant, this.env.clock.now())
    return grant
  }

  /**
   * The fleet's OAuth token when another replica fetched one this replica does not hold yet and it has most of its life
   * ahead.
   */
  private async sharedOAuthGrant (avoid: readonly string[], minLifetimeMs: number): Promise<OAuthGrant | undefined> {
    let shared
    try {
      shared = await this.store.readOAuthToken()
    } catch {
      return undefined // the token endpoint has no lockout: fetch one
    }
    if (shared === undefined || avoid.includes(shared.token)) return undefined
    const lifetimeMs = shared.expiresAt - this.env.clock.now()
    if (lifetimeMs < minLifetimeMs) return undefined
    return { accessToken: shared.token, expiresInSeconds: lifetimeMs / 1000 }
  }

  /** Shares a token fetched here with the other replicas; best effort. */
  private async shareOAuthToken (grant: OAuthGrant, receivedAt: number): Promise<void> {
    await this.store
      .writeOAuthToken({ token: grant.accessToken, expiresAt: receivedAt + grant.expiresInSeconds * 1000 })
      .catch((error: unknown) =>
        this.env.publish({
          type: 'warning',
          message: `the OAuth token could not be shared in the fleet store: ${messageOf(error)}`
        })
      )
  }

  close (): void {
    this.closed = true
    this.shareTimer?.cancel()
    this.shareTimer = undefined
    this.unsubscribe()
    for (const wake of [...this.waiters]) wake()
  }

  /**
   * Holding the lock: take up a usable shared session, or catch up on the password, count the attempt (fleet, then
   * local) and log in.
   */
  private async loginHoldingLock (replacing: CachedSession | undefined, mode: LoginMode): Promise<CachedSession> {
    const store = this.store
    if (mode === 'renew') {
      const shared = await this.call('read the shared session', async () => await this.readSharedSession())
      if (this.usable(shared, replacing)) return this.takeUp(shared)
      const beforeLogin = this.options.beforeLogin
      if (beforeLogin !== undefined) await this.call("read the fleet's password generation", beforeLogin)
    }
    const ledger = this.options.ledger
    const password = this.host.password()
    if (ledger?.isRejected(password) === true) {
      throw new AuthUnavailableError(
        'credentials-rejected',
        'ThingSpace rejected the password in force from this replica before: it is never sent again; put an accepted password in the credentials file (it is checked with one login)',
        60
      )
    }
    const before = await this.failuresBeforeLogin()
    this.noteFailures(before)
    const limit = mode === 'verify' ? ACCOUNT_FAILURE_CEILING : this.env.maxFailures
    if (before >= limit) throw this.guardError(before)
    const counted = await this.call('count the login attempt', async () => await store.countLoginAttempt())
    if (!Number.isSafeInteger(counted) || counted < 1 || counted > ACCOUNT_FAILURE_CEILING + 1) {
      // Changed from outside between the read and the count: no login on a count that cannot be trusted. (One above
      // the ceiling can be another holder's count, below.)
      throw new AuthUnavailableError(
        'fleet-store-unreachable',
        "the fleet's login failure count changed from outside while this login was counted: not sent",
        5
      )
    }
    if (counted > limit) {
      // Another holder counted meanwhile (a lock that expired under it): never past the limit.
      await this.uncount()
      this.noteFailures(counted - 1)
      throw this.guardError(counted - 1)
    }
    const attempt = await this.host.sendLogin()
    if (!attempt.ok) {
      if (attempt.counted) {
        this.noteFailures(counted)
        if (attempt.error instanceof AuthUnavailableError && attempt.error.reason === 'credentials-rejected') {
          ledger?.recordRejected(password)
        }
      } else await this.uncount()
      throw attempt.error
    }
    const session = attempt.session
    this.noteFailures(0)
    ledger?.clearFailures()
    try {
      await store.resetLoginFailures()
      await store.writeSession({ token: session.token, loggedInAt: session.loggedInAt, lastUsedAt: session.loggedInAt })
      this.sharedUse = { loggedInAt: session.loggedInAt, lastUsedAt: session.loggedInAt }
    } catch (error) {
      // This replica serves with its session, and shareUse() writes it back once the store answers.
      this.env.publish({
        type: 'warning',
        message: `logged in, but the fleet store was not updated: ${messageOf(error)}`
      })
    }
    return session
  }

  /**
   * The fleet's count before a login: the store's, unless this replica saw a higher one with no login
   * success since (the count was set back from outside, or lost with a Redis restart): then its own,
   * put back into the store.
   */
  private async failuresBeforeLogin (): Promise<number> {
    const stored = await this.call(
      "read the fleet's login failure count",
      async () => await this.store.readLoginFailures()
    )
    const ledger = this.options.ledger
    if (!isFailureCount(stored)) {
      // No replica writes that (a count above the ceiling, negative, or not a number): someone else did, and the real
      // count is unknown. Taken as at the limit (or what this replica saw, if more): no login until one is checked the
      // way an operator does after rejections (docs/fleet.md), which a success then resets.
      const restored = Math.min(Math.max(ledger?.failuresSeen ?? 0, this.env.maxFailures), ACCOUNT_FAILURE_CEILING)
      this.env.publish({
        type: 'warning',
        message:
          `the fleet's login failure count in the store (its failures key) is not a count from 0 to ${ACCOUNT_FAILURE_CEILING}: ` +
          `written from outside; it is put back at ${restored}, as if the logins had been rejected`
      })
      return await this.call(
        "restore the fleet's login failure count",
        async () => await this.store.raiseLoginFailures(restored, ACCOUNT_FAILURE_CEILING)
      )
    }
    if (ledger === undefined || stored >= ledger.failuresSeen) return stored
    // Another replica's success this one did not take up (its session has idled out since) reset the count rightly.
    const shared = await this.call('read the shared session', async () => await this.readSharedSession())
    if (shared !== undefined && shared.loggedInAt > ledger.failuresSeenAt) {
      ledger.clearFailures()
      return stored
    }
    const seen = ledger.failuresSeen
    this.env.publish({
      type: 'warning',
      message:
        `the fleet's login failure count in the store is ${stored}, lower than the ${seen} this replica saw with no login success since ` +
        '(set back from outside, or lost with the store): this replica keeps counting from its own and puts it back'
    })
    return await this.call(
      "restore the fleet's login failure count",
      async () => await this.store.raiseLoginFailures(seen, ACCOUNT_FAILURE_CEILING)
    )
  }

  /**
   * Whether `shared` can replace `replacing` without a login: it is alive on the fleet's idle clock,
   * and either another session not older than the one replaced, or the very same one when this
   * replica's copy only idled out locally while other replicas kept it in use.
   */
  private usable (shared: SharedSession | undefined, replacing: CachedSession | undefined): shared is SharedSession {
    if (shared === undefined || this.remainingMs(shared) <= 0) return false
    if (replacing === undefined) return true
    if (shared.token === replacing.token) return this.host.renewingIdle()
    return shared.loggedInAt >= replacing.loggedInAt
  }

  /** Time left before the session idles out on the fleet's clock (with the same margin as a replica's own). */
  private remainingMs (shared: SharedSession): number {
    return this.env.sessionTtlMs - (this.env.clock.now() - Math.max(shared.lastUsedAt, shared.loggedInAt))
  }

  private takeUp (shared: SharedSession): CachedSession {
    this.guardEngaged = false
    // A sealed session logged in after the failures this replica saw proves a success since: ThingSpace's count is 0
    // again.
    const ledger = this.options.ledger
    if (ledger !== undefined && shared.loggedInAt > ledger.failuresSeenAt) ledger.clearFailures()
    this.loginsAvoided += 1
    this.env.publish({ type: 'fleet-login-avoided' })
    this.sharedUse = { loggedInAt: shared.loggedInAt, lastUsedAt: shared.lastUsedAt }
    return this.host.takeUp(shared, this.remainingMs(shared), true)
  }

  private changed (change: FleetChange): void {
    if (change.kind === 'session') this.sessionChanged(change.ended === true)
    else if (change.kind === 'connected') {
      // The store may have lost its state (a Redis without persistence): put back what this replica holds.
      this.shareUse(true).catch((error: unknown) =>
        this.env.publish({ type: 'warning', message: `the fleet store could not be re-seeded: ${messageOf(error)}` })
      )
      this.host.storeAnswersAgain()
    }
  }

  /**
   * A `session` notification: wakes the replicas waiting for another's login, and lets one that is
   * not waiting take up a session newer than its own (read from the store: no secret travels in the
   * message).
   */
  private sessionChanged (ended: boolean): void {
    const waiting = this.waiters.size > 0
    for (const wake of [...this.waiters]) wake()
    // Without a command connection (the notification's came back first), the reconnection re-reads anyway.
    if (waiting || this.closed || !this.store.connected) return
    this.readSharedSession().then(
      (shared) => {
        const held = this.host.held()
        // Ended on another replica (and not replaced since): the platform no longer knows it, drop it at once.
        // A forged notification changes nothing while the store still holds the session.
        if (ended && shared === undefined && held !== undefined) {
          this.host.drop()
          return
        }
        if (
          held === undefined ||
          this.waiters.size > 0 ||
          shared === undefined ||
          shared.token === held.token ||
          !this.usable(shared, held)
        ) { return }
        this.host.takeUp(shared, this.remainingMs(shared), false)
      },
      (error: unknown) =>
        this.env.publish({
          type: 'warning',
          message: `a fleet session notification could not be followed: ${messageOf(error)}`
        })
    )
  }

  private scheduleShareUse (): void {
    const setTimer = this.env.clock.setTimer
    if (setTimer === undefined || this.closed) return
    this.shareTimer = setTimer(() => {
      this.shareTimer = undefined
      this.shareUse()
        .catch(() => {
          /* the store logs its own connection problems; the next round tries again */
        })
        .finally(() => this.scheduleShareUse())
    }, this.options.shareUseIntervalMs ?? FLEET_SHARE_USE_INTERVAL_MS)
  }

  /**
   * The shared session, or undefined when there is none or its record was altered outside the fleet
   * (warned once per kind of problem): a login then replaces it, at the cost of one login, instead of
   * every login being refused for as long as the altered record stays. A record sealed with another
   * fleet key still rejects: this replica must not overwrite the fleet's state.
   */
  private async readSharedSession (): Promise<SharedSession | undefined> {
    try {
      const shared = await this.store.readSession()
      this.sessionRecordProblem = undefined
      return shared
    } catch (error) {
      if (!(error instanceof UntrustedRecordError)) throw error
      if (this.sessionRecordProblem !== error.message) {
        this.sessionRecordProblem = error.message
        this.env.publish({
          type: 'warning',
          message: `${error.message}; the shared session is treated as absent and replaced at the next login`
        })
      }
      return undefined
    }
  }

  /** Bounded by polls, not by the clock: the lock expires by then (a dead holder), whatever clock the store runs on. */
  private maxLockPolls (): number {
    return Math.ceil(this.options.lockTtlMs / this.pollMs) + 2
  }

  /** Resolves on the next `session` notification or after `ms`, whichever comes first. */
  private async nextChange (ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const wake = (): void => {
        timer.cancel()
        this.waiters.delete(wake)
        resolve()
      }
      const timer = waitingTimer(this.env.clock)(wake, ms)
      this.waiters.add(wake)
    })
  }

  /** A store call a login depends on: if it fails, no login is sent (the fleet's count cannot be checked). */
  private async call<T>(what: string, call: () => Promise<T>): Promise<T> {
    try {
      const result = await call()
      this.foreignKeySeen = false
      return result
    } catch (error) {
      if (error instanceof ForeignFleetKeyError) {
        // Not an outage: retrying cannot help until the key is fixed, so no background retry either.
        this.foreignKeySeen = true
        throw new AuthUnavailableError(
          'fleet-key-mismatch',
          `${messageOf(error)}; this replica sends no login until then`,
          30
        )
      }
      throw new AuthUnavailableError(
        'fleet-store-unreachable',
        `cannot ${what} in the fleet store (${messageOf(error)}); no login is sent while the fleet's failure count cannot be checked`,
        5
      )
    }
  }

  private async release (lock: FleetLock): Promise<void> {
    try {
      await this.store.releaseLock(lock)
    } catch (error) {
      this.env.publish({
        type: 'warning',
        message: `the fleet ${lock.name} lock could not be released (it expires by itself): ${messageOf(error)}`
      })
    }
  }

  /** Takes back a counted attempt that did not count (5xx, no connection, nothing sent). */
  private async uncount (): Promise<void> {
    try {
      this.noteFailures(await this.store.uncountLoginAttempt())
    } catch (error) {
      // Left counted: conservative, the budget is smaller, never larger.
      this.env.publish({
        type: 'warning',
        message: `a login attempt that did not count could not be taken back in the fleet store: ${messageOf(error)}`
      })
    }
  }

  private noteFailures (failures: number): void {
    this.failuresSeen = failures
    this.options.ledger?.recordFailures(failures, this.env.clock.now())
    this.guardEngaged = failures >= this.env.maxFailures
  }

  private guardError (failures: number): AuthUnavailableError {
    return new AuthUnavailableError(
      'credentials-rejected',
      `ThingSpace rejected ${failures} login(s) in a row across the fleet (M2M_PROXY_MAX_LOGIN_FAILURES ${this.env.maxFailures}); logins are paused fleet-wide until one succeeds or the fleet's count is reset`,
      60
    )
  }
}

/** What a replica can have stored as the fleet's count: a whole number from 0 to the account's ceiling. */
function isFailureCount (value: number): boolean {
  return Number.isSafeInteger(value) && value >= 0 && value <= ACCOUNT_FAILURE_CEILING
}
