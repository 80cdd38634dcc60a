// Hand-moved clocks for the session logic's unit tests.

import type { Clock, Timer } from '../../src/clock.js'

export class FakeClock implements Clock {
  constructor (public ms = Date.UTC(2026, 0, 1, 12, 0, 0)) {}
  readonly now = (): number => this.ms
  advance (ms: number): void { this.ms += ms }
}

/** A hand-moved clock with timers: advance() runs those that fall due, in order. */
export class TimerClock extends FakeClock {
  private timers: Array<{ at: number, callback: () => void }> = []
  readonly setTimer = (callback: () => void, ms: number): Timer => {
    const timer = { at: this.ms + ms, callback }
    this.timers.push(timer)
    return { cancel: () => { this.timers = this.timers.filter((other) => other !== timer) } }
  }

  /** Milliseconds until each pending timer. */
  get pending (): number[] {
    return this.timers.map((timer) => timer.at - this.ms)
  }

  override advance (ms: number): void {
    this.ms += ms
    for (;;) {
      const due = this.timers.filter((timer) => timer.at <= this.ms).sort((a, b) => a.at - b.at)[0]
      if (due === undefined) return
      this.timers = this.timers.filter((timer) => timer !== due)
      due.callback()
    }
  }
}
