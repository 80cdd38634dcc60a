// Where the log lines go in production: stdout, in batches, and never at the cost of the process.

import fs from 'node:fs'

/** The reader is slow (a full pipe): try again after this long. */
const BUSY_RETRY_MS = 100
/** At exit, a slow reader gets this long for what is still buffered; the rest is dropped. */
const EXIT_FLUSH_BUDGET_MS = 1000
/** The reader is gone (EPIPE: pipe or socket closed) or there is no stdout at all (EBADF). */
const READER_GONE = new Set(['EPIPE', 'EBADF'])

function countLines (text: string | Buffer): number {
  let count = 0
  for (let index = text.indexOf('\n'); index !== -1; index = text.indexOf('\n', index + 1)) count++
  return count
}

/** A warning of the destination itself, in pino's JSON line shape (level 40), never waiting for room. */
function warningLine (message: string): string {
  return JSON.stringify({ level: 40, time: Date.now(), service: 'm2m-session-proxy', component: 'logging', msg: message }) + '\n'
}

/** One synchronous line on stderr (rare events only); a broken stderr is no reason to fail either. */
function tellStderr (message: string): void {
  try {
    fs.writeSync(2, `m2m-session-proxy: ${message}\n`)
  } catch { /* nobody to tell */ }
}

/**
 * A pino destination for a file descriptor (stdout): lines gathered up to `minLength` characters
 * (or `periodicFlushMs`), then written asynchronously; at exit, what is left is written synchronously.
 *
 * Replaces pino.destination (sonic-boom), whose exit-time flushSync retries a failed write every
 * 100 ms for ever, EPIPE included: with the reader of stdout gone the process never exited. Here,
 * once the reader is gone, lines are dropped and counted, and serving goes on.
 */
export class FdLogDestination {
  readonly #fd: number
  readonly #minLength: number
  readonly #maxPendingBytes: number
  #pending = ''
  /** Lines dropped in the current episode of a slow reader (0 while lines are kept). */
  #droppingSince = 0
  /** Bytes handed to an asynchronous write that has not completed. */
  #writing: Buffer | undefined
  #flushWaiters: Array<(error?: Error) => void> = []
  #failure: string | undefined
  #droppedLines = 0
  readonly #timer: NodeJS.Timeout | undefined

  /**
   * `maxPendingBytes`: lines waiting for a slow reader (a full pipe) are kept up to about this many
   * bytes (0: no bound); further lines are dropped and counted, with one warning line when dropping
   * starts and one when it stops, so that a reader falling behind never grows the process's memory.
   */
  constructor (fd: number, options: { minLength: number, periodicFlushMs: number, maxPendingBytes?: number }) {
    this.#fd = fd
    this.#minLength = options.minLength
    this.#maxPendingBytes = options.maxPendingBytes ?? 0
    if (options.periodicFlushMs > 0) this.#timer = setInterval(() => { this.flush() }, options.periodicFlushMs).unref()
    process.on('exit', () => {
      this.flushSync()
      if (this.#failure !== undefined) tellStderr(`${this.#droppedLines} log lines dropped: stdout failed (${this.#failure})`)
    })
  }

  /** Lines written to nobody: since the reader went away, or while it was too slow. */
  get droppedLines (): number { return this.#droppedLines }

  /** The error code that stopped the output (EPIPE, EBADF), or undefined while it works. */
  get failure (): string | undefined { return this.#failure }

  write (line: string): boolean {
    if (this.#failure !== undefined) {
      this.#droppedLines++ // pino writes one line per call
      return true
    }
    if (this.#maxPendingBytes > 0 && this.#pending.length + line.length > this.#maxPendingBytes) {
      // The reader is this far behind: drop rather than hold memory for it. (String length counts
      // UTF-16 units, about bytes for these mostly-ASCII lines.)
      if (this.#droppingSince++ === 0) {
        this.#pending += warningLine(`stdout is not read fast enough: more than ${this.#maxPendingBytes} bytes of log lines wait; ` +
          'further lines are dropped and counted in m2m_proxy_log_lines_dropped_total until it catches up (M2M_PROXY_LOG_MAX_BUFFERED_BYTES)')
      }
      this.#droppedLines++
      return true
    }
    if (this.#droppingSince > 0) {
      this.#pending += warningLine(`stdout caught up: ${this.#droppingSince} log line(s) were dropped while it was not read fast enough`)
      this.#droppingSince = 0
    }
    this.#pending += line
    if (this.#writing === undefined && this.#pending.length >= this.#minLength) this.#writeNext()
    return true
  }

  /** Writes what is buffered now; `callback` once it is written (or dropped). */
  flush (callback?: (error?: Error) => void): void {
    if (callback !== undefined) this.#flushWaiters.push(callback)
    if (this.#writing === undefined) this.#writeNext()
  }

  /** At exit: what is left, synchronously, within EXIT_FLUSH_BUDGET_MS. An asynchronous write in flight is left to complete. */
  flushSync (): void {
    if (this.#failure !== undefined || this.#pending === '') return
    let chunk = Buffer.from(this.#pending)
    this.#pending = ''
    const deadline = Date.now() + EXIT_FLUSH_BUDGET_MS
    while (chunk.length > 0) {
      try {
        chunk = chunk.subarray(fs.writeSync(this.#fd, chunk))
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code
        if ((code === 'EAGAIN' || code === 'EBUSY') && Date.now() < deadline) {
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10) // a short sleep: there is no event loop any more
          continue
        }
        this.#stop(code ?? 'write failed', chunk)
        return
      }
    }
  }

  #writeNext (): void {
    if (this.#pending === '') {
      this.#writing = undefined
      for (const waiter of this.#flushWaiters.splice(0)) waiter()
      return
    }
    const chunk = Buffer.from(this.#pending)
    this.#pending = ''
    this.#write(chunk)
  }

  #write (chunk: Buffer): void {
    this.#writing = chunk
    fs.write(this.#fd, chunk, 0, chunk.length, null, (error, written) => {
      if (error !== null) {
        if (error.code === 'EAGAIN' || error.code === 'EBUSY') {
          setTimeout(() => { this.#write(chunk) }, BUSY_RETRY_MS).unref() // logging never holds the process
          return
        }
        this.#stop(error.code ?? 'write failed', chunk)
        return
      }
      if (written < chunk.length) {
        this.#write(chunk.subarray(written))
        return
      }
      if (this.#pending.length >= this.#minLength || this.#flushWaiters.length > 0) this.#writeNext()
      else this.#writing = undefined
    })
  }

  /** No more writes: what is buffered is dropped, and so is every line after it. */
  #stop (code: string, unwritten: Buffer): void {
    this.#failure = code
    this.#droppedLines += countLines(unwritten) + countLines(this.#pending)
    this.#pending = ''
    this.#writing = undefined
    clearInterval(this.#timer)
    for (const waiter of this.#flushWaiters.splice(0)) waiter()
    const reason = READER_GONE.has(code) ? 'its reader is gone' : 'it cannot be written'
    tellStderr(`stdout failed (${code}): ${reason}; log lines are dropped from now on, counted in m2m_proxy_log_lines_dropped_total`)
  }
}
