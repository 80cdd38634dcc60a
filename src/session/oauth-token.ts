// The ThingSpace API (OAuth) token: cached until expiry, refreshed ahead of it in the background, one fetch at a time.

import type { Clock } from '../clock.js'
import type { OAuthGrant } from './auth-client.js'
import { Backoff } from './backoff.js'
import { AuthUnavailableError, failureCause, UpstreamAuthError } from './errors.js'
import { ignoreSessionEvents, type PublishSessionEvent } from './events.js'
import { messageOf } from '../errors.js'

/** Refresh this long before expiry, so requests never wait for a token fetch in steady state. */
export const OAUTH_REFRESH_AHEAD_MS = 5 * 60_000
/** Stop sending a token this long before its stated expiry (clock skew, request latency). */
export const OAUTH_EXPIRY_MARGIN_MS = 30_000

/**
 * A token (or session) fetched to replace a refused one, and itself refused within this time, is not
 * replaced again until this time has passed: the client gets the platform's answer meanwhile. A
 * gateway that refuses every token then costs one fetch (or login) per this interval, at most about
 * 4 a minute, instead of one per request.
 */
export const REFUSED_RENEWAL_HOLD_MS = 15_000

export interface OAuthToken {
  value: string
  receivedAt: number
  /** After this instant the token is not sent any more. */
  usableUntil: number
  /** From this instant a background refresh is started. */
  refreshFrom: number
  /** Fetched because the gateway refused the token before it (see REFUSED_RENEWAL_HOLD_MS). */
  replacedRefused: boolean
  /** A request replayed with it was answered: it works, so its next refusal is no reason to hold. */
  served: boolean
}

/** A grant, perhaps another replica's (fleet mode), which is no fetch of this replica's. */
export type FetchedGrant = OAuthGrant & { fromFleet?: boolean }

export class OAuthTokenCache {
  private token: OAuthToken | undefined
  private inFlight: Promise<OAuthToken> | undefined
  private readonly backoff: Backoff
  private rejected = false
  private fetches = 0
  /** The replacement last held, warned about once. */
  private warnedHeld: OAuthToken | undefined

  /** `fetchGrant(avoid)`: a token, never one of `avoid` (the token held, one the gateway refused). */
  constructor (
    private readonly fetchGrant: (avoid: readonly string[]) => Promise<FetchedGrant>,
    private readonly clock: Clock,
    private readonly publish: PublishSessionEvent = ignoreSessionEvents
  ) {
    this.backoff = new Backoff(clock)
  }

  get fetchCount (): number {
    return this.fetches
  }

  get current (): OAuthToken | undefined {
    return this.token
  }

  /** The last fetch was refused for the app key or secret (until a fetch succeeds or the credentials change). */
  get clientRejected (): boolean {
    return this.rejected
  }

  /** The cached token when usable now, without waiting; starts a background refresh when due. */
  peek (): string | undefined {
    const token = this.token
    if (token === undefined) return undefined
    const now = this.clock.now()
    if (now >= token.usableUntil) return undefined
    if (now >= token.refreshFrom && this.inFlight === undefined && this.backoff.remainingMs() === 0) {
      this.fetch().catch((error: unknown) => {
        this.publish({ type: 'warning', message: `background OAuth token refresh failed: ${messageOf(error)}` })
      })
    }
    return token.value
  }

  async get (): Promise<string> {
    const cached = this.peek()
    if (cached !== undefined) return cached
    return (await this.fetch()).value
  }

  /**
   * The gateway refused `staleValue`: returns a newer token, fetching one unless another caller already did.
   * Undefined when `staleValue` replaced a refused token moments ago and was not seen to work
   * (REFUSED_RENEWAL_HOLD_MS): the caller passes the gateway's answer on.
   */
  async replace (staleValue: string): Promise<string | undefined> {
    const token = this.token
    if (token !== undefined && token.value !== staleValue) return await this.get()
    if (token !== undefined && this.holdsReplacementOf(token)) return undefined
    if (this.inFlight === undefined) this.token = undefined
    return (await this.fetch(staleValue)).value
  }

