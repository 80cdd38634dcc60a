// The pino logger, with redaction as a second line of defence: no code path should log a secret in the first place.

import pino, { type DestinationStream, type Logger } from 'pino'
import type { LogLevel } from './config/settings.js'

// Exact paths only: wildcard redaction walks every logged object and costs measurable throughput
// (bench: about 3% of CPU per request line). No log call passes nested secrets; tests check the output.
const REDACTED_PATHS = [
  'req.headers.authorization',
  'req.headers["proxy-authorization"]',
  'req.headers["vz-m2m-token"]',
  'headers.authorization',
  'headers["proxy-authorization"]',
  'headers["vz-m2m-token"]',
  'password', 'oldPassword', 'newPassword', 'clientSecret', 'sessionToken', 'access_token', 'adminToken',
  'credentials.password', 'credentials.clientSecret'
]

/**
 * Without a destination (production), lines go to stdout asynchronously: a write in progress lets
 * the next lines queue up and leave in one system call instead of one each. Pino flushes on exit.
 */
export function createLogger (level: LogLevel, destination?: DestinationStream): Logger {
  return pino({
    level,
    base: { service: 'm2m-session-proxy' },
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' }
  }, destination ?? pino.destination({ dest: 1, sync: false }))
}
