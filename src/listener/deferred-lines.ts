// Info lines written together once the event loop's current phase is done, instead of one in the middle of each
// request's work: formatting a line while pino's code is still hot costs about a quarter of formatting it between two
// requests (docs/performance.md, "What a request line costs").

import type { Logger } from 'pino'

export class DeferredLines<Line extends object> {
  readonly #log: Logger
  readonly #message: string
  #lines: Line[] = []

  constructor (log: Logger, message: string) {
    this.#log = log
    this.#message = message
  }

  /**
   * Holds the line until the `setImmediate` after the current phase. The lines held are those of the requests finished
   * in one phase, so their number is bounded by the connections the listener holds.
   */
  add (line: Line): void {
    if (this.#lines.push(line) === 1) setImmediate(this.write)
  }

  /** Writes the lines held, in the order they came; also called when the listener closes, so that none is left. */
  readonly write = (): void => {
    const lines = this.#lines
    if (lines.length === 0) return
    this.#lines = []
    for (const line of lines) this.#log.info(line as object, this.#message)
  }
}
