// The composition root: the core (core.ts) and its two listeners, and the one way down for both.

import type { FastifyInstance } from 'fastify'
import type { ProxyConfig } from './config/load.js'
import type { Credentials } from './credentials/credentials.js'
import type { SessionManager } from './session/session-manager.js'
import type { CredentialOperations } from './credentials/operations.js'
import type { FleetStore } from './fleet/store.js'
import type { ProxyMetrics } from './metrics.js'
import { buildCallbackListener } from './callback-listener.js'
import { createCore, LOGOUT_ON_SHUTDOWN_TIMEOUT_MS, type Core, type CoreDependencies } from './core.js'
import { settleWithin } from './clock.js'
import { answerWaitingRequests, buildProxyListener } from './proxy-listener.js'
import { buildAdminListener } from './admin-listener.js'
import { RequestGuard } from './listener/request-guard.js'
import type { ThingSpaceAnswer, ThingSpaceCall } from './callbacks/registration.js'

export { LOGOUT_ON_SHUTDOWN_TIMEOUT_MS, fleetLockTtlMs } from './core.js'
export type AppDependencies = CoreDependencies

/** Closing the admin listener, the fleet store and the upstream pool after the drain and the logout. */
const SHUTDOWN_MARGIN_MS = 5_000

/** The longest a graceful shutdown (ProxyApp.shutdown) may take: the drain, the logout, then closing the rest. */
export function shutdownBudgetMs (config: Pick<ProxyConfig, 'shutdownGraceMs'>): number {
  return config.shutdownGraceMs + LOGOUT_ON_SHUTDOWN_TIMEOUT_MS + SHUTDOWN_MARGIN_MS
}

export interface ProxyApp {
  proxy: FastifyInstance
  admin: FastifyInstance
  /** The callback listener (M2M_PROXY_CALLBACK_PORT); undefined when the inbox is off. */
  callbacks: FastifyInstance | undefined
  session: SessionManager
  operations: CredentialOperations
  metrics: ProxyMetrics
  /** Fleet mode: the store the replicas share; undefined in single-process mode. */
  fleetStore: FleetStore | undefined
  /** What stops the process from doing its job at all (core.ts); main.ts exits 1 with it. */
  fatal: Core['fatal']
  readonly shuttingDown: boolean
  /** Graceful stop: readiness 503, no new connections, in-flight requests finish (bounded), session logged out. */
  shutdown: () => Promise<void>
  /** Immediate stop (tests, a failed start): the same steps, no grace, no logout. */
  close: () => Promise<void>
  /**
   * A stop forced on the process (main.ts: a fatal error): in-flight requests finish within the grace as on SIGTERM,
   * no logout. Cut off, a request ThingSpace is carrying out (an activation) would leave its client with a reset
   * connection, which it may send again.
   */
  drain: () => Promise<void>
}

/**
 * ThingSpace's API as a client of the proxy sees it: injected into the proxy listener, so that the admin's calls get
 * the tokens, renewal and replay, throttling and admission of every forwarded request.
 */
function thingSpaceThrough (proxy: FastifyInstance): ThingSpaceCall {
  return async (method, path, body) => {
    const answer = await proxy.inject({
      method,
      url: path,
      headers: { host: 'localhost', ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { payload: JSON.stringify(body) })
    })
    let parsed: unknown
    try {
      parsed = answer.body === '' ? undefined : JSON.parse(answer.body)
    } catch {
      parsed = undefined
    }
    return { statusCode: answer.statusCode, body: parsed, headers: answer.headers as ThingSpaceAnswer['headers'] }
  }
}

export async function buildApp (
  config: ProxyConfig,
  credentials: Credentials,
  deps: AppDependencies
): Promise<ProxyApp> {
  const core = await createCore(config, credentials, deps)
  let shuttingDown = false
  // Both listeners: a Host from the allow-list, no cross-site browser requests, origin-form targets only.
  const guard = new RequestGuard([config.host, config.adminHost, ...config.allowedHosts])
  let proxy: FastifyInstance
  try {
    proxy = await buildProxyListener(core, guard)
  } catch (error) {
    await core.close()
    throw error
  }
  const admin = buildAdminListener(core, guard, () => shuttingDown, thingSpaceThrough(proxy))
  const callbacks =
    core.callbacks === undefined || config.callbacks === undefined
      ? undefined
      : buildCallbackListener(config, config.callbacks, core.callbacks, core.logger, core.metrics.callbacksReceived)
  // The background work ends as the proxy listener begins to close; the core's resources once the admin
  // listener, the last to close, has: every close of the listeners takes the same way down.
  proxy.addHook('preClose', (done) => {
    shuttingDown = true // readiness answers 503 from now on
    core.stopBackground()
    done()
  })
  admin.addHook('onClose', async () => {
    await core.close()
  })

  /**
   * For close() and shutdown() alike: the proxy listener drained for `graceMs` (0: its connections closed at once),
   * the session logged out when asked, then the admin listener closed, and with it the core.
   */
  const stop = async (graceMs: number, logOut: boolean): Promise<void> => {
    const graceEndsAt = performance.now() + graceMs
    // Stop accepting; Fastify waits for requests in flight and closes the keep-alive connections idle now
    // (and those answered from now on: proxy-listener.ts).
    // New callbacks are refused (ThingSpace sends them again); those being stored finish first.
    const callbacksClosed = callbacks?.close()
    const drained = proxy.close().then(() => true)
    const inTime = graceMs > 0 && (await settleWithin(drained, graceMs, false))
    if (!inTime) {
      // Those never sent get an answer they can act on; those ThingSpace is working on can only be cut off.
      const answered = answerWaitingRequests(proxy)
      if (graceMs > 0) {
        core.logger.warn(
          { graceMs, answeredNotSent: answered },
          'requests still in flight after the grace period: those not sent yet answered 503, the others cut off'
        )
      }
      await new Promise((resolve) => setImmediate(resolve)) // those answers written before their sockets close
      // A closing Node server no longer checks M2M_PROXY_REQUEST_TIMEOUT_MS: a stalled upload would hold the close for
      // ever.
      proxy.server.closeAllConnections()
      await drained
    }
    await callbacksClosed
    // A login or a password rotation waiting for ThingSpace finishes within what is left of the grace: cut off, a
    // rotation would lose the password ThingSpace has just set, and a login would stay counted as a failure.
    const authSettled = core.authSettled().then(() => true)
    if (graceMs > 0 && !(await settleWithin(authSettled, graceEndsAt - performance.now(), false))) {
      core.logger.warn(
        { graceMs },
        'a login or a password rotation was still waiting for ThingSpace after the grace period: cut off'
      )
    }
    if (logOut) await core.logOutUpstream()
    // Probes and scrapes are answered until here; whatever is still open on the admin listener is closed with it.
    const adminClosed = admin.close()
    admin.server.closeAllConnections()
    await adminClosed
  }

  return {
    proxy,
    admin,
    callbacks,
    session: core.session,
    operations: core.operations,
    metrics: core.metrics,
    fleetStore: core.fleetStore,
    fatal: core.fatal,
    get shuttingDown () {
      return shuttingDown
    },
    shutdown: async () => {
      await stop(config.shutdownGraceMs, config.logoutOnShutdown)
    },
    close: async () => {
      await stop(0, false)
    },
    drain: async () => {
      await stop(config.shutdownGraceMs, false)
    }
  }
}
