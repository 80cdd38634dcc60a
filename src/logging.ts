// The pino logger, with redaction as a second line of defence: no code path should log a secret in the first place.

import pino, { type DestinationStream, type Logger } from 'pino'
import type { LogLevel } from './config/settings.js'

const REDACTED_PATHS = [
  'req.headers.authorization',
  'req.headers["proxy-authorization"]',
  'req.headers["vz-m2m-token"]',
  'headers.authorization',
  'headers["proxy-authorization"]',
  'headers["vz-m2m-token"]',
  'password', '*.password', 'oldPassword', '*.oldPassword', 'newPassword', '*.newPassword',
  'clientSecret', '*.clientSecret',
  'sessionToken', '*.sessionToken',
  'access_token', '*.access_token',
  'adminToken', '*.adminToken'
]

export function createLogger (level: LogLevel, destination?: DestinationStream): Logger {
  return pino({
    level,
    base: { service: 'm2m-session-proxy' },
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' }
  }, destination)
}
