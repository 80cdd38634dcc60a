// Capped exponential backoff between failed attempts, so a failing endpoint sees a bounded number of calls.

import { monotonicNowOf, type Clock } from '../clock.js'

export const BACKOFF_BASE_MS = 1000
export const BACKOFF_MAX_MS = 60_000
/** An upstream's Retry-After is honoured up to this long: a wrong or hostile header cannot pause logins for hours. */
export const RETRY_AFTER_MAX_MS = 5 * 60_000

export class Backoff {
  private failures = 0
  private notBefore = 0
  /** A wait is a duration: a wall clock set back an hour must not make it an hour longer. */
  private readonly now: () => number

  constructor (
    clock: Clock,
    private readonly baseMs = BACKOFF_BASE_MS,
    private readonly maxMs = BACKOFF_MAX_MS
  ) {
    this.now = monotonicNowOf(clock)
  }

  /** Milliseconds until the next attempt is allowed; 0 when it is allowed now. */
  remainingMs (): number {
    return Math.max(0, this.notBefore - this.now())
  }

  /**
   * `retryAfterSeconds`, the failed answer's Retry-After, lengthens the wait (up to RETRY_AFTER_MAX_MS), never shortens
   * it.
   */
  recordFailure (retryAfterSeconds?: number): void {
    this.failures += 1
    const exponentialMs = Math.min(this.maxMs, this.baseMs * 2 ** (this.failures - 1))
    const askedMs = Math.min(RETRY_AFTER_MAX_MS, (retryAfterSeconds ?? 0) * 1000)
    this.notBefore = this.now() + Math.max(exponentialMs, askedMs)
  }

  reset (): void {
    this.failures = 0
    this.notBefore = 0
  }
}
