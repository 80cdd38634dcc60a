// The shared-session port, owned by the session logic that uses it (fleet-coordinator.ts): the session, the OAuth
// token, the locks and the login failure count that replicas of one account share, and what this replica keeps of them
// on disk. The fleet store (fleet/store.ts) implements it, in Redis or in memory.

/**
 * The VZ-M2M session the fleet shares. Times are milliseconds of the writers' clock (wall-clock time across a fleet).
 */
export interface SharedSession {
  token: string
  loggedInAt: number
  /** Coarse: replicas move it forward at most every few seconds (touchSession). */
  lastUsedAt: number
}

export interface SharedOAuthToken {
  token: string
  /** When the token stops being valid, on the store's clock; the store forgets it then. */
  expiresAt: number
}

/**
 * The fleet's locks: `login` serialises logins (and the window of a password reset), `rotation` password
 * rotations, `oauth` OAuth token fetches (one fetch per expiry for the fleet).
 */
export type FleetLockName = 'login' | 'rotation' | 'oauth'

/** Proof of holding a lock: `owner` is random per take, so only the taker can release it. */
export interface FleetLock {
  readonly name: FleetLockName
  readonly owner: string
}

/**
 * What changed, told to every subscribed replica (the writer's own store included). Never carries a
 * secret. `connected` is local: this store's connection came up (first time or after an outage).
 */
export type FleetChange =
  /** `ended`: a replica ended the session on purpose (logout): every replica drops it; otherwise re-read. */
  | { kind: 'session'; ended?: boolean }
  | { kind: 'password'; generation: number }
  /** ThingSpace throttled a replica: every replica sends nothing to it for `pauseMs` from receipt. */
  | { kind: 'throttle'; pauseMs: number }
  | { kind: 'connected' }

export type FleetChangeListener = (change: FleetChange) => void

/**
 * Every method rejects when the store cannot be reached (the caller then sends no login); a record the store cannot
 * trust rejects with an UntrustedRecordError (or a key mismatch): neither is ever acted on.
 */
export interface SharedSessionStore {
  /** True while commands can reach the shared state and notifications arrive. */
  readonly connected: boolean

  /** The shared session, or undefined when none was written or it was cleared. */
  readSession: () => Promise<SharedSession | undefined>
  /** Replaces the shared session whole (one atomic write), then notifies `{ kind: 'session' }`. */
  writeSession: (session: SharedSession) => Promise<void>
  /**
   * Moves lastUsedAt forward (never back), only if the stored session is the one logged in at
   * `loggedInAt`; no notification. False when that session is not stored (another replaced it, or the store lost it).
   */
  touchSession: (loggedInAt: number, lastUsedAt: number) => Promise<boolean>
  /**
   * Writes `session` only if none is stored (re-seeding a flushed or restarted store); true when written, then
   * notifies.
   */
  seedSession: (session: SharedSession) => Promise<boolean>
  /** Removes the shared session (logout, refusal), then notifies `{ kind: 'session' }`. */
  clearSession: () => Promise<void>

  /** The shared OAuth token while before its expiresAt, else undefined. */
  readOAuthToken: () => Promise<SharedOAuthToken | undefined>
  /** Replaces the shared OAuth token; it disappears at expiresAt. */
  writeOAuthToken: (token: SharedOAuthToken) => Promise<void>

  /**
   * Takes lock `name` for `ttlMs` if nobody holds it: exactly one of concurrent takers gets a lock, the others
   * undefined.
   */
  takeLock: (name: FleetLockName, ttlMs: number) => Promise<FleetLock | undefined>
  /**
   * Releases the lock only if `lock` still holds it (compare-and-delete); true when it did. A stale holder's release is
   * a no-op.
   */
  releaseLock: (lock: FleetLock) => Promise<boolean>

  /**
   * Counts a login about to be sent, atomically across the fleet, before it is sent; returns the count including it.
   */
  countLoginAttempt: () => Promise<number>
  /**
   * Takes back one counted attempt that turned out not to count (5xx, no connection); never below 0. Returns the new
   * count.
   */
  uncountLoginAttempt: () => Promise<number>
  /**
   * Consecutive counted attempts since the last reset. No expiry: it lasts until a success or an operator resets it.
   * NaN when what is stored is not a count (written from outside).
   */
  readLoginFailures: () => Promise<number>
  /** Sets the count to 0: after a successful login, or by an operator. */
  resetLoginFailures: () => Promise<void>
  /**
   * Sets the count to `atLeast` when it is lower (set back from outside, or lost) or is not a count from 0 to `atMost`
   * (written from outside); returns the count now stored.
   */
  raiseLoginFailures: (atLeast: number, atMost: number) => Promise<number>

  /** Calls `listener` for every change notified after this call, on any replica; returns the unsubscribe function. */
  subscribe: (listener: FleetChangeListener) => () => void
}

/**
 * A shared record altered outside the fleet, or in a format this version cannot read: treated as absent, never used.
 */
export class UntrustedRecordError extends Error {}

/**
 * The shared state was sealed with another fleet key than this replica's: a misconfigured replica (or fleet), not an
 * outage. The adapter's error (fleet/crypto.ts) extends this one.
 */
export class ForeignFleetKeyError extends Error {}

/**
 * What this replica verified, on disk (fleet/ledger.ts): the passwords ThingSpace rejected from it (never sent again)
 * and the highest fleet failure count it saw (a count set back in the store buys no extra attempt).
 */
export interface LoginLedger {
  readonly failuresSeen: number
  readonly failuresSeenAt: number
  isRejected: (password: string) => boolean
  recordRejected: (password: string) => void
  recordFailures: (failures: number, at: number) => void
  clearFailures: () => void
}
