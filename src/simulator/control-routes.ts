// HTTP control routes under /simulator/control/: what tests do through Simulator's methods, for an operator
// with curl. Outside /api/, so a proxy (which forwards only /api/ paths) never lets a client reach them.
// Unauthenticated: the simulator is a local development tool with published demo credentials.
import { MAX_RETRY_AFTER_SECONDS } from './throttle.js'
import type { FastifyInstance, FastifyReply } from 'fastify'
import { isRecord, stringField } from './request-input.js'
import type { SimulatorStats } from './stats.js'
import type { CallbackDeliveryStats } from './callbacks.js'

export const CONTROL_PREFIX = '/simulator/control'
export const MAX_INJECTED_LOGIN_FAULTS = 1000

export type ControlLoginFault = 'hang' | 'reset' | 'reject' | { status: number, errorCode?: string }

export interface ControlTarget {
  stats: SimulatorStats
  readonly locked: boolean
  activeSessionTokens(): string[]
  expireSessions(): void
  /** False when the token is not a live session. */
  invalidateSession(token: string): boolean
  expireOAuthToken(): void
  failNextLogins(count: number, fault: ControlLoginFault): void
  pendingLoginFaults(): number
  unlock(): void
  throttle(rate: number, retryAfterSeconds?: number): void
  throttleRate(): number
  callbackStats(): CallbackDeliveryStats
}

interface ControlError {
  error: string
  message: string
}

function badRequest (reply: FastifyReply, message: string): FastifyReply {
  const body: ControlError = { error: 'bad_request', message }
  return reply.code(400).send(body)
}

function parseLoginFault (body: unknown): { fault: ControlLoginFault } | { problem: string } {
  const mode = stringField(body, 'mode') ?? 'status'
  if (mode === 'hang' || mode === 'reset' || mode === 'reject') return { fault: mode }
  if (mode !== 'status') return { problem: 'mode must be "status", "hang", "reset" or "reject"' }
  const status = isRecord(body) ? body.status ?? 500 : 500
  if (typeof status !== 'number' || !Number.isInteger(status) || status < 400 || status > 599) {
    return { problem: 'status must be a whole number from 400 to 599' }
  }
  const errorCode = stringField(body, 'errorCode')
  if (errorCode !== undefined && !/^[A-Za-z0-9._-]{1,100}$/.test(errorCode)) {
    return { problem: 'errorCode must be 1 to 100 letters, digits, dots, dashes or underscores' }
  }
  return { fault: errorCode === undefined ? { status } : { status, errorCode } }
}

export async function controlRoutes (scope: FastifyInstance, { target }: { target: ControlTarget }): Promise<void> {
  const counters = (): Record<string, unknown> => ({
    ...target.stats,
    apiRequestArrivals: undefined, // logs of times, not counters
    throttledArrivals: undefined,
    throttleRate: target.throttleRate(),
    locked: target.locked,
    activeSessions: target.activeSessionTokens().length,
    pendingLoginFaults: target.pendingLoginFaults(),
    ...target.callbackStats()
  })

  scope.get(`${CONTROL_PREFIX}/stats`, async () => counters())

  scope.post(`${CONTROL_PREFIX}/sessions/expire`, async () => {
    const expired = target.activeSessionTokens().length
    target.expireSessions()
    return { expired }
  })

  scope.post<{ Body: unknown }>(`${CONTROL_PREFIX}/sessions/invalidate`, async (request, reply) => {
    const sessionToken = stringField(request.body, 'sessionToken')
    if (sessionToken === undefined) return badRequest(reply, 'Body must be JSON {"sessionToken"}')
    if (!target.invalidateSession(sessionToken)) {
      const body: ControlError = { error: 'not_found', message: 'No live session has this token' }
      return reply.code(404).send(body)
    }
    return { invalidated: true }
  })

  scope.post(`${CONTROL_PREFIX}/oauth/expire`, async () => {
    target.expireOAuthToken()
    return { expired: true }
  })

  scope.post<{ Body: unknown }>(`${CONTROL_PREFIX}/logins/fail`, async (request, reply) => {
    const body = request.body ?? {}
    const count = isRecord(body) ? body.count ?? 1 : Number.NaN
    if (typeof count !== 'number' || !Number.isInteger(count) || count < 0 || count > MAX_INJECTED_LOGIN_FAULTS) {
      return badRequest(reply, `count must be a whole number from 0 to ${MAX_INJECTED_LOGIN_FAULTS}`)
    }
    const parsed = parseLoginFault(body)
    if ('problem' in parsed) return badRequest(reply, parsed.problem)
    target.failNextLogins(count, parsed.fault)
    return { queued: count, pendingLoginFaults: target.pendingLoginFaults() }
  })

  scope.post<{ Body: unknown }>(`${CONTROL_PREFIX}/throttle`, async (request, reply) => {
    const body = request.body ?? {}
    const rate = isRecord(body) ? body.rate : undefined
    const retryAfterSeconds = isRecord(body) ? body.retryAfterSeconds ?? 1 : undefined
    if (typeof rate !== 'number' || !Number.isInteger(rate) || rate < 0) return badRequest(reply, 'rate must be a whole number of requests per second (0: off)')
    if (typeof retryAfterSeconds !== 'number' || !Number.isInteger(retryAfterSeconds) || retryAfterSeconds < 0 || retryAfterSeconds > MAX_RETRY_AFTER_SECONDS) {
      return badRequest(reply, `retryAfterSeconds must be a whole number from 0 to ${MAX_RETRY_AFTER_SECONDS}`)
    }
    target.throttle(rate, retryAfterSeconds)
    return { rate: target.throttleRate(), retryAfterSeconds }
  })

  scope.post(`${CONTROL_PREFIX}/unlock`, async () => {
    target.unlock()
    return { locked: target.locked }
  })
}
