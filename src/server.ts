// Starts a configured proxy: lockout guard, both listeners, the start-up login. Used by main.ts and demo.ts.

import type { Tracing } from './tracing.js'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import type { ProxyConfig } from './config/load.js'
import { CredentialsFile, credentialsExposure, secretFileExposure } from './credentials/credentials-file.js'
import { credentialsWhitespace, type Credentials } from './credentials/credentials.js'
import { buildApp, type ProxyApp } from './app.js'
import { LoginGuard } from './session/login-guard.js'
import { describeEgress } from './upstream.js'
import type { Clock } from './clock.js'
import { StateDirLock } from './fs/state-dir-lock.js'
import type { ConfigError } from './config/errors.js'

export interface RunningProxy {
  readonly app: ProxyApp
  readonly proxyUrl: string
  readonly adminUrl: string
  /** The callback listener's address; undefined when the inbox is off. */
  readonly callbackUrl: string | undefined
  /** Settles when the start-up login has finished, whatever its outcome. */
  readonly initialLogin: Promise<void>
  /**
   * Settles if the process must stop: a setting found wrong only once used (app.fatal), or the state directory's lock
   * taken over by another process (two proxies would keep two lockout counts for one account).
   */
  readonly fatal: Promise<ConfigError>
}

function urlOf (address: AddressInfo | string | null): string {
  if (address === null || typeof address === 'string') return String(address)
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address
  return `http://${host}:${address.port}`
}

/** A listener that could not bind; the message names the setting, the value and the listener, without a stack. */
export class ListenError extends Error {
  override readonly name = 'ListenError'
  constructor (
    readonly code: string,
    message: string
  ) {
    super(message)
  }
}

export interface ListenTarget {
  host: string
  port: number
  /** "proxy", "admin", "simulator": which listener, in the message. */
  listener: string
  portSetting: string
  hostSetting?: string
}

/** app.listen, turning the usual bind failures into a ListenError that says which setting to change. */
export async function listenOn (app: FastifyInstance, target: ListenTarget): Promise<void> {
  try {
    await app.listen({ host: target.host, port: target.port })
  } catch (error) {
    const code = (error as { code?: unknown }).code
    const { host, port, listener, portSetting } = target
    const hostSetting = target.hostSetting ?? 'the host'
    const where = `(the ${listener} listener, on ${host})`
    if (code === 'EADDRINUSE') {
      throw new ListenError(
        code,
        `${portSetting} ${port} is in use ${where}: stop the other process or set ${portSetting} to a free port`
      )
    }
    if (code === 'EACCES') {
      throw new ListenError(
        code,
        `${portSetting} ${port} cannot be bound by this user ${where}, EACCES: use a port above 1023`
      )
    }
    if (code === 'EADDRNOTAVAIL') {
      throw new ListenError(
        code,
        `${hostSetting} ${host} is not an address of this machine (the ${listener} listener, EADDRNOTAVAIL)`
      )
    }
    if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
      throw new ListenError(code, `${hostSetting} ${host} cannot be resolved (the ${listener} listener, ${code})`)
    }
    throw error
  }
}

/**
 * Fleet mode: how long the start-up login waits for the store to connect; after that it fails (fleet-store-unreachable)
 * and is retried in the background.
 */
const FLEET_CONNECT_WAIT_MS = 5_000

/**
 * Resolves once the fleet store is connected (its `connected` notification), after `timeoutMs` at most, at once without
 * one: no polling. The timer is unref'd, so a shutdown meanwhile is not held by it.
 */
async function storeConnected (app: ProxyApp, timeoutMs: number): Promise<void> {
  const store = app.fleetStore
  if (store === undefined || store.connected) return
  await new Promise<void>((resolve) => {
    const done = (): void => {
      clearTimeout(timer)
      unsubscribe()
      resolve()
    }
    const timer = setTimeout(done, timeoutMs).unref()
    const unsubscribe = store.subscribe((change) => {
      if (change.kind === 'connected') done()
    })
  })
}

