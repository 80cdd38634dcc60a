// Where the log lines go in production: stdout, in batches, through sonic-boom (pino's own writer) when it cannot take
// them at once, and never at the cost of the process: lines a slow reader cannot take are dropped and counted, a reader
// gone stops the writing, and the exit waits for a slow reader one second at most.

import fs from 'node:fs'
import sonicBoom from 'sonic-boom'

// A CommonJS module whose class is also its `SonicBoom` property: the one spelling both Node's ESM loader and the types
// accept.
const { SonicBoom } = sonicBoom
type SonicBoomStream = InstanceType<typeof SonicBoom>

/** At exit, a slow reader gets this long for what is still buffered; the rest is dropped. */
const EXIT_FLUSH_BUDGET_MS = 1000
/** The failure once the exit's flush ran out of time: the reader took nothing more for a whole budget. */
const NOT_READ_AT_EXIT = 'not read at exit'
/** The reader is gone (EPIPE: pipe or socket closed) or there is no stdout at all (EBADF). */
const READER_GONE = new Set(['EPIPE', 'EBADF'])

function countLines (text: string | Buffer): number {
  let count = 0
  for (let index = text.indexOf('\n'); index !== -1; index = text.indexOf('\n', index + 1)) count++
  return count
}

/** A warning of the destination itself, in pino's JSON line shape (level 40). */
function warningLine (message: string, time = Date.now()): string {
  return JSON.stringify({ level: 40, time, service: 'm2m-session-proxy', component: 'logging', msg: message }) + '\n'
}

/** One synchronous line on stderr (rare events only); a broken or full stderr is no reason to fail or wait either. */
function tellStderr (message: string): void {
  try {
    fs.writeSync(2, `m2m-session-proxy: ${message}\n`)
  } catch {
    /* nobody to tell */
  }
}

/**
 * Puts stdout or stderr in non-blocking mode when it is a pipe or a socket. A shell, Docker or Node's spawn hand them
 * over blocking: a write to a full one waits for the reader, for ever if the reader stalls, and an asynchronous write
 * stuck there in libuv's threadpool holds the exit as well (Node joins those threads as the process exits: measured
 * on Node 20 and 24), a second signal included. Non-blocking, a full pipe answers EAGAIN at once, which sonic-boom
 * retries every 100 ms while serving and the exit only until its deadline. Node's own stream for the descriptor does
 * it (libuv's uv_pipe_open, when process.stdout is first used), and Node puts the original mode back as the process
 * exits, for whoever shares the pipe. A file never waits for a reader; a terminal is left as it is. Returns whether
 * the descriptor is a pipe or a socket, now non-blocking.
 */
function makeNonBlocking (fd: 1 | 2): boolean {
  if (!isPipeOrSocket(fd)) return false
  void (fd === 1 ? process.stdout : process.stderr)
  return true
}

/** Whether `fd` is a pipe or a socket; false when there is no such descriptor (EBADF: the first write says so). */
function isPipeOrSocket (fd: number): boolean {
  try {
    const stat = fs.fstatSync(fd)
    return stat.isFIFO() || stat.isSocket()
  } catch {
    return false
  }
}

/** Whether `fd` is a regular file (a file never waits for a reader). */
function isRegularFile (fd: number): boolean {
  try {
    return fs.fstatSync(fd).isFile()
  } catch {
    return false
  }
}

/**
 * Lines that sonic-boom still holds, read from its own fields (sonic-boom is pinned at 5.0.2): after the exit's flush
 * ran out of time, what the reader will not get. A line partly written counts as not written.
 */
function linesHeldBy (sonic: SonicBoomStream): number {
  const held = heldBy(sonic)
  return [held._writingBuf, ...held._bufs.flat()].reduce((sum, bytes) => sum + countLines(bytes), 0)
}

/** sonic-boom's own fields in its buffer mode (pinned at 5.0.2): what it holds and whether a write is under way. */
function heldBy (sonic: SonicBoomStream): { _bufs: Buffer[][], _writingBuf: Buffer, _writing: boolean } {
  return sonic as unknown as { _bufs: Buffer[][], _writingBuf: Buffer, _writing: boolean }
}