  /** A request replayed with `value` was answered, not refused. */
  served (value: string): void {
    if (this.token?.value === value) this.token.served = true
  }

  private holdsReplacementOf (token: OAuthToken): boolean {
    const ageMs = this.clock.now() - token.receivedAt
    if (!token.replacedRefused || token.served || ageMs >= REFUSED_RENEWAL_HOLD_MS) return false
    if (this.warnedHeld !== token) {
      this.warnedHeld = token
      this.publish({
        type: 'warning',
        message:
          `the gateway refused the OAuth token ${Math.round(ageMs / 1000)} s after it was fetched to replace a refused one; ` +
          `it is not replaced again before ${REFUSED_RENEWAL_HOLD_MS / 1000} s after that fetch, and clients get the gateway's answer meanwhile`
      })
    }
    return true
  }

  /** Forget the token, e.g. after new app credentials were loaded. */
  clear (): void {
    this.token = undefined
    this.rejected = false
    this.backoff.reset()
  }

  private fetch (refused?: string): Promise<OAuthToken> {
    this.inFlight ??= this.fetchOnce(refused).finally(() => {
      this.inFlight = undefined
    })
    return this.inFlight
  }

  private async fetchOnce (refused: string | undefined): Promise<OAuthToken> {
    const waitMs = this.backoff.remainingMs()
    if (waitMs > 0) {
      throw this.rejected
        ? new AuthUnavailableError(
          'oauth-client-rejected',
          'the OAuth token endpoint rejected the client id or secret',
          Math.ceil(waitMs / 1000)
        )
        : new AuthUnavailableError(
          'upstream-unavailable',
          'the OAuth token endpoint is failing; retrying with backoff',
          Math.ceil(waitMs / 1000)
        )
    }
    const previous = this.token
    let grant: FetchedGrant
    try {
      grant = await this.fetchGrant([previous?.value, refused].filter((value): value is string => value !== undefined))
    } catch (error) {
      this.fetches += 1
      this.rejected = error instanceof UpstreamAuthError && error.kind === 'rejected'
      this.backoff.recordFailure(error instanceof UpstreamAuthError ? error.retryAfterSeconds : undefined)
      this.publish({ type: 'oauth-fetch', outcome: this.rejected ? 'rejected' : 'error', cause: failureCause(error) })
      const retryAfterSeconds = Math.ceil(this.backoff.remainingMs() / 1000)
      throw this.rejected
        ? new AuthUnavailableError(
          'oauth-client-rejected',
            `the OAuth token endpoint rejected the client id or secret (${messageOf(error)})`,
            retryAfterSeconds
        )
        : new AuthUnavailableError(
          'upstream-unavailable',
            `cannot get an OAuth token (${messageOf(error)})`,
            retryAfterSeconds
        )
    }
    this.rejected = false
    this.backoff.reset()
    if (grant.fromFleet !== true) {
      this.fetches += 1
      this.publish({ type: 'oauth-fetch', outcome: 'success' })
    }
    const receivedAt = this.clock.now()
    const lifetimeMs = Math.max(1, grant.expiresInSeconds) * 1000
    // ThingSpace hands out the same token until its hour is over: asking early again would loop, so a
    // reissued token is used to its very end, and a new one fetched only then (a late 401 is replayed).
    const reissued = previous !== undefined && previous.value === grant.accessToken
    const usableUntil =
      receivedAt + (reissued ? lifetimeMs : Math.max(lifetimeMs - OAUTH_EXPIRY_MARGIN_MS, lifetimeMs / 2))
    const refreshFrom = reissued
      ? usableUntil
      : receivedAt + lifetimeMs - Math.min(OAUTH_REFRESH_AHEAD_MS, lifetimeMs / 4)
    this.token = {
      value: grant.accessToken,
      receivedAt,
      usableUntil,
      refreshFrom,
      replacedRefused: refused !== undefined,
      served: false
    }
    return this.token
  }
}
