// The proxy without its listeners: the session, the credential operations, the fleet (when configured), the upstream
// gate, metrics and the lifecycle events, built in dependency order. The listeners (proxy-listener.ts,
// admin-listener.ts) take what they need from it; app.ts puts the three together and owns the way down.

import type { Logger } from 'pino'
import type { Dispatcher } from 'undici'
import type { CallbackCredentials, ProxyConfig } from './config/load.js'
import { ConfigError } from './config/errors.js'
import type { Credentials } from './credentials/credentials.js'
import { CredentialsFile } from './credentials/credentials-file.js'
import { CredentialOperations, OperationError } from './credentials/operations.js'
import { watchCredentialsFile } from './credentials/watcher.js'
import { PasswordAge } from './credentials/password-age.js'
import { DAY_MS, RotationScheduler } from './credentials/rotation-schedule.js'
import { PasswordSync } from './fleet/password-sync.js'
import { FleetLedger } from './fleet/ledger.js'
import { shareSendingWithFleet } from './fleet/shared-sending.js'
import type { FleetStore } from './fleet/store.js'
import { ThingSpaceAuthClient, type ThingSpaceAuthApi } from './session/auth-client.js'
import type { LoginGuard } from './session/login-guard.js'
import { SessionManager } from './session/session-manager.js'
import { UpstreamGate } from './proxy/upstream-gate.js'
import { settleWithin, systemClock, type Clock } from './clock.js'
import { ProxyEvents } from './events.js'
import { logEvents } from './event-log.js'
import { ProxyMetrics } from './metrics.js'
import { createUpstreamDispatcher, describeEgress } from './upstream.js'
import { messageOf } from './errors.js'
import { hostname } from 'node:os'
import { ReplicaHeartbeat, singleProcessView, type FleetView, type ReplicaBeat } from './fleet/replicas.js'
import { VERSION } from './version.js'
import { FileInbox } from './callbacks/file-inbox.js'
import { maxRecordBytes, type CallbackInbox } from './callbacks/inbox.js'
import { loadOrCreateCallbackCredentials } from './callbacks/credentials.js'
import { FileLocationKeys, type LocationKeyStore } from './callbacks/location-keys.js'
import { RecentSessionEvents, type RecentEvent } from './admin/recent-events.js'
import type { Tracing } from './tracing.js'

export interface CoreDependencies {
  logger: Logger
  guard: LoginGuard
  clock?: Clock
  /** Replaces the HTTP client of the auth calls (tests). */
  authApi?: ThingSpaceAuthApi
  /** Replaces the Redis fleet store that config.fleet would open (tests). */
  fleetStore?: FleetStore
  /** OpenTelemetry, when the environment asks for traces (tracing.ts). */
  tracing?: Tracing
}

export interface CallbackSetup {
  inbox: CallbackInbox
  /** What ThingSpace must send in each callback: the operator's file, or the pair kept in the state directory. */
  credentials: CallbackCredentials
  /** The keys Device Location callbacks are signed with, as their registration returned them. */
  locationKeys: LocationKeyStore
}

export interface Core {
  readonly config: ProxyConfig
  readonly logger: Logger
  readonly events: ProxyEvents
  /** The connection pool to ThingSpace (or the egress proxy). */
  readonly dispatcher: Dispatcher
  readonly session: SessionManager
  readonly operations: CredentialOperations
  readonly gate: UpstreamGate
  readonly metrics: ProxyMetrics
  /** Fleet mode: the store the replicas share; undefined in single-process mode. */
  readonly fleetStore: FleetStore | undefined
  /**
   * Settles with what stops this process from doing its job at all (Redis refusing this replica's URL for good); the
   * process edge (main.ts) exits 1 with it. Never settles otherwise.
   */
  readonly fatal: Promise<ConfigError>
  /** The callback inbox (M2M_PROXY_CALLBACK_PORT) and the username and password it checks; undefined when off. */
  readonly callbacks: CallbackSetup | undefined
  /** Every replica of the fleet as their heartbeats say (GET /admin/fleet); this one alone in single-process mode. */
  fleetView: () => Promise<FleetView>
  /** The last session events, newest first, for GET /admin/events and the status page. */
  readonly recentEvents: () => RecentEvent[]
  /** OpenTelemetry, when on: the proxy listener registers its plugin first. */
  readonly tracing: Tracing | undefined
  /** Ends the background work (credentials watcher, rotation schedule, password sync, background logins). */
  stopBackground: () => void
  /**
   * ThingSpace's session logged out (M2M_PROXY_LOGOUT_ON_SHUTDOWN), within LOGOUT_ON_SHUTDOWN_TIMEOUT_MS; never in
   * fleet mode.
   */
  logOutUpstream: () => Promise<void>
  /** Resolves once no login and no credentials operation (a rotation) waits for ThingSpace. */
  authSettled: () => Promise<void>
  /** Closes the fleet store, the upstream pool and the event subscriptions: after the listeners. */
  close: () => Promise<void>
}

