// buildSimulator(): a ThingSpace look-alike (OAuth token, M2M sessions, fake data, fault injection) as a Fastify app.
import type { Socket } from 'node:net'
import compress from '@fastify/compress'
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import { SimulatedAccount } from './account.js'
import { type ControlLoginFault, controlRoutes, type ControlTarget } from './control-routes.js'
import { RequestRateLimit } from './throttle.js'
import { type CallbackDeliveryOptions, CallbackDeliveries, callbackRoutes } from './callbacks.js'
import { dataRoutes } from './data-routes.js'
import { devRoutes } from './dev-routes.js'
import {
  invalidCredentialsFault,
  missingCredentialsFault,
  type OAuthError,
  UWS_ERROR_CODES,
  uwsError
} from './errors.js'
import { DEMO_ACCOUNT_NAME } from './fake-data.js'
import { API_FAMILY_PREFIXES, familyRoutes } from './families.js'
import { OAuthTokenIssuer } from './oauth.js'
import { isRecord, stringField } from './request-input.js'
import { secretsEqual } from './secrets.js'
import { SessionStore } from './sessions.js'
import { createStats, type SimulatorStats } from './stats.js'

export { DEMO_CREDENTIALS } from './demo-credentials.js'
export type { SimulatorStats } from './stats.js'
export { DEMO_ACCOUNT_NAME } from './fake-data.js'
export { CONTROL_PREFIX } from './control-routes.js'

export interface SimulatorOptions {
  username: string
  password: string
  clientId: string
  clientSecret: string
  /** Sliding idle expiry of session tokens; default 1200 (20 minutes, as ThingSpace). */
  sessionIdleSeconds?: number
  /** OAuth token lifetime from first issue; default 3600. */
  oauthLifetimeSeconds?: number
  /** Consecutive failed logins that lock the account; default 5. */
  lockoutThreshold?: number
  /** Clock in ms; default Date.now (tests pass a fake clock). */
  now?: () => number
  /** Fastify logger; default false. */
  logger?: boolean
  /** Delay before answering a login, as a network round trip to the real platform would (soak tests). */
  loginDelayMs?: number
  /** Delay of the answer to a password reset, the password already changed (an answer slow to come back). */
  passwordResetAnswerDelayMs?: number
  /** Share of data requests whose connection is reset instead of answered (soak tests); default 0. */
  resetProbability?: number
  /** Serve HTTPS with this key and certificate (PEM), like the real platform; default plain HTTP. */
  https?: { key: string; cert: string }
  /**
   * Match paths as lenient servers do (servlet containers, older Spring): any case, trailing and
   * repeated slashes ignored, `;params` cut off; default false (strict, as Fastify).
   */
  lenientPaths?: boolean
  /**
   * Every session token answers SessionToken.Expired, fresh ones too, as an upstream (or a middlebox) refusing every
   * session would; default false.
   */
  refuseEverySession?: boolean
  /**
   * Compress answers (br, gzip or deflate, as the request's Accept-Encoding asks), error answers
   * included, as ThingSpace's gateway does; default true.
   */
  compression?: boolean
  /**
   * The account names that exist; any other answers its family's "unknown account" error. Default [DEMO_ACCOUNT_NAME].
   */
  accounts?: string[]
  /**
   * Requests per second (in any one-second window) above which API requests are answered 429 with Retry-After; default
   * 0 (off).
   */
  throttleRate?: number
  /** Timing of the callbacks sent for asynchronous requests (callbacks.ts); defaults as there. */
  callbackDelivery?: CallbackDeliveryOptions
}

/**
 * 'status500' is { status: 500 }; { status, errorCode? } answers that status (4xx or 5xx) with an error body, of that
 * errorCode when given.
 */
export type LoginFaultMode = 'status500' | 'hang' | 'reset' | 'reject' | { status: number; errorCode?: string }