/**
 * A pino destination for a file descriptor (stdout): lines are gathered here up to `minLength`
 * characters (or `periodicFlushMs`), then written in the call where stdout takes them at once (see
 * the constructor); what it does not take goes to sonic-boom, which writes it asynchronously and
 * keeps at most `maxPendingBytes` (0: no bound) for a slow reader; this adds the counts, the
 * warnings and the bounded exit. Gathered here because sonic-boom's own write is costly per call (one
 * call per line showed in npm run bench, see docs/performance.md); one call per batch does not.
 */
export class FdLogDestination {
  readonly #sonic: SonicBoomStream
  readonly #fd: number
  readonly #writesAtOnce: boolean
  readonly #minLength: number
  readonly #maxPendingBytes: number
  /** Lines gathered and not yet handed to sonic-boom. */
  #batch = ''
  /** Lines dropped in the current episode of a slow reader (0 while lines are kept), and since when. */
  #droppingSince = 0
  #droppingStartedAt = 0
  /** Set by sonic-boom's 'drop', which it emits within the write that did not fit. */
  #lastWriteDropped = false
  #failure: string | undefined
  #droppedLines = 0
  /** Set at exit: a slow reader's EAGAIN is retried until then, not for ever. */
  #exitDeadline = 0
  #timer: NodeJS.Timeout | undefined
  /** Lines the exit's flush could not write within its budget. */
  #leftAtExit = 0