export async function startProxy (
  config: ProxyConfig,
  credentials: Credentials,
  logger: Logger,
  clock?: Clock,
  tracing?: Tracing
): Promise<RunningProxy> {
  // Throws ConfigError when the state directory is unusable or another live proxy holds it: before listening, before
  // any login.
  const stateLock = StateDirLock.acquire(config.stateDir)
  let app: ProxyApp
  let guard: LoginGuard
  try {
    guard = LoginGuard.open(config.stateDir, config.maxLoginFailures, credentials)
    app = await buildApp(config, credentials, { logger, guard, clock, tracing })
  } catch (error) {
    stateLock.release()
    throw error
  }
  // Last of the way down: after the core has closed.
  app.admin.addHook('onClose', (_instance, done) => {
    stateLock.release()
    done()
  })
  try {
    await listenOn(app.proxy, {
      host: config.host,
      port: config.port,
      listener: 'proxy',
      portSetting: 'M2M_PROXY_PORT',
      hostSetting: 'M2M_PROXY_HOST'
    })
    await listenOn(app.admin, {
      host: config.adminHost,
      port: config.adminPort,
      listener: 'admin',
      portSetting: 'M2M_PROXY_ADMIN_PORT',
      hostSetting: 'M2M_PROXY_ADMIN_HOST'
    })
    if (app.callbacks !== undefined && config.callbacks !== undefined) {
      await listenOn(app.callbacks, {
        host: config.callbacks.host,
        port: config.callbacks.port,
        listener: 'callback',
        portSetting: 'M2M_PROXY_CALLBACK_PORT',
        hostSetting: 'M2M_PROXY_CALLBACK_HOST'
      })
    }
  } catch (error) {
    await app.close()
    throw error
  }
  const proxyUrl = urlOf(app.proxy.server.address())
  const adminUrl = urlOf(app.admin.server.address())
  const callbackUrl = app.callbacks === undefined ? undefined : urlOf(app.callbacks.server.address())
  logger.info(
    {
      proxyUrl,
      adminUrl,
      ...(callbackUrl === undefined ? {} : { callbackUrl }),
      upstream: config.upstream,
      egressProxy: describeEgress(config) ?? null
    },
    'listening'
  )
  if (config.adminToken === undefined) {
    logger.warn(
      { setting: 'M2M_PROXY_ADMIN_TOKEN' },
      'the admin API is off (no admin token): /admin/ routes answer 403; probes and /metrics stay open. ' +
        'Set M2M_PROXY_ADMIN_TOKEN or M2M_PROXY_ADMIN_TOKEN_FILE to end sessions or rotate the password'
    )
  }
  const exposure = credentialsExposure(config.credentialsFile)
  if (exposure !== undefined) logger.warn(exposure)
  const padded = credentialsWhitespace(credentials, config.credentialsFile)
  if (padded !== undefined) logger.warn(padded)
  const interrupted = new CredentialsFile(config.credentialsFile).interruptedRewrites()
  if (interrupted !== undefined) logger.warn(interrupted)
  for (const secret of config.secretFiles) {
    const warning = secretFileExposure(secret.path, secret.holds)
    if (warning !== undefined) logger.warn({ setting: secret.setting }, warning)
  }
  logger.flush() // lifecycle lines are not left waiting in the log buffer
  if (guard.atAccountCeiling) {
    logger.error({ accountConsecutiveLoginFailures: guard.accountConsecutiveRejections }, guard.accountCeilingMessage)
  } else if (guard.engaged) {
    logger.error(
      { consecutiveLoginFailures: guard.consecutiveRejections },
      'logins are paused: the credentials were rejected before; fix the credentials file'
    )
  }
  // Logging in at once shows bad credentials at start-up instead of at the first client request.
  const initialLogin = storeConnected(app, FLEET_CONNECT_WAIT_MS)
    .then(async () => await app.session.startSession())
    .catch(() => {
      /* reported through the session events */
    })
  const fatal = Promise.race([app.fatal, stateLock.lost])
  return { app, proxyUrl, adminUrl, callbackUrl, initialLogin, fatal }
}
