// Prometheus metrics (prom-client): bounded labels only, never a path with identifiers, a token or a user name.

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { BucketHistogram } from './bucket-histogram.js'
import type { SessionManager } from './session/session-manager.js'
import type { ProxyEvents } from './events.js'
import { droppedLogLines } from './logging.js'
import { systemClock, type Clock } from './clock.js'

const METHOD_LABELS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'OTHER'] as const
const STATUS_CLASS_LABELS = ['1xx', '2xx', '3xx', '4xx', '5xx', 'other'] as const
const METHOD_INDEX = new Map<string, number>(METHOD_LABELS.map((method, index) => [method, index]))

/** Methods outside the usual set are folded into one label value, so clients cannot grow the series. */
function methodIndex (method: string): number {
  return METHOD_INDEX.get(method) ?? METHOD_LABELS.length - 1
}

function statusClassIndex (statusCode: number): number {
  return statusCode >= 100 && statusCode < 600 ? Math.floor(statusCode / 100) - 1 : STATUS_CLASS_LABELS.length - 1
}

export interface MetricSources {
  session: Pick<SessionManager, 'snapshot' | 'fleetStoreConnected' | 'guardEngaged' | 'loginAttemptsLeft'>
  /**
   * The upstream gate: paused by a throttled answer; the rate (requests per second) learned since ThingSpace throttled.
   */
  gate?: { readonly paused: boolean; readonly learnedRate: number }
  fleet?: boolean
  /** The age of the password in force (state directory, or the fleet's generation); undefined before it is known. */
  passwordAgeSeconds?: () => number | undefined
  /** M2M_PROXY_PASSWORD_ROTATION_DAYS in seconds; 0: scheduled rotation off. */
  passwordRotationPeriodSeconds?: number
  /** Fleet mode: the password generation this replica holds; undefined before it knows one. */
  passwordGeneration?: () => number | undefined
  /** The session's clock: the session's times are on it (default the system's). */
  clock?: Pick<Clock, 'now'>
}

export interface CallbackInboxStats {
  count: number
  bytes: number
  oldestAgeSeconds: number
}

export interface AdmissionCounts {
  readonly inFlight: number
  readonly queued: number
  readonly bodyBytesHeld: number
  readonly waited: number
}

export class ProxyMetrics {
  readonly registry = new Registry()
  /**
   * Requests are counted in plain numbers and handed to prom-client when scraped: one inc per label
   * pair and scrape instead of a label lookup and hash per request (see docs/performance.md).
   */
  readonly #unreportedRequests = new Float64Array(METHOD_LABELS.length * STATUS_CLASS_LABELS.length)
  readonly requests = new Counter({
    name: 'm2m_proxy_requests_total',
    help: 'Requests answered on the proxy listener',
    labelNames: ['method', 'status_class'] as const,
    registers: [this.registry],
    collect: () => {
      this.#reportRequests()
    }
  })

  /** Upstream exchanges by status class, 'error' last for those that got no answer. */
  readonly upstreamDuration = new BucketHistogram(
    'm2m_proxy_upstream_duration_seconds',
    'Time from sending a request upstream to its response headers (or failure)',
    'status_class',
    [...STATUS_CLASS_LABELS, 'error'],
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
  )

  readonly logins = new Counter({
    name: 'm2m_proxy_logins_total',
    help: 'Session logins by outcome',
    labelNames: ['outcome'] as const,
    registers: [this.registry]
  })

  readonly renewals = new Counter({
    name: 'm2m_proxy_session_renewals_total',
    help: 'Sessions replaced, by reason',
    labelNames: ['reason'] as const,
    registers: [this.registry]
  })

  readonly replays = new Counter({
    name: 'm2m_proxy_replays_total',
    help: 'Requests replayed after a token rejection',
    labelNames: ['reason'] as const,
    registers: [this.registry]
  })

