// ThingSpace's throttling as the simulator plays it: above a rate (requests in any one-second window) requests are
// answered 429 with Retry-After, as limits "per contract" are. Off (rate 0) unless set, by option or control route.

/** The longest Retry-After the simulator sends, in seconds. */
export const MAX_RETRY_AFTER_SECONDS = 60

export class RequestRateLimit {
  #rate = 0
  #retryAfterSeconds = 1
  /** Arrival times of the requests admitted in the last second, oldest first: at most `rate` of them. */
  readonly #admitted: number[] = []

  constructor (private readonly now: () => number) {}

  get rate (): number {
    return this.#rate
  }

  get retryAfterSeconds (): number {
    return this.#retryAfterSeconds
  }

  /** Requests per second admitted from now on (0: no limit), and the Retry-After of the others. */
  set (rate: number, retryAfterSeconds = 1): void {
    if (!Number.isInteger(rate) || rate < 0) throw new RangeError(`rate must be a whole number >= 0, got ${rate}`)
    if (!Number.isInteger(retryAfterSeconds) || retryAfterSeconds < 0 || retryAfterSeconds > MAX_RETRY_AFTER_SECONDS) {
      throw new RangeError(
        `retryAfterSeconds must be a whole number from 0 to ${MAX_RETRY_AFTER_SECONDS}, got ${retryAfterSeconds}`
      )
    }
    this.#rate = rate
    this.#retryAfterSeconds = retryAfterSeconds
    this.#admitted.length = 0
  }

  /** True when a request arriving now is within the rate (and counts toward it). */
  admit (): boolean {
    if (this.#rate === 0) return true
    const now = this.now()
    while (this.#admitted.length > 0 && (this.#admitted[0] as number) <= now - 1000) this.#admitted.shift()
    if (this.#admitted.length >= this.#rate) return false
    this.#admitted.push(now)
    return true
  }
}
