// The pino logger, with redaction as a second line of defence: no code path should log a secret in the first place.

import pino, { type Bindings, type ChildLoggerOptions, type DestinationStream, type Logger } from 'pino'
import type { FastifyBaseLogger } from 'fastify'
import type { LogFormat, LogLevel } from './config/settings.js'
import { FdLogDestination } from './log-destination.js'
import { PrettyDestination } from './log-pretty.js'

// Exact paths only: wildcard redaction walks every logged object on every line (what it cost: docs/performance.md
// table, measured by npm run bench). No log call passes nested secrets; tests check the output.
const REDACTED_PATHS = [
  'req.headers.authorization',
  'req.headers["proxy-authorization"]',
  'req.headers["vz-m2m-token"]',
  'headers.authorization',
  'headers["proxy-authorization"]',
  'headers["vz-m2m-token"]',
  'password',
  'oldPassword',
  'newPassword',
  'clientSecret',
  'sessionToken',
  'access_token',
  'adminToken',
  'credentials.password',
  'credentials.clientSecret'
]

/**
 * M2M_PROXY_LOG_MAX_BUFFERED_BYTES's default: about 5,000 request lines, a few seconds of load, 1 MiB of memory at
 * most.
 */
export const DEFAULT_MAX_BUFFERED_LOG_BYTES = 1024 * 1024

/** Lines wait in the buffer at most this long. */
export const LOG_FLUSH_INTERVAL_MS = 1000

export interface LogOutput {
  /** Bytes of lines gathered before one write to stdout (0: write as soon as the last write is done). */
  bufferBytes: number
  /** Bytes of lines kept for a slow stdout reader before further lines are dropped and counted (0: no bound). */
  maxBufferedBytes?: number
  /** Another stream instead of stdout (tests). */
  destination?: DestinationStream
  /** M2M_PROXY_LOG_FORMAT; default json. */
  format?: LogFormat
}

/** One per process, as there is one stdout. */
let stdout: FdLogDestination | undefined

/** Log lines dropped because stdout could not be written any more (its reader gone): 0 while it works. */
export function droppedLogLines (): number {
  return stdout?.droppedLines ?? 0
}

/**
 * Without a destination (production), lines go to stdout asynchronously and in batches: one system
 * call per `bufferBytes` (about 20 request lines) instead of one per line. What is left is written
 * when the process exits. Once stdout fails (EPIPE: its reader is gone), lines are dropped and counted.
 */
export function createLogger (level: LogLevel, output: LogOutput): Logger {
  const lines =
    output.destination ??
    (stdout ??= new FdLogDestination(1, {
      minLength: output.bufferBytes,
      maxPendingBytes: output.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_LOG_BYTES,
      periodicFlushMs: output.bufferBytes > 0 ? LOG_FLUSH_INTERVAL_MS : 0
    }))
  const destination = output.format === 'pretty' ? new PrettyDestination(lines) : lines
  return pino(
    {
      level,
      base: { service: 'm2m-session-proxy' },
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' }
    },
    destination
  )
}

type AnyLogFn = (...args: unknown[]) => void

/**
 * Fastify makes a child logger bound to the request id for every request, yet most requests never
 * log through it (their one request line is written by the listener's logger). This stand-in makes
 * the child on first use (pino's child() per request: docs/performance.md).
 */
class LazyChildLogger {
  #child: FastifyBaseLogger | undefined
  readonly #parent: FastifyBaseLogger
  readonly #bindings: Bindings
  readonly #options: ChildLoggerOptions
  readonly #warningsAtDebug: ReadonlySet<string> | undefined

  constructor (
    parent: FastifyBaseLogger,
    bindings: Bindings,
    options: ChildLoggerOptions,
    warningsAtDebug?: ReadonlySet<string>
  ) {
    this.#parent = parent
    this.#bindings = bindings
    this.#options = options
    this.#warningsAtDebug = warningsAtDebug
  }

  get #logger (): FastifyBaseLogger {
    this.#child ??= this.#parent.child(this.#bindings, this.#options)
    return this.#child
  }

  get level (): string {
    return this.#child?.level ?? this.#options.level ?? this.#parent.level
  }

  set level (level: string) {
    this.#logger.level = level
  }

  fatal (...args: unknown[]): void {
    ;(this.#logger.fatal as AnyLogFn)(...args)
  }

  error (...args: unknown[]): void {
    ;(this.#logger.error as AnyLogFn)(...args)
  }

  warn (...args: unknown[]): void {
    // log.warn(obj, msg) or log.warn(msg)
    const message = typeof args[0] === 'string' ? args[0] : args[1]
    if (this.#warningsAtDebug?.has(message as string) === true) (this.#logger.debug as AnyLogFn)(...args)
    else (this.#logger.warn as AnyLogFn)(...args)
  }

  info (...args: unknown[]): void {
    ;(this.#logger.info as AnyLogFn)(...args)
  }

  debug (...args: unknown[]): void {
    ;(this.#logger.debug as AnyLogFn)(...args)
  }

  trace (...args: unknown[]): void {
    ;(this.#logger.trace as AnyLogFn)(...args)
  }

  silent (): void {}
  child (bindings: Bindings, options?: ChildLoggerOptions): FastifyBaseLogger {
    return this.#logger.child(bindings, options)
  }
}

/** Fastify's childLoggerFactory: request loggers are made on first use. */
export function lazyRequestLogger (
  parent: FastifyBaseLogger,
  bindings: Bindings,
  options: ChildLoggerOptions
): FastifyBaseLogger {
  return new LazyChildLogger(parent, bindings, options) as unknown as FastifyBaseLogger
}

/**
 * The same, except that warnings with one of these messages are written at debug: for a library's
 * own warning about something the caller logs itself.
 */
export function lazyRequestLoggerWithWarningsAtDebug (
  messages: ReadonlySet<string>
): (parent: FastifyBaseLogger, bindings: Bindings, options: ChildLoggerOptions) => FastifyBaseLogger {
  return (parent, bindings, options) =>
    new LazyChildLogger(parent, bindings, options, messages) as unknown as FastifyBaseLogger
}
