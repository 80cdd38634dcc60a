// How a replica gets its sessions: alone (SoloLogin, here), or shared with the other replicas of a fleet
// (FleetCoordinator, fleet-coordinator.ts). The session manager holds one and never asks which.

import type { OAuthGrant } from './auth-client.js'

/** One VZ-M2M session as a replica holds it. */
export interface CachedSession {
  token: string
  loggedInAt: number
  /** Logged in to replace a session the platform refused (expired or invalid). */
  replacedRefusedSession: boolean
  /** A request replayed on it was answered: it worked, so a later refusal is a real expiry, never held. */
  served?: boolean
}

/**
 * One login sent to ThingSpace: its session, or why not and whether the failure stays counted (the platform may have
 * counted it).
 */
export type LoginAttempt = { ok: true; session: CachedSession } | { ok: false; error: unknown; counted: boolean }

/**
 * `renew`: a session is needed (in a fleet, a live shared one is taken up instead of logging in); `verify`: new
 * credentials are proved with a login of their own (never a take-up; in a fleet allowed while the fleet's count is
 * below the account's ceiling rather than M2M_PROXY_MAX_LOGIN_FAILURES).
 */
export type LoginMode = 'renew' | 'verify'

export interface FleetStatus {
  storeConnected: boolean
  /** The fleet's consecutive counted logins, as last read (null before any read). */
  consecutiveLoginFailures: number | null
  loginsAvoided: number
  lockWaits: number
}

export interface LoginStrategy {
  /** Whether sessions are shared with other replicas (GET /admin/session: fleetMode). */
  readonly shared: boolean
  /** Whether logins can be sent now: the fleet store answers (always, alone). */
  readonly connected: boolean
  /** The fleet's failure count was at its limit at the last attempt (never, alone: the local guard says so). */
  readonly guardIsEngaged: boolean
  /** The last look at the fleet's state found it sealed with another fleet key (never, alone). */
  readonly keyMismatch: boolean
  /** The fleet's side of GET /admin/session; null alone. */
  status: () => FleetStatus | null
  login: (mode?: LoginMode) => Promise<CachedSession>
  /**
   * The OAuth token to use: in a fleet another replica's when it has one not in `avoid`, else `fetch`ed (and shared).
   */
  oauthGrant: (
    avoid: readonly string[],
    minLifetimeMs: number,
    fetch: () => Promise<OAuthGrant>
  ) => Promise<OAuthGrant & { fromFleet?: true }>
  /** Runs `action` while no other replica can log in. */
  withLoginLock: <T>(action: () => Promise<T>) => Promise<T>
  /** The session was logged out here: no replica may take it up. */
  clearSession: () => Promise<void>
  /** ThingSpace rejected `password` from this replica before (fleet mode keeps them on disk). */
  rejectedBefore: (password: string) => boolean
  close: () => void
}

/** One process: every session is its own login. */
export class SoloLogin implements LoginStrategy {
  readonly shared = false
  readonly connected = true
  readonly guardIsEngaged = false
  readonly keyMismatch = false

  constructor (private readonly sendLogin: () => Promise<LoginAttempt>) {}

  status (): null {
    return null
  }

  async login (): Promise<CachedSession> {
    const attempt = await this.sendLogin()
    if (attempt.ok) return attempt.session
    throw attempt.error
  }

  async oauthGrant (
    _avoid: readonly string[],
    _minLifetimeMs: number,
    fetch: () => Promise<OAuthGrant>
  ): Promise<OAuthGrant> {
    return await fetch()
  }

  async withLoginLock<T>(action: () => Promise<T>): Promise<T> {
    return await action()
  }

  async clearSession (): Promise<void> {}

  rejectedBefore (): boolean {
    return false
  }

  close (): void {}
}