export const LOGOUT_ON_SHUTDOWN_TIMEOUT_MS = 3_000
/** How long the exit waits for the OTLP collector to take the last spans (within the shutdown's margin, app.ts). */
export const TRACING_SHUTDOWN_TIMEOUT_MS = 2_000

/** The last spans sent, if the collector takes them in time: a collector down or hung must not fail the exit. */
export async function shutDownTracing (tracing: Tracing, logger: Logger): Promise<void> {
  const sending = tracing.shutdown().then(() => 'sent' as const, (error: unknown) => messageOf(error))
  const outcome = await settleWithin(sending, TRACING_SHUTDOWN_TIMEOUT_MS, 'timed out')
  if (outcome === 'sent') return
  logger.warn(
    { timeoutMs: TRACING_SHUTDOWN_TIMEOUT_MS, reason: outcome },
    'the last spans were not sent: the OTLP collector did not take them in time'
  )
}

/**
 * Margin of the fleet's login lock beyond a login and its OAuth token fetch, each bounded by
 * M2M_PROXY_UPSTREAM_TIMEOUT_MS.
 */
const FLEET_LOCK_MARGIN_MS = 5_000
/**
 * The rotation lock covers a catch-up, a token fetch, the login lock's wait and hold, and the login that verifies: a
 * few login locks.
 */
const ROTATION_LOCK_TTL_FACTOR = 4

/**
 * The login lock outlives what one login can take (OAuth token fetch, then the login), so that it never expires under a
 * live holder.
 */
export function fleetLockTtlMs (upstreamTimeoutMs: number): number {
  return 2 * upstreamTimeoutMs + FLEET_LOCK_MARGIN_MS
}

interface Fleet {
  store: FleetStore
  /** What this replica verified of the fleet, on disk: Redis alone can never set it back. */
  ledger: FleetLedger
  sync: PasswordSync
}

