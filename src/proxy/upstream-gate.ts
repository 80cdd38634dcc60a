// ThingSpace's throttling absorbed: a 429 (or a 503 with Retry-After) pauses sending for the whole process (the fleet,
// when shared), the throttled request is sent again once the pause ends, and sending resumes at the rate ThingSpace was
// seen to accept rather than all at once. That rate is kept only when the proxy's own demand filled it, and rises while
// ThingSpace keeps accepting. An optional contracted rate spaces requests so that the limit is not passed in the first
// place; in fleet mode its slots are taken from the fleet store. No HTTP framework here.

import { retryAfterSecondsOf } from '../session/auth-client.js'

/** The pause after a throttled answer without a readable Retry-After. */
export const DEFAULT_THROTTLE_PAUSE_MS = 1000
/** The shortest pause, even for `Retry-After: 0`: the throttled requests must not come back at once. */
const MIN_THROTTLE_PAUSE_MS = 100
/**
 * How long the rate learned from a throttled answer is kept after the last one; then the gate sends at full speed
 * again (UpstreamGateOptions.learnedRateMemoryMs).
 */
export const LEARNED_RATE_MEMORY_MS = 60_000
/**
 * The learned rate rises by one request a second each this many ms without a throttled answer
 * (UpstreamGateOptions.learnedRateRiseMs): it is a ceiling found when ThingSpace last throttled, and ThingSpace may
 * accept more by now (another application of the account was using the limit then, or the contract changed).
 */
export const LEARNED_RATE_RISE_MS = 5000
/**
 * The share of the seen rate sent at after a pause: timers fire late in bunches, and sending exactly at the limit meets
 * a 429 (and a pause) every few seconds.
 */
const LEARNED_RATE_SHARE = 0.9
/**
 * The window over which accepted answers are counted to learn ThingSpace's rate (its limits are per second), and the
 * first one after a pause, in which the proxy's demand must fill the learned rate for it to be kept.
 */
const RATE_WINDOW_MS = 1000
/**
 * Accepted answers remembered for learning (a power of two): a limit above this many per second is learned as this
 * many.
 */
const ANSWER_RING_SIZE = 4096

/** Where the fleet's pause and contracted-rate slots live (fleet mode); see src/fleet/shared-sending.ts. */
export interface SharedSending {
  /** Tells the other replicas to pause too; never rejects (failures are the link's to report). */
  pause: (pauseMs: number) => void
  /** A slot of the fleet's contracted rate, as FleetStore.takeSendSlot; rejects when the store cannot be reached. */
  takeSlot: (intervalMs: number, notBeforeMs: number, maxWaitMs: number) => Promise<number>
}

export interface UpstreamGateOptions {
  /** Longest one pause, whatever Retry-After says. */
  maxPauseMs: number
  /** Requests sent per second at most (M2M_PROXY_UPSTREAM_RATE_LIMIT); 0: no limit. */
  ratePerSecond: number
  now?: () => number
  /** How long a learned rate is kept after the last throttled answer; LEARNED_RATE_MEMORY_MS by default. */
  learnedRateMemoryMs?: number
  /** The learned rate rises by one request a second each this many ms; LEARNED_RATE_RISE_MS by default. */
  learnedRateRiseMs?: number
}

/** An answer that says ThingSpace did not process the request because of a limit: 429, or 503 with Retry-After. */
export function isThrottledAnswer (statusCode: number, retryAfter: string | string[] | undefined): boolean {
  return statusCode === 429 || (statusCode === 503 && retryAfter !== undefined)
}

/** Spaces sends `intervalMs` apart: the next free slot, taken only when within the budget. */
class LocalSlots {
  nextAt = 0
  take (earliest: number, intervalMs: number, latest: number): number | undefined {
    const sendAt = Math.max(earliest, this.nextAt)
    if (sendAt > latest) return undefined
    this.nextAt = sendAt + intervalMs
    return sendAt
  }
}

export class UpstreamGate {
  /** When the pause ordered by the last throttled answer ends (0: not paused). */
  #pausedUntil = 0
  /**
   * When the current pause started (the first throttled answer of it): the end of the window the rate is learned from.
   */
  #pauseStartedAt = 0
  readonly #contractIntervalMs: number
  /** The rate learned from the last throttled answers, requests per second (0: none), and until when it is kept. */
  #learnedRate = 0
  #learnedUntil = 0
  /**
   * While not 0, the learned rate is on probation until then (the end of the first second after the pause): it is
   * dropped if the proxy's demand did not fill it, since it was then counted from the proxy's own clients, not from
   * ThingSpace's limit.
   */
  #probationUntil = 0
  /** When the learned rate next rises by one request a second. */
  #nextRiseAt = 0
  readonly #learnedRateMemoryMs: number
  readonly #learnedRateRiseMs: number
  /** The interval this process spaces its own sends by: learned, and the contracted one unless the fleet holds it. */
  #localIntervalMs: number
  readonly #localSlots = new LocalSlots()
  /** No request of this process is sent before this time while its sends are spaced (see spacingLeftMs). */
  #spacedUntil = 0
  /** The contracted rate spaced locally while the fleet store cannot be reached. */
  readonly #fallbackSlots = new LocalSlots()
  #shared: SharedSending | undefined
  /** The fleet's contracted-rate slots: set only when shared and a rate is contracted. */
  #fleetSlots: SharedSending | undefined
  readonly #maxPauseMs: number
  readonly #now: () => number
  readonly #acceptedAt = new Float64Array(ANSWER_RING_SIZE)
  #accepted = 0
  /** Throttled answers seen, requests that waited before being sent. */
  throttledAnswers = 0
  waitedRequests = 0