export interface Simulator {
  app: FastifyInstance
  /** Live object, mutated as things happen. */
  stats: SimulatorStats
  readonly locked: boolean
  /** The current password (changes on reset). */
  readonly password: string
  currentOAuthToken(): string | undefined
  activeSessionTokens(): string[]
  /** Every current session token now answers SessionToken.Expired. */
  expireSessions(): void
  /** Forgets one live session token (it answers SessionToken.Invalid from now on); false when it was not live. */
  invalidateSession(token: string): boolean
  /** The current access token is now rejected (401, fault 900901); the next token request mints a new one. */
  expireOAuthToken(): void
  /**
   * The next `count` logins (after the bearer check, before any credential check) fail this way:
   * 'status500' answers 500, { status } answers that status, 'hang' never answers until the server closes, 'reset'
   * destroys the socket, 'reject' refuses the credentials as a wrong password would (and counts toward the lockout).
   * Calls queue up in order; injected failures are not counted as failed logins.
   */
  failNextLogins(count: number, mode: LoginFaultMode): void
  /** Clears the lockout and the consecutive failure count. */
  unlock(): void
  /**
   * API requests above `rate` per second are answered 429 with Retry-After `retryAfterSeconds` (default 1); 0 turns it
   * off.
   */
  throttle(rate: number, retryAfterSeconds?: number): void
  /** The callback listeners registered, and the callbacks sent to them (callbacks.ts). */
  readonly callbacks: CallbackDeliveries
}

export const TOKEN_PATH = '/api/ts/v1/oauth2/token'
export const M2M_PATH_PREFIX = '/api/m2m/'
/** Only JSON and text are compressed, as a gateway does; byte streams keep their length. */
const COMPRESSIBLE_TYPES = /^text\/|(?:\+|\/)json(?:;|$)/u
export const SESSION_TOKEN_HEADER = 'vz-m2m-token'
const OAUTH_SCOPE = 'ts.application.ro ts.transaction.wr ts.m2m.ro ts.m2m.wr'

const DEFAULT_SESSION_IDLE_SECONDS = 1200
const DEFAULT_OAUTH_LIFETIME_SECONDS = 3600
const DEFAULT_LOCKOUT_THRESHOLD = 5

/** The SIMULATOR_COMPRESSION setting of `npm run simulator` and the demo: `on` (default) or `off`. */
export function compressionFromEnv (text: string | undefined): boolean {
  const value = text?.trim().toLowerCase() ?? ''
  if (value === '' || value === 'on') return true
  if (value === 'off') return false
  throw new Error(`SIMULATOR_COMPRESSION=${JSON.stringify(text)} is not valid: set it to on or off, or unset it for on`)
}

function positiveOption (name: string, value: number | undefined, fallback: number): number {
  const chosen = value ?? fallback
  if (!Number.isFinite(chosen) || chosen <= 0) {
    throw new RangeError(`SimulatorOptions.${name} must be a positive number, got ${String(value)}`)
  }
  return chosen
}

/** The credential after "<scheme> " in an Authorization header, or undefined when absent or another scheme. */
function authorizationCredential (header: string | undefined, scheme: 'Basic' | 'Bearer'): string | undefined {
  const match = header === undefined ? null : new RegExp(`^${scheme}\\s+(\\S+)\\s*$`, 'i').exec(header)
  return match?.[1]
}

function sessionTokenOf (request: FastifyRequest): string | undefined {
  const header = request.headers[SESSION_TOKEN_HEADER]
  return typeof header === 'string' && header.trim() !== '' ? header.trim() : undefined
}

function parseFormBody (body: string): Record<string, string> {
  return Object.fromEntries(new URLSearchParams(body))
}