export async function createCore (
  config: ProxyConfig,
  credentials: Credentials,
  deps: CoreDependencies
): Promise<Core> {
  const { logger } = deps
  const clock = deps.clock ?? systemClock
  const events = new ProxyEvents()
  logEvents(events, logger, {
    maxLoginFailures: config.maxLoginFailures,
    upstream: config.upstream,
    egressProxy: describeEgress(config)
  })
  const publishCredentials = events.publisher('credentials')
  const publishFleet = events.publisher('fleet')
  const dispatcher = createUpstreamDispatcher(config)
  const api = deps.authApi ?? new ThingSpaceAuthClient(config.upstream, dispatcher, config.upstreamTimeoutMs)
  const credentialsFile = new CredentialsFile(config.credentialsFile)
  const passwordAge = PasswordAge.open(config.stateDir, credentials.password, clock.now(), (message) => {
    publishCredentials({ type: 'warning', message })
  })

  // Connects in the background: until it does, no login is sent (fleet-store-unreachable) and start-up waits a little
  // (server.ts). The Redis client is loaded in fleet mode only: in single-process mode it was a third of the start-up.
  let reportFatal: (error: ConfigError) => void = () => {}
  const fatal = new Promise<ConfigError>((resolve) => { reportFatal = resolve })
  const store =
    deps.fleetStore ??
    (config.fleet === undefined
      ? undefined
      : new (await import('./fleet/redis-store.js')).RedisFleetStore({
        url: config.fleet.redisUrl,
        fleetKey: config.fleet.fleetKey,
        keyPrefix: config.fleet.keyPrefix,
        commandTimeoutMs: config.fleet.commandTimeoutMs,
        username: credentials.username,
        log: (level, message) => {
          publishFleet({ type: level === 'warn' ? 'warning' : 'info', message })
        },
        onPermanentError: (reason) => {
          reportFatal(
            new ConfigError(
              'M2M_PROXY_REDIS_URL',
              `Redis refused this replica (${reason}): no retry can fix that; correct the user, password or ` +
                'database number in the URL (or the Redis ACL)'
            )
          )
        }
      }))
  // From here to sync.start() nothing awaits: the store's first 'connected' notification cannot be missed.
  const ledger = store === undefined ? undefined : FleetLedger.open(config.stateDir, credentials.username)
  const fleet: Fleet | undefined =
    store === undefined || ledger === undefined
      ? undefined
      : {
          store,
          ledger,
          sync: new PasswordSync({
            store,
            ledger,
            password: credentials.password,
            file: credentialsFile,
            localChangedAt: () => passwordAge.changedAt,
            passwordAge: {
              observe: (password, changedAt) => {
                passwordAge.observe(password, clock.now(), changedAt, 'fleet')
              }
            },
            publish: publishCredentials,
            clock
          })
        }
  const lockTtlMs = fleetLockTtlMs(config.upstreamTimeoutMs)
  const session = new SessionManager({
    api,
    credentials,
    guard: deps.guard,
    sessionIdleSeconds: config.sessionIdleSeconds,
    clock,
    publish: events.publisher('session'),
    // No login before this replica holds the fleet's newest password generation.
    fleet:
      fleet === undefined
        ? undefined
        : {
            store: fleet.store,
            ledger: fleet.ledger,
            lockTtlMs,
            beforeLogin: async (): Promise<void> => {
              await fleet.sync.catchUp()
            }
          }
  })
  fleet?.sync.start(session)

  const gate = new UpstreamGate({ maxPauseMs: config.throttleMaxPauseMs, ratePerSecond: config.upstreamRateLimit })
  // Its store's listeners end with the store (close below).
  if (fleet !== undefined) shareSendingWithFleet(gate, fleet.store, publishFleet)

  const operations = new CredentialOperations({
    session,
    api,
    file: credentialsFile,
    clock,
    passwordAge,
    rotationDays: config.passwordRotationDays,
    fleet: fleet === undefined ? undefined : { ...fleet, rotationLockTtlMs: ROTATION_LOCK_TTL_FACTOR * lockTtlMs },
    publish: publishCredentials
  })
  const metrics = new ProxyMetrics({
    session,
    gate,
    fleet: fleet !== undefined,
    passwordAgeSeconds: () => operations.passwordStatus().ageSeconds ?? undefined,
    passwordRotationPeriodSeconds: config.passwordRotationDays * 86_400,
    passwordGeneration: () => operations.passwordStatus().generation ?? undefined,
    clock
  })
  metrics.follow(events)
  const recent = new RecentSessionEvents(clock.now)
  events.subscribe('session', (event) => { recent.record(event) })

  const rotationSchedule = new RotationScheduler({
    days: config.passwordRotationDays,
    firstCheckDelayMs: config.passwordRotationFirstCheckMs,
    clock,
    operations,
    publish: publishCredentials
  })
  // A fleet generation's change time moves the next check.
  events.subscribe('credentials', (event) => {
    if (event.type === 'generation') rotationSchedule.changeTimeUpdated()
  })
  rotationSchedule.start()
  if (config.passwordRotationDays > 0) {
    logger.child({ component: 'credentials' }).info(
      {
        rotationDays: config.passwordRotationDays,
        changedAt: new Date(passwordAge.changedAt).toISOString(),
        changedAtSource: passwordAge.source
      },
      `scheduled password rotation every ${config.passwordRotationDays} day(s)${passwordAge.source === 'first-seen' ? "; the password's age is counted from when the proxy first saw it" : ''}` +
        `; next due ${new Date(passwordAge.changedAt + config.passwordRotationDays * DAY_MS).toISOString()}${fleet === undefined ? '' : " (or as the fleet's password generation says)"}`
    )
  }

  const stopWatching =
    config.credentialsWatchIntervalMs === 0
      ? () => {}
      : watchCredentialsFile(config.credentialsFile, config.credentialsWatchIntervalMs, () => {
        if (operations.inProgress !== undefined) return // its own write, or an operator action that re-reads anyway
        operations.reload({ login: false }).catch((error: unknown) => {
          if (error instanceof OperationError && error.logged) return
          // Half-written or invalid files are common mid-edit: keep the old credentials, say why.
          publishCredentials({
            type: 'warning',
            message: `credentials file changed but was not loaded: ${messageOf(error)}`
          })
        })
      })

  // Stored before any callback is acknowledged: in the state directory, or in fleet mode in Redis for every replica.
  const callbacks: CallbackSetup | undefined =
    config.callbacks === undefined
      ? undefined
      : {
          inbox:
            store?.openCallbackInbox?.(config.callbacks.retention, maxRecordBytes(config.callbacks.bodyLimitBytes)) ??
            (await FileInbox.open(config.stateDir, config.callbacks.retention, {
              now: clock.now,
              warn: (message) => { logger.warn({ component: 'callbacks' }, message) }
            })),
          credentials: config.callbacks.credentials ?? loadOrCreateCallbackCredentials(config.stateDir),
          locationKeys: store?.openLocationKeys?.() ?? new FileLocationKeys(config.stateDir)
        }
  const describeReplica = (): Omit<ReplicaBeat, 'seenAt' | 'intervalMs'> => {
    const snapshot = session.snapshot()
    return {
      id: store?.replicaId ?? `${hostname()}/${process.pid}`,
      host: hostname(),
      pid: process.pid,
      version: VERSION,
      state: snapshot.state,
      ready: snapshot.notReadyReason === null,
      notReadyReason: snapshot.notReadyReason,
      generation: operations.passwordStatus().generation,
      loggedInAt: snapshot.loggedInAt,
      logins: snapshot.logins,
      consecutiveLoginFailures: snapshot.consecutiveLoginFailures,
      maxLoginFailures: snapshot.maxLoginFailures
    }
  }
  const heartbeat =
    store === undefined
      ? undefined
      : new ReplicaHeartbeat({
        directory: store,
        describe: describeReplica,
        intervalMs: config.fleetHeartbeatMs,
        clock
      })
  heartbeat?.start()

  const logOutUpstream = async (): Promise<void> => {
    if (fleet !== undefined) {
      // The other replicas use the same session: logging it out would cost the fleet a login.
      logger.info({ loggedOut: false }, 'upstream session not logged out: it is shared by the fleet')
      return
    }
    const ending = session.endSession().then(
      (ended) => (ended ? ('loggedOut' as const) : ('noSession' as const)),
      () => 'failed' as const
    )
    const outcome = await settleWithin(ending, LOGOUT_ON_SHUTDOWN_TIMEOUT_MS, 'timedOut' as const)
    if (outcome === 'loggedOut') logger.info({ loggedOut: true }, 'upstream session logged out')
    else if (outcome === 'noSession') logger.info({ loggedOut: false }, 'no upstream session to log out')
    else if (outcome === 'failed') {
      // Its cause: the session's warning before.
      logger.warn({ loggedOut: false }, 'upstream session not logged out: the logout failed')
    } else {
      logger.warn(
        { loggedOut: false, timeoutMs: LOGOUT_ON_SHUTDOWN_TIMEOUT_MS },
        'upstream session not logged out: ThingSpace did not answer in time'
      )
    }
  }

  return {
    config,
    logger,
    events,
    dispatcher,
    session,
    operations,
    gate,
    metrics,
    fleetStore: store,
    fatal,
    callbacks,
    recentEvents: () => recent.list(),
    tracing: deps.tracing,
    fleetView: async () =>
      heartbeat === undefined ? singleProcessView(describeReplica(), clock.now()) : await heartbeat.view(),
    stopBackground: () => {
      stopWatching()
      rotationSchedule.stop()
      fleet?.sync.stop()
      session.close() // no background login any more
    },
    logOutUpstream,
    authSettled: async () => {
      await Promise.all([session.settled(), operations.settled()])
    },
    close: async () => {
      await heartbeat?.stop() // before the store closes: a replica shut down leaves the fleet view at once
      await callbacks?.inbox.close()
      await store?.close()
      await dispatcher.destroy()
      events.close()
      if (deps.tracing !== undefined) await shutDownTracing(deps.tracing, logger)
    }
  }
}
