// Prometheus metrics (prom-client): bounded labels only, never a path with identifiers, a token or a user name.

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { SessionManager } from './session/session-manager.js'

const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'])

/** Methods outside the usual set are folded into one label value, so clients cannot grow the series. */
export function methodLabel (method: string): string {
  return KNOWN_METHODS.has(method) ? method : 'OTHER'
}

export function statusClass (statusCode: number): string {
  return statusCode >= 100 && statusCode < 600 ? `${Math.floor(statusCode / 100)}xx` : 'other'
}

type Labelled<T> = { labels: (...values: string[]) => T }

/** prom-client hashes label objects on every call; resolving each label set once keeps the hot path cheap. */
function cachedChildren<T> (metric: Labelled<T>): (...values: string[]) => T {
  const children = new Map<string, T>()
  return (...values) => {
    const key = values.join('\u0000')
    let child = children.get(key)
    if (child === undefined) {
      child = metric.labels(...values)
      children.set(key, child)
    }
    return child
  }
}

export class ProxyMetrics {
  readonly registry = new Registry()
  readonly requests = new Counter({ name: 'm2m_proxy_requests_total', help: 'Requests answered on the proxy listener', labelNames: ['method', 'status_class'] as const, registers: [this.registry] })
  readonly upstreamDuration = new Histogram({
    name: 'm2m_proxy_upstream_duration_seconds',
    help: 'Time from sending a request upstream to its response headers (or failure)',
    labelNames: ['status_class'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry]
  })

  readonly logins = new Counter({ name: 'm2m_proxy_logins_total', help: 'Session logins by outcome', labelNames: ['outcome'] as const, registers: [this.registry] })
  readonly renewals = new Counter({ name: 'm2m_proxy_session_renewals_total', help: 'Sessions replaced, by reason', labelNames: ['reason'] as const, registers: [this.registry] })
  readonly replays = new Counter({ name: 'm2m_proxy_replays_total', help: 'Requests replayed after a token rejection', labelNames: ['reason'] as const, registers: [this.registry] })
  readonly oauthFetches = new Counter({ name: 'm2m_proxy_oauth_fetches_total', help: 'OAuth token requests by outcome', labelNames: ['outcome'] as const, registers: [this.registry] })

  /** Counts one answered request (hot path). */
  readonly countRequest: (method: string, statusCode: number) => void
  /** Records one upstream exchange (hot path); statusCode undefined when it failed. */
  readonly observeUpstream: (statusCode: number | undefined, seconds: number) => void

  constructor (session: () => SessionManager | undefined) {
    const requestCounter = cachedChildren(this.requests)
    this.countRequest = (method, statusCode) => requestCounter(methodLabel(method), statusClass(statusCode)).inc()
    const durationHistogram = cachedChildren(this.upstreamDuration)
    this.observeUpstream = (statusCode, seconds) => durationHistogram(statusCode === undefined ? 'error' : statusClass(statusCode)).observe(seconds)
    collectDefaultMetrics({ register: this.registry })
    // Gauges read the session state when scraped instead of being updated on every request.
    const sessionTimes = (): { ageSeconds: number, idleSeconds: number } | undefined => {
      const snapshot = session()?.snapshot()
      if (snapshot?.loggedInAt == null || snapshot.state !== 'active') return undefined
      const now = Date.now()
      return {
        ageSeconds: (now - Date.parse(snapshot.loggedInAt)) / 1000,
        idleSeconds: snapshot.lastUsedAt === null ? 0 : (now - Date.parse(snapshot.lastUsedAt)) / 1000
      }
    }
    new Gauge({
      name: 'm2m_proxy_session_age_seconds',
      help: 'Seconds since the current session logged in (0 without a session)',
      registers: [this.registry],
      collect () { this.set(sessionTimes()?.ageSeconds ?? 0) }
    })
    new Gauge({
      name: 'm2m_proxy_session_idle_seconds',
      help: 'Seconds since the current session was last used (0 without a session)',
      registers: [this.registry],
      collect () { this.set(sessionTimes()?.idleSeconds ?? 0) }
    })
    new Gauge({
      name: 'm2m_proxy_login_guard_engaged',
      help: '1 while rejected logins have paused logging in',
      registers: [this.registry],
      collect () { this.set(session()?.guardEngaged === true ? 1 : 0) }
    })
  }
}
