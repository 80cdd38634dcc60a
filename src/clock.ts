// The time source of the proxy (session logic, fleet, credentials), injectable so that tests can move time by hand.

/** A scheduled callback; cancel() is harmless after it ran. */
export interface Timer {
  cancel: () => void
}

export interface Clock {
  /** Milliseconds; only differences matter. */
  now: () => number
  /**
   * Runs `callback` once, `ms` from now; the timer never keeps the process alive. Optional: a clock
   * without it (a test's hand-moved clock) schedules nothing, and the background login retry is off.
   */
  setTimer?: (callback: () => void, ms: number) => Timer
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer: (callback, ms) => {
    const timer = setTimeout(callback, ms)
    timer.unref()
    return { cancel: () => clearTimeout(timer) }
  }
}
