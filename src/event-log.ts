// The log lines of the lifecycle events (src/events.ts): one subscriber per channel, one line per event.

import type { Logger } from 'pino'
import type { ProxyEvents } from './events.js'
import type { SessionEvent } from './session/events.js'
import type { CredentialsEvent } from './credentials/events.js'

interface SessionLogOptions {
  maxLoginFailures: number
  /** M2M_PROXY_UPSTREAM: named when nothing answered there (a typo in it reads differently from an outage). */
  upstream: string
  /** The egress proxy (describeEgress: no credentials), when one is set: it may be the one that did not answer. */
  egressProxy?: string
}

/** ": ThingSpace at host (M2M_PROXY_UPSTREAM) did not answer (ECONNREFUSED)" when no answer came; else nothing. */
function unanswered (
  cause: { networkError?: string; tlsError?: string } | undefined,
  options: SessionLogOptions
): string {
  const code = cause?.networkError ?? cause?.tlsError
  if (code === undefined) return ''
  const thingSpace = `ThingSpace at ${new URL(options.upstream).host} (M2M_PROXY_UPSTREAM)`
  return options.egressProxy === undefined
    ? `: ${thingSpace} did not answer (${code})`
    : `: no answer from the egress proxy at ${options.egressProxy} (HTTPS_PROXY, HTTP_PROXY) or from ${thingSpace} behind it (${code})`
}

function logSessionEvent (log: Logger, event: SessionEvent, options: SessionLogOptions): void {
  switch (event.type) {
    case 'login':
      // Failures carry their cause (status, errorCode, networkError, tlsError): codes only, never a body or a secret.
      if (event.outcome === 'success') log.info('logged in to ThingSpace')
      else {
        log.error(
          {
            outcome: event.outcome,
            ...event.cause,
            consecutiveLoginFailures: event.consecutiveRejections,
            maxLoginFailures: options.maxLoginFailures
          },
          `login failed: ${event.message ?? event.outcome}`
        )
      }
      return
    case 'oauth-fetch':
      if (event.outcome === 'success') log.debug({ outcome: event.outcome }, 'OAuth token fetch')
      else {
        log.error(
          { outcome: event.outcome, ...event.cause },
          `OAuth token fetch failed${event.outcome === 'rejected' ? ': the app key or secret was rejected' : unanswered(event.cause, options)}`
        )
      }
      return
    case 'renewal':
      log.info({ reason: event.reason }, 'session renewed')
      return
    case 'logout-failed':
      log.warn({ ...event.cause, replacedSession: event.replaced }, event.message)
      return
    case 'background-retry':
      log.info(
        { delayMs: event.delayMs, cause: event.cause },
        event.cause === 'fleet-store-unreachable'
          ? 'not ready while the fleet store cannot be reached: logging in again in the background once it answers'
          : event.cause === 'state-unwritable'
            ? 'not ready while the state directory cannot be written: trying again in the background'
            : 'not ready while ThingSpace is failing: logging in again in the background'
      )
      return
    case 'fleet-login-avoided':
      log.info('took up the session another replica logged in: no login sent')
      return
    case 'fleet-lock-wait':
      log.debug('another replica holds the login lock: waiting for its login')
      return
    case 'info':
      log.info(event.message)
      return
    case 'warning':
      log.warn(event.message)
  }
}

function logCredentialsEvent (log: Logger, event: CredentialsEvent): void {
  switch (event.type) {
    case 'info':
      log.info(event.message)
      return
    case 'warning':
      log.warn(event.message)
      return
    case 'error':
      log.error(event.message)
      return
    case 'reset-failed':
      log.error(event.cause, event.message)
      return
    case 'generation':
      log.debug(
        { generation: event.generation, changedAt: new Date(event.changedAt).toISOString() },
        'password generation in force'
      )
  }
}

/** Logs `events` under the components session, credentials and fleet of `logger`. */
export function logEvents (events: ProxyEvents, logger: Logger, options: SessionLogOptions): void {
  const sessionLog = logger.child({ component: 'session' })
  const credentialsLog = logger.child({ component: 'credentials' })
  const fleetLog = logger.child({ component: 'fleet' })
  events.subscribe('session', (event) => {
    logSessionEvent(sessionLog, event, options)
  })
  events.subscribe('credentials', (event) => {
    logCredentialsEvent(credentialsLog, event)
  })
  events.subscribe('fleet', (event) => {
    if (event.type === 'info') fleetLog.info(event.message)
    else fleetLog.warn(event.message)
  })
}
