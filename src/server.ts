// Starts a configured proxy: lockout guard, both listeners, the start-up login. Used by main.ts and demo.ts.

import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import type { ProxyConfig } from './config/load.js'
import type { Credentials } from './credentials/credentials.js'
import { buildApp, type ProxyApp } from './app.js'
import { LoginGuard } from './session/login-guard.js'
import { describeEgress } from './upstream.js'
import type { Clock } from './session/clock.js'

export interface RunningProxy extends ProxyApp {
  proxyUrl: string
  adminUrl: string
  /** Settles when the start-up login has finished, whatever its outcome. */
  initialLogin: Promise<void>
}

function urlOf (address: AddressInfo | string | null): string {
  if (address === null || typeof address === 'string') return String(address)
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address
  return `http://${host}:${address.port}`
}

export async function startProxy (config: ProxyConfig, credentials: Credentials, logger: Logger, clock?: Clock): Promise<RunningProxy> {
  // Throws ConfigError when the state directory is unusable: before listening, before any login.
  const guard = LoginGuard.open(config.stateDir, config.maxLoginFailures, credentials)
  const app = await buildApp(config, credentials, { logger, guard, clock })
  try {
    await app.proxy.listen({ host: config.host, port: config.port })
    await app.admin.listen({ host: config.adminHost, port: config.adminPort })
  } catch (error) {
    await app.close()
    throw error
  }
  const proxyUrl = urlOf(app.proxy.server.address())
  const adminUrl = urlOf(app.admin.server.address())
  logger.info({ proxyUrl, adminUrl, upstream: config.upstream, egressProxy: describeEgress(config) ?? null }, 'listening')
  logger.flush() // lifecycle lines are not left waiting in the log buffer
  if (guard.engaged) {
    logger.error({ consecutiveLoginFailures: guard.consecutiveRejections }, 'logins are paused: the credentials were rejected before; fix the credentials file')
  }
  // Logging in at once shows bad credentials at start-up instead of at the first client request.
  const initialLogin = app.session.startSession().catch(() => { /* reported through the session events */ })
  return Object.assign(app, { proxyUrl, adminUrl, initialLogin }) // keeps the app's getters live
}
