// Time source of the session logic, injectable so that tests can move time by hand.

export interface Clock {
  /** Milliseconds; only differences matter. */
  now: () => number
}

export const systemClock: Clock = { now: () => Date.now() }
