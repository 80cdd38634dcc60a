// ThingSpace's throttling absorbed: a 429 (or a 503 with Retry-After) pauses sending for the whole process, the throttled request is
// sent again once the pause ends, and an optional contracted rate spaces requests so that the limit is not passed in the first
// place. No HTTP framework here.

import { retryAfterSecondsOf } from '../session/auth-client.js'

/** The pause after a throttled answer without a readable Retry-After. */
export const DEFAULT_THROTTLE_PAUSE_MS = 1000
/** The shortest pause, even for `Retry-After: 0`: the throttled requests must not come back at once. */
const MIN_THROTTLE_PAUSE_MS = 100

export interface UpstreamGateOptions {
  /** Longest one pause, whatever Retry-After says. */
  maxPauseMs: number
  /** Requests sent per second at most (M2M_PROXY_UPSTREAM_RATE_LIMIT); 0: no limit. */
  ratePerSecond: number
  now?: () => number
}

/** An answer that says ThingSpace did not process the request because of a limit: 429, or 503 with Retry-After. */
export function isThrottledAnswer (statusCode: number, retryAfter: string | string[] | undefined): boolean {
  return statusCode === 429 || (statusCode === 503 && retryAfter !== undefined)
}

export class UpstreamGate {
  /** When the pause ordered by the last throttled answer ends (0: not paused). */
  #pausedUntil = 0
  /** The earliest time the next request may be sent under the contracted rate. */
  #nextSlotAt = 0
  readonly #intervalMs: number
  readonly #maxPauseMs: number
  readonly #now: () => number
  /** Throttled answers seen, pauses' total length, requests that waited before being sent. */
  throttledAnswers = 0
  waitedRequests = 0

  /** The gate's clock (ms), for the deadlines given to delayFor. */
  now (): number {
    return this.#now()
  }

  constructor (options: UpstreamGateOptions) {
    this.#intervalMs = options.ratePerSecond > 0 ? 1000 / options.ratePerSecond : 0
    this.#maxPauseMs = options.maxPauseMs
    this.#now = options.now ?? Date.now
  }

  /** True while a throttled answer's pause lasts. */
  get paused (): boolean {
    return this.#pausedUntil !== 0 && this.#now() < this.#pausedUntil
  }

  /**
   * Milliseconds a request to be sent now must wait (0: send at once), its slot of the contracted rate
   * taken; -1 when it would still wait at `deadline` (on this gate's clock; nothing is taken then).
   */
  delayFor (deadline: number): number {
    if (this.#pausedUntil === 0 && this.#intervalMs === 0) return 0 // the hot path: neither paused nor rate-limited
    const now = this.#now()
    const budgetMs = deadline - now
    let sendAt = now
    if (this.#pausedUntil > now) sendAt = this.#pausedUntil
    else this.#pausedUntil = 0
    if (this.#intervalMs > 0) sendAt = Math.max(sendAt, this.#nextSlotAt)
    const waitMs = sendAt - now
    if (waitMs > budgetMs) return -1
    if (this.#intervalMs > 0) this.#nextSlotAt = sendAt + this.#intervalMs
    if (waitMs > 0) this.waitedRequests++
    return waitMs
  }

  /** Milliseconds until the current pause ends (0 when not paused): the Retry-After of a request that cannot wait for it. */
  pauseLeftMs (): number {
    return this.#pausedUntil === 0 ? 0 : Math.max(0, this.#pausedUntil - this.#now())
  }

  /** ThingSpace answered a throttled answer: nothing is sent for its Retry-After (capped); returns the pause's length. */
  throttled (retryAfter: string | string[] | undefined): number {
    this.throttledAnswers++
    const now = this.#now()
    const seconds = retryAfterSecondsOf(retryAfter, now)
    const pauseMs = Math.max(MIN_THROTTLE_PAUSE_MS, Math.min(this.#maxPauseMs, seconds === undefined ? DEFAULT_THROTTLE_PAUSE_MS : seconds * 1000))
    this.#pausedUntil = Math.max(this.#pausedUntil, now + pauseMs)
    return pauseMs
  }
}
