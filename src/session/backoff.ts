// Capped exponential backoff between failed attempts, so a failing endpoint sees a bounded number of calls.

import type { Clock } from './clock.js'

export const BACKOFF_BASE_MS = 1000
export const BACKOFF_MAX_MS = 60_000

export class Backoff {
  private failures = 0
  private notBefore = 0

  constructor (
    private readonly clock: Clock,
    private readonly baseMs = BACKOFF_BASE_MS,
    private readonly maxMs = BACKOFF_MAX_MS
  ) {}

  /** Milliseconds until the next attempt is allowed; 0 when it is allowed now. */
  remainingMs (): number {
    return Math.max(0, this.notBefore - this.clock.now())
  }

  get consecutiveFailures (): number {
    return this.failures
  }

  recordFailure (): void {
    this.failures += 1
    const delayMs = Math.min(this.maxMs, this.baseMs * 2 ** (this.failures - 1))
    this.notBefore = this.clock.now() + delayMs
  }

  reset (): void {
    this.failures = 0
    this.notBefore = 0
  }
}