  constructor (options: UpstreamGateOptions) {
    this.#contractIntervalMs = options.ratePerSecond > 0 ? 1000 / options.ratePerSecond : 0
    this.#localIntervalMs = this.#contractIntervalMs
    this.#maxPauseMs = options.maxPauseMs
    this.#now = options.now ?? Date.now
    this.#learnedRateMemoryMs = options.learnedRateMemoryMs ?? LEARNED_RATE_MEMORY_MS
    this.#learnedRateRiseMs = options.learnedRateRiseMs ?? LEARNED_RATE_RISE_MS
  }

  /** The gate's clock (ms), for the deadlines given to delayFor. */
  now (): number {
    return this.#now()
  }

  /** Fleet mode: pauses are told to the fleet, and the contracted rate's slots are the fleet's. */
  share (shared: SharedSending): void {
    this.#shared = shared
    this.#fleetSlots = this.#contractIntervalMs > 0 ? shared : undefined
    this.#updateLocalInterval()
  }

  /** True while a throttled answer's pause lasts. */
  get paused (): boolean {
    return this.#pausedUntil !== 0 && this.#now() < this.#pausedUntil
  }

  /** The rate learned from ThingSpace's throttling, requests per second; 0 when none is in force. */
  get learnedRate (): number {
    if (this.#learnedRate !== 0 || this.#pausedUntil !== 0) this.#refresh(this.#now())
    return this.#learnedRate
  }

  /**
   * Milliseconds a request to be sent now must wait (0: send at once), its slot of the rates taken; -1
   * when it would still wait at `deadline` (on this gate's clock). A promise when the slot is the fleet's.
   */
  delayFor (deadline: number): number | Promise<number> {
    // The hot path: neither paused nor rate-limited.
    if (this.#pausedUntil === 0 && this.#localIntervalMs === 0 && this.#fleetSlots === undefined) return 0
    const now = this.#now()
    this.#refresh(now)
    let sendAt = Math.max(now, this.#pausedUntil)
    if (this.#localIntervalMs > 0) {
      const slot = this.#localSlots.take(sendAt, this.#localIntervalMs, deadline)
      if (slot === undefined) return -1
      sendAt = slot
    } else if (sendAt > deadline) return -1
    const waitMs = sendAt - now
    if (this.#fleetSlots === undefined) return this.#waited(waitMs)
    return this.#fleetSlots.takeSlot(this.#contractIntervalMs, waitMs, deadline - now).then(
      (sharedWaitMs) => this.#waited(sharedWaitMs),
      () => {
        // The fleet store is down: this process keeps the contracted rate on its own meanwhile.
        const later = this.#now()
        const slot = this.#fallbackSlots.take(Math.max(later, now + waitMs), this.#contractIntervalMs, deadline)
        return this.#waited(slot === undefined ? -1 : slot - later)
      }
    )
  }

  /**
   * Asked just before a request is sent: milliseconds it must still wait so that this process's sends stay
   * #localIntervalMs apart (0: send it now, counted as sent). Slots are handed out ahead, each waited for with a timer
   * of its own; timers held up by a busy event loop fire together and would send their requests in one burst, past
   * the rate. On time, sends follow the slots' schedule (no drift); after such a hold-up, they are spaced from now.
   */
  spacingLeftMs (): number {
    if (this.#localIntervalMs === 0) return 0
    const now = this.#now()
    const leftMs = this.#spacedUntil - now
    // A timer may fire up to 1 ms before a slot that is not a whole number of ms.
    if (leftMs > 1) return Math.ceil(leftMs)
    this.#spacedUntil = Math.max(now, this.#spacedUntil) + this.#localIntervalMs
    return 0
  }

  /**
   * Milliseconds until the current pause ends (0 when not paused): the Retry-After of a request that cannot wait for
   * it.
   */
  pauseLeftMs (): number {
    return this.#pausedUntil === 0 ? 0 : Math.max(0, this.#pausedUntil - this.#now())
  }

  /** ThingSpace accepted a request (any answer but a throttled one): counted for learning its rate. */
  accepted (): void {
    this.#acceptedAt[this.#accepted++ & (ANSWER_RING_SIZE - 1)] = this.#now()
  }

  /**
   * ThingSpace answered a throttled answer: nothing is sent for its Retry-After (capped), fleet-wide when shared;
   * returns the pause's length.
   */
  throttled (retryAfter: string | string[] | undefined): number {
    this.throttledAnswers++
    const seconds = retryAfterSecondsOf(retryAfter, this.#now())
    const pauseMs = this.pauseFor(seconds === undefined ? DEFAULT_THROTTLE_PAUSE_MS : seconds * 1000)
    this.#shared?.pause(pauseMs)
    return pauseMs
  }

  /**
   * Pauses sending for `pauseMs` (capped, at least the minimum), never shortening a pause; returns the length applied.
   */
  pauseFor (pauseMs: number): number {
    const now = this.#now()
    const applied = Math.max(MIN_THROTTLE_PAUSE_MS, Math.min(this.#maxPauseMs, pauseMs))
    if (!(this.#pausedUntil > now)) {
      if (this.#pausedUntil !== 0) this.#pauseEnded(now)
      this.#pauseStartedAt = now
    }
    this.#pausedUntil = Math.max(this.#pausedUntil, now + applied)
    this.#learnedUntil = this.#pausedUntil + this.#learnedRateMemoryMs
    return applied
  }

  /**
   * The pause is over (noticed `now`): ThingSpace's rate is taken as the answers it accepted in the second before the
   * pause and during it (those sent before it), so that the waiting requests are not all sent at once. Those answers
   * may be no more than the proxy's clients asked for (another application of the account used up the limit): the rate
   * is on probation for a second (see #reviewLearnedRate).
   */
  #pauseEnded (now: number): void {
    const from = this.#pauseStartedAt - RATE_WINDOW_MS
    const to = this.#pausedUntil
    let count = 0
    const remembered = Math.min(this.#accepted, ANSWER_RING_SIZE)
    for (let i = 1; i <= remembered; i++) {
      const at = this.#acceptedAt[(this.#accepted - i) & (ANSWER_RING_SIZE - 1)] as number
      if (at < from) break // the ring holds answers in arrival order: older ones are all before the window
      if (at <= to) count++
    }
    this.#pausedUntil = 0
    this.#learnedRate = Math.max(1, Math.floor(count * LEARNED_RATE_SHARE))
    this.#probationUntil = now + RATE_WINDOW_MS
    this.#nextRiseAt = now + this.#learnedRateRiseMs
    // The slots given out from now on tell whether the proxy's demand fills the learned rate.
    this.#localSlots.nextAt = Math.max(this.#localSlots.nextAt, now)
    this.#updateLocalInterval()
  }

  /** Brings the pause and the learned rate up to `now`. */
  #refresh (now: number): void {
    if (this.#pausedUntil !== 0 && this.#pausedUntil <= now) this.#pauseEnded(now)
    if (this.#learnedUntil !== 0 && this.#learnedUntil <= now) this.#forgetLearnedRate()
    if (this.#learnedRate !== 0 && this.#pausedUntil === 0) this.#reviewLearnedRate(now)
  }

  /**
   * While a learned rate is in force: on probation, it is kept once the slots given out reach past the first second
   * after the pause (the proxy had more to send than the rate allows), and dropped when they ran out within it (its
   * clients asked for less: the rate was their demand, which says nothing of ThingSpace's limit). Kept, it rises by one
   * request a second each #learnedRateRiseMs, as long as ThingSpace does not throttle again.
   */
  #reviewLearnedRate (now: number): void {
    if (this.#probationUntil !== 0) {
      if (this.#localSlots.nextAt > this.#probationUntil) this.#probationUntil = 0
      else if (now >= this.#localSlots.nextAt && now > this.#probationUntil - RATE_WINDOW_MS) {
        this.#forgetLearnedRate()
        return
      }
    }
    if (now >= this.#nextRiseAt) {
      const steps = Math.floor((now - this.#nextRiseAt) / this.#learnedRateRiseMs) + 1
      this.#learnedRate += steps
      this.#nextRiseAt += steps * this.#learnedRateRiseMs
      this.#updateLocalInterval()
    }
  }

  #forgetLearnedRate (): void {
    this.#learnedRate = 0
    this.#learnedUntil = 0
    this.#probationUntil = 0
    this.#updateLocalInterval()
  }

  #updateLocalInterval (): void {
    const contract = this.#fleetSlots === undefined ? this.#contractIntervalMs : 0
    this.#localIntervalMs = Math.max(contract, this.#learnedRate === 0 ? 0 : 1000 / this.#learnedRate)
  }

  #waited (waitMs: number): number {
    if (waitMs > 0) this.waitedRequests++
    return waitMs
  }
}
