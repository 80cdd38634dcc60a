// The last session events (logins, OAuth fetches, renewals, retries), for GET /admin/events and the status page: what
// happened and why, at a glance. Kept as codes and counts only: an event's free-text message is left out.

import type { SessionEvent } from '../session/events.js'

export interface RecentEvent {
  at: string
  type: SessionEvent['type']
  outcome?: string
  reason?: string
  /** On a failure: ThingSpace's status and error code, or the network or TLS error. */
  cause?: { status?: number; errorCode?: string; networkError?: string; tlsError?: string; reason?: string }
  consecutiveRejections?: number
}

/** Events worth showing an operator (the fleet's lock waits and logins avoided are counted in the metrics). */
const SHOWN: ReadonlySet<SessionEvent['type']> = new Set([
  'login',
  'oauth-fetch',
  'renewal',
  'background-retry',
  'logout-failed'
])

export class RecentSessionEvents {
  private readonly events: RecentEvent[] = []

  constructor (private readonly now: () => number, private readonly limit = 50) {}

  record (event: SessionEvent): void {
    if (!SHOWN.has(event.type)) return
    const recent: RecentEvent = { at: new Date(this.now()).toISOString(), type: event.type }
    if ('outcome' in event) recent.outcome = event.outcome
    if (event.type === 'renewal') recent.reason = event.reason
    if (event.type === 'background-retry') recent.reason = event.cause
    if ('cause' in event && typeof event.cause === 'object') {
      const { status, errorCode, networkError, tlsError, reason } = event.cause
      recent.cause = { status, errorCode, networkError, tlsError, reason }
    }
    if (event.type === 'login') recent.consecutiveRejections = event.consecutiveRejections
    this.events.push(recent)
    if (this.events.length > this.limit) this.events.shift()
  }

  /** Newest first. */
  list (): RecentEvent[] {
    return [...this.events].reverse()
  }
}
