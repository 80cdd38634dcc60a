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
  /**
   * Milliseconds on a clock that never steps (the wall clock of `now` may be set back or forward, by NTP or by hand),
   * for waits measured in this process only. Optional: without it, `now` serves (a test's hand-moved clock).
   */
  monotonicNow?: () => number
}

/** `clock`'s monotonic time when it has one, else its `now`: for durations that stay in this process. */
export function monotonicNowOf (clock: Clock): () => number {
  return clock.monotonicNow ?? clock.now
}

/** A real timer that never keeps the process alive (systemClock's). */
export function backgroundTimer (callback: () => void, ms: number): Timer {
  const timer = setTimeout(callback, ms)
  timer.unref()
  return { cancel: () => clearTimeout(timer) }
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer: backgroundTimer,
  monotonicNow: () => performance.now()
}

/**
 * `clock`'s timers, or real ones for a clock without (a hand-moved test clock): for waits that must end, such as a
 * poll for another replica's login or the pause between two attempts to publish. Unlike systemClock's, these keep
 * the process alive while they run.
 */
export function waitingTimer (clock: Clock | undefined): (callback: () => void, ms: number) => Timer {
  return clock?.setTimer ?? ((callback, ms) => {
    const timer = setTimeout(callback, ms)
    return { cancel: () => { clearTimeout(timer) } }
  })
}

/**
 * What `work` settles to, or `timedOut` if `ms` of real time pass first: for the bounded waits of a shutdown. The
 * timer is cancelled either way, so that it never holds the process until it runs out. `work` must not reject.
 */
export async function settleWithin<T, U> (work: Promise<T>, ms: number, timedOut: U): Promise<T | U> {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<U>((resolve) => { timer = setTimeout(() => { resolve(timedOut) }, Math.max(0, ms)) })
  try {
    return await Promise.race([work, deadline])
  } finally {
    clearTimeout(timer)
  }
}

/** Resolves after `ms` on `clock` (see waitingTimer). */
export async function pause (clock: Clock | undefined, ms: number): Promise<void> {
  await new Promise<void>((resolve) => { waitingTimer(clock)(resolve, ms) })
}