  /**
   * `maxPendingBytes`: lines waiting for a slow reader (a full pipe) are kept up to about this many
   * bytes; further lines are dropped and counted, and once the reader catches up two warning lines
   * say when dropping started and how many lines it cost, so that a reader falling behind never
   * grows the process's memory.
   */
  constructor (fd: number, options: { minLength: number; periodicFlushMs: number; maxPendingBytes?: number }) {
    let nonBlocking = false
    if (fd === 1) {
      nonBlocking = makeNonBlocking(1)
      makeNonBlocking(2) // where the rare lines of tellStderr go, often the same pipe (2>&1)
    }
    this.#fd = fd
    // A batch may be written in the call (when nothing waits before it) to a pipe or socket made non-blocking (a full
    // one answers EAGAIN at once) or to a file: a synchronous write costs the process less than half of an
    // asynchronous one, which goes through libuv's thread pool (measured: 15 against 33 µs in the call for a batch of
    // 14 request lines, 17 against 43 µs of CPU in all; docs/performance.md). A terminal stays asynchronous: it may
    // block.
    this.#writesAtOnce = nonBlocking || isRegularFile(fd)
    this.#minLength = options.minLength
    this.#maxPendingBytes = options.maxPendingBytes ?? 0
    this.#sonic = new SonicBoom({
      fd,
      // Bytes, so that what a partial write of ours leaves is handed over exactly (a line's UTF-8 may be cut there).
      contentMode: 'buffer',
      maxLength: this.#maxPendingBytes,
      // A full pipe (EAGAIN) is waited for while serving; at exit only until the deadline.
      retryEAGAIN: () => this.#exitDeadline === 0 || Date.now() < this.#exitDeadline
    })
    this.#sonic.on('drop', () => {
      this.#lastWriteDropped = true
    })
    this.#sonic.on('error', (error: NodeJS.ErrnoException) => {
      this.#stop(error.code ?? 'write failed')
    })
    if (options.periodicFlushMs > 0) {
      this.#timer = setInterval(() => {
        this.#handOver()
      }, options.periodicFlushMs).unref()
    }
    process.on('exit', () => {
      this.flushSync()
      if (this.#failure === undefined) return
      if (this.#failure === NOT_READ_AT_EXIT) {
        tellStderr(
          `${this.#droppedLines} log lines dropped in all: stdout not read for ${EXIT_FLUSH_BUDGET_MS / 1000} s at exit ` +
            `(${this.#leftAtExit} of them left unwritten then)`
        )
      } else {
        tellStderr(`${this.#droppedLines} log lines dropped: stdout failed (${this.#failure})`)
      }
    })
  }

  /** Lines written to nobody: since the reader went away, or while it was too slow. */
  get droppedLines (): number {
    return this.#droppedLines
  }

  /** The error code that stopped the output (EPIPE, EBADF; NOT_READ_AT_EXIT), or undefined while it works. */
  get failure (): string | undefined {
    return this.#failure
  }

  write (line: string): boolean {
    if (this.#failure !== undefined) {
      this.#droppedLines++ // pino writes one line per call
      return true
    }
    this.#batch += line
    if (this.#batch.length >= this.#minLength) this.#handOver()
    return true
  }

  /**
   * The gathered lines to sonic-boom, as one write. While lines are dropped, the two warnings of the
   * episode go in the same write, so they are written only with the lines that follow them; a write
   * that does not fit is dropped whole and its lines counted.
   */
  #handOver (): void {
    if (this.#batch === '' || this.#failure !== undefined) return
    const batch = this.#batch
    this.#batch = ''
    this.#lastWriteDropped = false
    const bytes = Buffer.from(this.#droppingSince > 0 ? this.#droppingWarnings() + batch : batch)
    const rest = this.#writeAtOnce(bytes)
    if (rest === undefined) {
      this.#droppedLines += countLines(batch) // stdout failed in the write
      return
    }
    // sonic-boom's buffer mode takes a Buffer; its types know only the string of its default mode.
    if (rest.length > 0) this.#sonic.write(rest as unknown as string)
    if (!this.#lastWriteDropped) {
      this.#droppingSince = 0
      return
    }
    if (this.#droppingSince === 0) this.#droppingStartedAt = Date.now()
    const lines = countLines(batch)
    this.#droppedLines += lines
    this.#droppingSince += lines
  }

  /**
   * Writes what it can of `bytes` in the call when stdout allows it and sonic-boom holds nothing (which would have to
   * go first); returns what is left for sonic-boom (all of it otherwise, or when a full pipe takes nothing now), or
   * undefined once stdout failed.
   */
  #writeAtOnce (bytes: Buffer): Buffer | undefined {
    const held = heldBy(this.#sonic)
    if (!this.#writesAtOnce || held._writing || held._bufs.length > 0) return bytes
    // What a partial write leaves must not be dropped (the line cut there would stay cut): with sonic-boom holding
    // nothing, it always fits unless the batch itself is larger than the bound (a long line, the smallest bound).
    if (this.#maxPendingBytes > 0 && bytes.length > this.#maxPendingBytes) return bytes
    try {
      return bytes.subarray(fs.writeSync(this.#fd, bytes))
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? 'write failed'
      if (code === 'EAGAIN') return bytes
      this.#stop(code)
      return undefined
    }
  }

  /** Writes what is buffered now; `callback` once it is written (or dropped). */
  flush (callback?: (error?: Error) => void): void {
    this.#handOver()
    if (this.#failure !== undefined) {
      callback?.()
      return
    }
    this.#sonic.flush((error) => {
      callback?.(error ?? undefined)
    })
  }

  /** At exit: what is left, synchronously, within EXIT_FLUSH_BUDGET_MS; the rest is dropped. */
  flushSync (): void {
    this.#handOver()
    if (this.#failure !== undefined) return
    this.#exitDeadline = Date.now() + EXIT_FLUSH_BUDGET_MS
    try {
      this.#sonic.flushSync()
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? 'write failed'
      if (code !== 'EAGAIN') {
        this.#stop(code)
        return
      }
      // Out of time (retryEAGAIN said no more): what is left stays unwritten, counted, and said once by the caller.
      this.#leftAtExit = linesHeldBy(this.#sonic)
      this.#droppedLines += this.#leftAtExit
      this.#failure = NOT_READ_AT_EXIT
    }
  }

  /** When the current dropping episode started, and how many lines it cost. */
  #droppingWarnings (): string {
    return (
      warningLine(
        `stdout is not read fast enough: more than ${this.#maxPendingBytes} bytes of log lines wait; ` +
          'further lines are dropped and counted in m2m_proxy_log_lines_dropped_total until it catches up (M2M_PROXY_LOG_MAX_BUFFERED_BYTES)',
        this.#droppingStartedAt
      ) +
      warningLine(`stdout caught up: ${this.#droppingSince} log line(s) were dropped while it was not read fast enough`)
    )
  }

  /** No more writes: what sonic-boom still holds is dropped, and so is every line after it. */
  #stop (code: string): void {
    if (this.#failure !== undefined) return
    this.#failure = code
    this.#droppedLines += countLines(this.#batch)
    this.#batch = ''
    clearInterval(this.#timer) // sonic-boom keeps what it holds; handed nothing more, it writes nothing more
    const reason = READER_GONE.has(code) ? 'its reader is gone' : 'it cannot be written'
    tellStderr(
      `stdout failed (${code}): ${reason}; log lines are dropped from now on, counted in m2m_proxy_log_lines_dropped_total`
    )
  }
}
