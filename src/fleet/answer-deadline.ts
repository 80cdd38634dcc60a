// A deadline for Redis's answers. node-redis's own command timeout covers only the wait to be written: once sent, a
// command waits for its answer for as long as the connection stays open. A Redis that stops answering with its socket
// open (a stopped or swapped-out server, a partition that sends no reset) would then hold every command, and every
// client request waiting on a login decision, forever, while the store still reads as connected.
//
// Past the deadline a command fails, and the connection counts as stalled: from then on every command fails at once,
// unsent, until one of those still out is answered (Redis is back) or the connection is made again. So a hung Redis
// reads like a Redis that is down (503 with Retry-After, not ready), and what piles up behind it stays bounded by what
// was sent before the first deadline passed.

import { backgroundTimer, type Clock } from '../clock.js'

export class RedisNotAnsweringError extends Error {
  constructor (timeoutMs: number) {
    super(`Redis has not answered within ${timeoutMs} ms`)
    this.name = 'RedisNotAnsweringError'
  }
}

export interface AnswerDeadlineOptions {
  timeoutMs: number
  clock: Clock
  /** Told once when the connection stalls, and once when it answers again. */
  onChange?: (stalled: boolean) => void
}

export class AnswerDeadline {
  private stalledNow = false

  constructor (private readonly options: AnswerDeadlineOptions) {}

  get stalled (): boolean {
    return this.stalledNow
  }

  /** `send()` issues the command; its answer, or a RedisNotAnsweringError past the deadline or while stalled. */
  async run<T>(send: () => Promise<T>): Promise<T> {
    if (this.stalledNow) throw new RedisNotAnsweringError(this.options.timeoutMs)
    const sent = send()
    return await new Promise<T>((resolve, reject) => {
      // The clock's timer (a test's hand-moved one), else a real one that does not keep the process alive.
      const timer = (this.options.clock.setTimer ?? backgroundTimer)(() => {
        this.setStalled(true)
        reject(new RedisNotAnsweringError(this.options.timeoutMs))
      }, this.options.timeoutMs)
      sent.then(
        (value) => {
          timer.cancel()
          // Answered, even after its deadline: Redis is back.
          this.setStalled(false)
          resolve(value)
        },
        (error: unknown) => {
          timer.cancel()
          reject(error)
        }
      )
    })
  }

  /** A new connection, which its owner announces: whatever stalled the old one is gone with it. Tells no one. */
  reset (): void {
    this.stalledNow = false
  }

  private setStalled (stalled: boolean): void {
    if (this.stalledNow === stalled) return
    this.stalledNow = stalled
    this.options.onChange?.(stalled)
  }
}