export function buildSimulator (options: SimulatorOptions): Simulator {
  const now = options.now ?? Date.now
  const stats = createStats()
  const oauth = new OAuthTokenIssuer(
    positiveOption('oauthLifetimeSeconds', options.oauthLifetimeSeconds, DEFAULT_OAUTH_LIFETIME_SECONDS),
    now
  )
  const sessions = new SessionStore(
    positiveOption('sessionIdleSeconds', options.sessionIdleSeconds, DEFAULT_SESSION_IDLE_SECONDS),
    now
  )
  const lockoutThreshold = positiveOption('lockoutThreshold', options.lockoutThreshold, DEFAULT_LOCKOUT_THRESHOLD)
  const account = new SimulatedAccount(options.username, options.password, lockoutThreshold, stats)
  const pendingLoginFaults: ControlLoginFault[] = []
  const accounts: ReadonlySet<string> = new Set(options.accounts ?? [DEMO_ACCOUNT_NAME])
  const resetProbability = options.resetProbability ?? 0
  const hangingSockets = new Set<Socket>()
  const rateLimit = new RequestRateLimit(now)
  if (options.throttleRate !== undefined) rateLimit.set(options.throttleRate)

  // forceCloseConnections: close() also ends keep-alive and in-flight requests (hung logins, long delays, streams).
  // The HTTPS variant has another server type; both expose the same routes, so one type serves the callers.
  const routerOptions =
    options.lenientPaths === true
      ? { caseSensitive: false, ignoreTrailingSlash: true, ignoreDuplicateSlashes: true, useSemicolonDelimiter: true }
      : {}
  const app = (options.https === undefined
    ? Fastify({ logger: options.logger ?? false, forceCloseConnections: true, routerOptions })
    : Fastify({
      logger: options.logger ?? false,
      forceCloseConnections: true,
      routerOptions,
      https: options.https
    })) as unknown as FastifyInstance

  // First, so that every route after it, and every error it answers, is compressed when the client accepts it.
  // Request bodies are left as sent (the echo route digests them raw).
  if (options.compression !== false) {
    app.register(compress, {
      global: true,
      globalDecompression: false,
      threshold: 1,
      encodings: ['br', 'gzip', 'deflate'],
      customTypes: COMPRESSIBLE_TYPES
    })
  }

  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_request, body, done) => {
    done(null, parseFormBody(typeof body === 'string' ? body : body.toString('utf8')))
  })

  const callbacks = new CallbackDeliveries(options.callbackDelivery)
  app.addHook('onClose', async () => {
    callbacks.close()
    for (const socket of hangingSockets) socket.destroy()
    hangingSockets.clear()
  })

  // The API gateway: the bearer is checked before body parsing or anything else. The matched route is
  // checked as well as the raw URL, so a percent-encoded path ("/api/%6d2m/...") cannot slip past it.
  app.addHook('onRequest', async (request, reply) => {
    stats.requestsReceived++
    const routePattern = request.routeOptions.url ?? ''
    if (!API_FAMILY_PREFIXES.some((prefix) => routePattern.startsWith(prefix) || request.url.startsWith(prefix))) return
    const bearer = authorizationCredential(request.headers.authorization, 'Bearer')
    if (bearer === undefined) return reply.code(401).send(missingCredentialsFault())
    if (!oauth.isValid(bearer)) return reply.code(401).send(invalidCredentialsFault())
  })

  const notFound = async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> =>
    reply
      .code(404)
      .send(uwsError(UWS_ERROR_CODES.notFound, `No resource for ${request.method} ${request.url.split('?')[0] ?? ''}`))
  app.setNotFoundHandler(notFound)
  // A catch-all route rather than only the not-found handler, so that unknown paths' answers (and the
  // gateway's refusals on them) go through the compression hook too. Bodies are not read there.
  app.register(async (catchAll) => {
    catchAll.removeAllContentTypeParsers()
    catchAll.addContentTypeParser('*', (_request, _payload, done) => {
      done(null, undefined)
    })
    catchAll.all('*', notFound)
  })

  app.setErrorHandler((error: FastifyError, request, reply) => {
    const statusCode = error.statusCode ?? 500
    if (statusCode >= 500) {
      request.log.error({ err: error }, 'simulator handler failed')
      return reply.code(500).send(uwsError(UWS_ERROR_CODES.internalError, 'Internal error in the simulator'))
    }
    if (request.url.startsWith(TOKEN_PATH)) {
      const body: OAuthError = { error: 'invalid_request', error_description: error.message }
      return reply.code(400).send(body)
    }
    const errorCode =
      statusCode === 413
        ? UWS_ERROR_CODES.requestTooLarge
        : statusCode === 415
          ? UWS_ERROR_CODES.unsupportedMediaType
          : UWS_ERROR_CODES.badRequest
    return reply.code(statusCode).send(uwsError(errorCode, error.message))
  })

  function clientAuthenticated (authorization: string | undefined): boolean {
    const encoded = authorizationCredential(authorization, 'Basic')
    if (encoded === undefined) return false
    const decoded = Buffer.from(encoded, 'base64').toString('utf8')
    const colon = decoded.indexOf(':')
    if (colon < 0) return false
    const idMatches = secretsEqual(decoded.slice(0, colon), options.clientId)
    const secretMatches = secretsEqual(decoded.slice(colon + 1), options.clientSecret)
    return idMatches && secretMatches
  }

  app.post<{ Body: unknown }>(
    TOKEN_PATH,
    {
      onRequest: async () => {
        stats.tokenRequests++
      }
    },
    async (request, reply) => {
      if (!clientAuthenticated(request.headers.authorization)) {
        const body: OAuthError = {
          error: 'invalid_client',
          error_description: 'Client authentication failed: send Authorization: Basic base64(clientId:clientSecret)'
        }
        return reply.code(401).header('www-authenticate', 'Basic realm="ThingSpace"').send(body)
      }
      const grantType = isRecord(request.body) ? request.body.grant_type : undefined
      if (grantType !== 'client_credentials') {
        const body: OAuthError = {
          error: 'unsupported_grant_type',
          error_description: 'Only grant_type=client_credentials is supported'
        }
        return reply.code(400).send(body)
      }
      const issued = oauth.issue()
      if (issued.minted) stats.oauthTokensIssued++
      return reply.header('cache-control', 'no-store').send({
        access_token: issued.accessToken,
        token_type: 'bearer',
        expires_in: issued.expiresInSeconds,
        scope: OAUTH_SCOPE
      })
    }
  )

  function injectLoginFault (mode: ControlLoginFault, request: FastifyRequest, reply: FastifyReply): FastifyReply {
    if (typeof mode === 'object') {
      if (mode.status === 401) return reply.code(401).send(invalidCredentialsFault())
      const errorCode =
        mode.errorCode ?? (mode.status >= 500 ? UWS_ERROR_CODES.internalError : UWS_ERROR_CODES.simulatedFault)
      return reply.code(mode.status).send(uwsError(errorCode, `Simulated ${mode.status} answer (fault injection)`))
    }
    reply.hijack()
    const socket = request.raw.socket
    if (mode === 'reset') {
      socket.destroy()
    } else {
      hangingSockets.add(socket)
      socket.once('close', () => hangingSockets.delete(socket))
    }
    return reply
  }

  app.post<{ Body: unknown }>('/api/m2m/v1/session/login', async (request, reply) => {
    const fault = pendingLoginFaults.shift()
    if (fault !== undefined && fault !== 'reject') return injectLoginFault(fault, request, reply)
    if (options.loginDelayMs !== undefined) await new Promise((resolve) => setTimeout(resolve, options.loginDelayMs))
    const username = stringField(request.body, 'username')
    // An injected rejection goes through the account like a wrong password, so it counts toward the lockout.
    const password = fault === 'reject' ? '\u0000injected-wrong-password' : stringField(request.body, 'password')
    if (username === undefined || password === undefined) {
      return reply
        .code(400)
        .send(uwsError(UWS_ERROR_CODES.badRequest, 'Body must be JSON {"username","password"} with string values'))
    }
    const outcome = account.login(username, password)
    if (outcome === 'locked') {
      return reply
        .code(400)
        .send(
          uwsError(UWS_ERROR_CODES.accountLocked, 'The account is locked after too many failed logins; contact support')
        )
    }
    if (outcome === 'wrong-credentials') {
      return reply.code(400).send(uwsError(UWS_ERROR_CODES.invalidCredentials, 'Invalid username or password'))
    }
    return { sessionToken: sessions.create() }
  })

  // Everything below needs a live session token too: checked before the body is read.
  app.register(async (withSession) => {
    withSession.addHook('onRequest', async (request, reply) => {
      // The gateway throttles first, before any token is looked at; a throttled request was not processed.
      const arrivedAt = now()
      stats.apiRequestArrivals.push(arrivedAt)
      if (!rateLimit.admit()) {
        stats.throttledRequests++
        stats.throttledArrivals.push(arrivedAt)
        reply.header('retry-after', String(rateLimit.retryAfterSeconds))
        return reply
          .code(429)
          .send(
            uwsError(
              UWS_ERROR_CODES.tooManyRequests,
              `Rate limit exceeded (${rateLimit.rate} requests per second); retry after ${rateLimit.retryAfterSeconds} s`
            )
          )
      }
      if (resetProbability > 0 && !request.url.startsWith('/api/m2m/v1/session/') && Math.random() < resetProbability) {
        reply.hijack()
        request.raw.socket.destroy()
        return reply
      }
      const check = sessions.use(sessionTokenOf(request))
      if (check === 'expired' || (check === 'valid' && options.refuseEverySession === true)) {
        return reply.code(400).send(uwsError(UWS_ERROR_CODES.sessionExpired, 'Session token expired; log in again'))
      }
      if (check === 'invalid') {
        return reply.code(400).send(uwsError(UWS_ERROR_CODES.sessionInvalid, 'Missing or unknown VZ-M2M-Token'))
      }
    })

    withSession.post('/api/m2m/v1/session/logout', async (request) => {
      const sessionToken = sessionTokenOf(request) as string // the hook above accepted it
      sessions.end(sessionToken)
      stats.logouts++
      return { sessionToken }
    })

    withSession.put<{ Body: unknown }>('/api/m2m/v1/session/password/actions/reset', async (request, reply) => {
      const oldPassword = stringField(request.body, 'oldPassword')
      if (oldPassword === undefined) {
        return reply
          .code(400)
          .send(uwsError(UWS_ERROR_CODES.badRequest, 'Body must be JSON {"oldPassword"} with a string value'))
      }
      const newPassword = account.resetPassword(oldPassword)
      if (newPassword === undefined) {
        return reply
          .code(400)
          .send(uwsError(UWS_ERROR_CODES.invalidPassword, 'oldPassword does not match the current password'))
      }
      const delayMs = options.passwordResetAnswerDelayMs
      if (delayMs !== undefined) await new Promise((resolve) => setTimeout(resolve, delayMs))
      return { newPassword }
    })

    withSession.register(async (dataScope) => {
      dataScope.addHook('preHandler', async () => {
        stats.dataRequests++
      })
      await dataScope.register(dataRoutes, { accounts })
      await dataScope.register(familyRoutes, { accounts })
      await dataScope.register(devRoutes)
      await dataScope.register(callbackRoutes, { deliveries: callbacks, accounts })
    })
  })

  const simulator: Simulator = {
    app,
    stats,
    get locked () {
      return account.locked
    },
    get password () {
      return account.password
    },
    currentOAuthToken: () => oauth.currentToken(),
    activeSessionTokens: () => sessions.activeTokens(),
    expireSessions: () => sessions.expireAll(),
    invalidateSession: (token) => sessions.invalidate(token),
    expireOAuthToken: () => oauth.revoke(),
    failNextLogins (count: number, mode: LoginFaultMode): void {
      if (!Number.isInteger(count) || count < 0) {
        throw new RangeError(`failNextLogins: count must be a whole number >= 0, got ${count}`)
      }
      if (typeof mode === 'object' && (!Number.isInteger(mode.status) || mode.status < 400 || mode.status > 599)) {
        throw new RangeError(`failNextLogins: status must be a whole number from 400 to 599, got ${mode.status}`)
      }
      const fault: ControlLoginFault = mode === 'status500' ? { status: 500 } : mode
      for (let i = 0; i < count; i++) pendingLoginFaults.push(fault)
    },
    unlock: () => account.unlock(),
    throttle: (rate, retryAfterSeconds) => rateLimit.set(rate, retryAfterSeconds),
    callbacks
  }
  // Outside /api/: no bearer, no session, never forwarded by the proxy. See control-routes.ts.
  const target: ControlTarget = {
    stats,
    get locked () {
      return account.locked
    },
    activeSessionTokens: () => sessions.activeTokens(),
    expireSessions: () => sessions.expireAll(),
    invalidateSession: (token) => sessions.invalidate(token),
    expireOAuthToken: () => oauth.revoke(),
    failNextLogins: (count, fault) => simulator.failNextLogins(count, fault),
    pendingLoginFaults: () => pendingLoginFaults.length,
    unlock: () => account.unlock(),
    throttle: (rate, retryAfterSeconds) => rateLimit.set(rate, retryAfterSeconds),
    throttleRate: () => rateLimit.rate,
    callbackStats: () => callbacks.stats
  }
  app.register(controlRoutes, { target })
  return simulator
}