  readonly oauthFetches = new Counter({
    name: 'm2m_proxy_oauth_fetches_total',
    help: 'OAuth token requests by outcome',
    labelNames: ['outcome'] as const,
    registers: [this.registry]
  })

  readonly fleetLoginsAvoided = new Counter({
    name: 'm2m_proxy_fleet_logins_avoided_total',
    help: 'Fleet mode: logins not sent because another replica had already logged in',
    registers: [this.registry]
  })

  readonly upstreamThrottled = new Counter({
    name: 'm2m_proxy_upstream_throttled_total',
    help: 'Answers of ThingSpace that throttled a request (429, or 503 with Retry-After): sent again after the pause, or passed on past the wait allowed',
    labelNames: ['outcome'] as const,
    registers: [this.registry]
  })

  /** Only requests that waited are observed: those admitted or sent at once are not (the hot path). */
  readonly waits = new Histogram({
    name: 'm2m_proxy_wait_seconds',
    help: 'How long requests that had to wait waited: for a slot on the proxy listener (queue), or for a throttling pause or rate slot before being sent to ThingSpace (throttle)',
    labelNames: ['stage'] as const,
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60],
    registers: [this.registry]
  })

  readonly overloaded = new Counter({
    name: 'm2m_proxy_overloaded_total',
    help: 'Requests answered 503 Proxy.Overloaded, by reason',
    labelNames: ['reason'] as const,
    registers: [this.registry]
  })

  /** Every POST to the callback listener, by outcome: stored, or why it was refused. */
  readonly callbacksReceived = new Counter({
    name: 'm2m_proxy_callbacks_received_total',
    help: 'Callbacks received on the callback listener, by outcome (stored, unauthorized, forbidden-source, bad-request, not-found, too-large, failed)',
    labelNames: ['outcome'] as const,
    registers: [this.registry]
  })

  readonly fleetLockWaits = new Counter({
    name: 'm2m_proxy_fleet_lock_waits_total',
    help: 'Fleet mode: logins that waited for another replica holding the login lock',
    registers: [this.registry]
  })

  /** Counts one answered request (hot path). */
  readonly countRequest: (method: string, statusCode: number) => void
  /** Records one upstream exchange (hot path); statusCode undefined when it failed. */
  readonly observeUpstream: (statusCode: number | undefined, seconds: number) => void

  readonly #registerGauge: (name: string, help: string, value: () => number) => void
  readonly #registerCounter: (name: string, help: string, total: () => number) => void

  /** Reads `sources` when scraped; counts the events of the session's channel once `follow` is called. */
  constructor (sources: MetricSources) {
    const clock = sources.clock ?? systemClock
    const unreported = this.#unreportedRequests
    this.countRequest = (method, statusCode) => {
      const index = methodIndex(method) * STATUS_CLASS_LABELS.length + statusClassIndex(statusCode)
      unreported[index] = (unreported[index] as number) + 1
    }
    this.registry.registerMetric(this.upstreamDuration.asMetric())
    const upstreamDuration = this.upstreamDuration
    const failedIndex = STATUS_CLASS_LABELS.length
    this.observeUpstream = (statusCode, seconds) => {
      upstreamDuration.observe(statusCode === undefined ? failedIndex : statusClassIndex(statusCode), seconds)
    }
    collectDefaultMetrics({ register: this.registry })
    const registry = this.registry
    /** A gauge whose value is read when scraped (nothing to update on the hot path). */
    const scrapedGauge = (name: string, help: string, value: () => number): void => {
      // eslint-disable-next-line no-new -- prom-client registers a metric with its registry as it is made
      new Gauge({
        name,
        help,
        registers: [registry],
        collect () {
          this.set(value())
        }
      })
    }
    /** A counter fed, when scraped, from a running total kept elsewhere. */
    const scrapedCounter = (name: string, help: string, total: () => number): void => {
      let reported = 0
      // eslint-disable-next-line no-new -- prom-client registers a metric with its registry as it is made
      new Counter({
        name,
        help,
        registers: [registry],
        collect () {
          const now = total()
          if (now > reported) this.inc(now - reported)
          reported = now
        }
      })
    }
    this.#registerGauge = scrapedGauge
    this.#registerCounter = scrapedCounter
    const { session, gate } = sources
    if (gate !== undefined) {
      scrapedGauge(
        'm2m_proxy_upstream_paused',
        '1 while sending is paused because ThingSpace throttled a request (its Retry-After), else 0',
        () => (gate.paused ? 1 : 0)
      )
      scrapedGauge(
        'm2m_proxy_upstream_learned_rate',
        'Requests per second this replica sends at most since ThingSpace throttled it (90% of what it accepted, rising while it accepts), 0 when none is in force',
        () => gate.learnedRate
      )
    }
    // Gauges read the session state when scraped instead of being updated on every request.
    const sessionTimes = (): { ageSeconds: number; idleSeconds: number } | undefined => {
      const snapshot = session.snapshot()
      if (snapshot.loggedInAt === null || snapshot.state !== 'active') return undefined
      const now = clock.now()
      return {
        ageSeconds: (now - Date.parse(snapshot.loggedInAt)) / 1000,
        idleSeconds: snapshot.lastUsedAt === null ? 0 : (now - Date.parse(snapshot.lastUsedAt)) / 1000
      }
    }
    scrapedGauge(
      'm2m_proxy_session_age_seconds',
      'Seconds since the current session logged in (0 without a session)',
      () => sessionTimes()?.ageSeconds ?? 0
    )
    scrapedGauge(
      'm2m_proxy_session_idle_seconds',
      'Seconds since the current session was last used (0 without a session)',
      () => sessionTimes()?.idleSeconds ?? 0
    )
    scrapedCounter(
      'm2m_proxy_log_lines_dropped_total',
      'Log lines dropped because stdout could not be written any more (its reader gone) or was too slow (M2M_PROXY_LOG_MAX_BUFFERED_BYTES)',
      droppedLogLines
    )
    if (sources.fleet === true) {
      scrapedGauge(
        'm2m_proxy_fleet_store_up',
        'Fleet mode: 1 while the fleet store (Redis) answers and its notifications arrive',
        () => (session.fleetStoreConnected === true ? 1 : 0)
      )
    }
    const passwordAgeSeconds = sources.passwordAgeSeconds
    if (passwordAgeSeconds !== undefined) {
      scrapedGauge(
        'm2m_proxy_password_age_seconds',
        'Seconds since the ThingSpace password in force was changed (or first seen by the proxy); for alerts before it expires',
        () => passwordAgeSeconds() ?? 0
      )
    }
    scrapedGauge('m2m_proxy_login_guard_engaged', '1 while rejected logins have paused logging in', () =>
      session.guardEngaged ? 1 : 0
    )
    // An unready replica gets no client (its probe fails), so alerts that watch requests or logins may stay quiet.
    scrapedGauge(
      'm2m_proxy_ready',
      '1 while the proxy can serve (a session held, or the last login succeeded), else 0: /readyz names the reason',
      () => (session.snapshot().notReadyReason === null ? 1 : 0)
    )
    scrapedGauge(
      'm2m_proxy_login_attempts_left',
      'Rejected logins in a row still allowed before the lockout guard stops logging in (M2M_PROXY_MAX_LOGIN_FAILURES minus those so far, or fewer near the account\'s ceiling of 4); 0: engaged',
      () => session.loginAttemptsLeft
    )
    scrapedGauge(
      'm2m_proxy_oauth_token_expires_in_seconds',
      'Seconds until the OAuth token in use is no longer used (a new one is fetched before), 0 without one',
      () => {
        const expiresAt = session.snapshot().oauthExpiresAt
        return expiresAt === null ? 0 : Math.max(0, (Date.parse(expiresAt) - clock.now()) / 1000)
      }
    )
    scrapedGauge(
      'm2m_proxy_password_rotation_period_seconds',
      'M2M_PROXY_PASSWORD_ROTATION_DAYS in seconds, 0 when scheduled rotation is off: compare with m2m_proxy_password_age_seconds',
      () => sources.passwordRotationPeriodSeconds ?? 0
    )
    const passwordGeneration = sources.passwordGeneration
    if (sources.fleet === true && passwordGeneration !== undefined) {
      scrapedGauge(
        'm2m_proxy_password_generation',
        "Fleet mode: the fleet's password generation this replica holds (0 before it knows one); replicas should agree",
        () => passwordGeneration() ?? 0
      )
    }
  }

  /** The proxy listener's admission (src/listener/admission.ts): requests in flight and queued, body bytes held. */
  trackAdmission (admission: AdmissionCounts): void {
    this.#registerGauge(
      'm2m_proxy_requests_in_flight',
      'Requests on the proxy listener being handled now (M2M_PROXY_MAX_IN_FLIGHT at most)',
      () => admission.inFlight
    )
    this.#registerGauge(
      'm2m_proxy_requests_queued',
      "Requests waiting for a slot or, pipelined, for their connection's earlier ones (M2M_PROXY_MAX_QUEUED at most)",
      () => admission.queued
    )
    this.#registerGauge(
      'm2m_proxy_request_body_bytes',
      'Bytes of request bodies held (arriving or kept for a replay), as reserved at admission (M2M_PROXY_BODY_MEMORY_BYTES at most)',
      () => admission.bodyBytesHeld
    )
    this.#registerCounter(
      'm2m_proxy_requests_waited_total',
      'Requests that waited in the queue for a slot',
      () => admission.waited
    )
  }

  /** The callback inbox: what it keeps, how old the oldest is, the long polls waiting (callbacks/). */
  trackCallbacks (inbox: { stats: () => CallbackInboxStats }, waiting: () => number): void {
    this.#registerGauge('m2m_proxy_callbacks_kept', 'Callbacks kept in the inbox (M2M_PROXY_CALLBACK_RETENTION_*)', () =>
      inbox.stats().count)
    this.#registerGauge('m2m_proxy_callbacks_kept_bytes', 'Bytes of the callbacks kept in the inbox', () =>
      inbox.stats().bytes)
    this.#registerGauge(
      'm2m_proxy_callbacks_oldest_age_seconds',
      'Age of the oldest callback kept (0 when none): how far back a reader can still go',
      () => inbox.stats().oldestAgeSeconds
    )
    this.#registerGauge(
      'm2m_proxy_callbacks_waiting',
      'Callback reads waiting (long polls), M2M_PROXY_CALLBACK_MAX_WAITING at most',
      waiting
    )
  }

  /**
   * Counts the session's lifecycle events (logins, OAuth fetches, renewals, the fleet's avoided logins and lock waits).
   */
  follow (events: ProxyEvents): void {
    events.subscribe('session', (event) => {
      switch (event.type) {
        case 'login':
          this.logins.inc({ outcome: event.outcome })
          return
        case 'oauth-fetch':
          this.oauthFetches.inc({ outcome: event.outcome })
          return
        case 'renewal':
          this.renewals.inc({ reason: event.reason })
          return
        case 'fleet-login-avoided':
          this.fleetLoginsAvoided.inc()
          return
        case 'fleet-lock-wait':
          this.fleetLockWaits.inc()
      }
    })
  }

  #reportRequests (): void {
    const counts = this.#unreportedRequests
    for (let index = 0; index < counts.length; index++) {
      const count = counts[index] as number
      if (count === 0) continue
      counts[index] = 0
      const method = METHOD_LABELS[Math.floor(index / STATUS_CLASS_LABELS.length)] as string
      const statusClass = STATUS_CLASS_LABELS[index % STATUS_CLASS_LABELS.length] as string
      this.requests.inc({ method, status_class: statusClass }, count)
    }
  }
}
