// Callbacks as ThingSpace sends them: listeners registered per account and service (POST, GET, DELETE
// /api/m2m/v1/callbacks/...), asynchronous device actions answering {"requestId"} at once, and the CarrierService
// callback for each device POSTed later to the registered URL, with the registered username and password in the body,
// sent again until the listener answers 2xx, at most `maxCallbackThreshold` times. Device Location's callbacks
// (/api/loc/v1) the same way, signed with HMAC-SHA256 under the key their registration returned.

import { createHmac, randomBytes, randomUUID } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { UWS_ERROR_CODES, uwsError } from './errors.js'
import { isRecord, stringField } from './request-input.js'
import { locationsOf } from './families.js'

/** The Connectivity Management callback services (the SDK's CallbackServiceNameEnum, those this simulator knows). */
export const CALLBACK_SERVICE_NAMES: readonly string[] = [
  'CarrierService',
  'DeviceUsage',
  'ExternalProvisioningChanges',
  'PromoChanges',
  'SMSDelivery',
  'DeviceSuspendStatus',
  'DeviceProvisioningHistory',
  'AlertService'
]

/** The Device Location callback services (/api/loc/v1/callbacks): signed, with no username or password. */
export const LOCATION_SERVICE_NAMES: readonly string[] = ['Location', 'DeviceLocation']

/** The asynchronous device actions answered with a requestId and reported by a CarrierService callback. */
export const ASYNC_DEVICE_ACTIONS: readonly string[] = ['activate', 'deactivate', 'suspend', 'restore']

interface Registration {
  url: string
  username?: string
  password?: string
  /** Device Location's registrations: the shared key their callbacks are signed with (HMAC-SHA256 of the body). */
  signingKey?: string
}

/** The header the simulator returns a Device Location listener's shared key in (Verizon's pages do not name it). */
export const SIMULATOR_KEY_HEADER = 'x-callback-shared-key'
/** The header the simulator puts each Device Location callback's signature in, hex. */
export const SIMULATOR_SIGNATURE_HEADER = 'x-callback-signature'

export interface CallbackDeliveryOptions {
  /** Before the first delivery of a callback; default 100 ms. */
  firstDelayMs?: number
  /** Before the first resend after a failed delivery, doubling each time; default 1000 ms. */
  retryDelayMs?: number
  /** Deliveries of one callback at most (ThingSpace's `maxCallbackThreshold`); default 4. */
  maxAttempts?: number
  /** A delivery not answered within this counts as failed; default 5000 ms. */
  timeoutMs?: number
}

export interface CallbackDeliveryStats {
  /** Callbacks made (one per device of an asynchronous request, when a listener is registered). */
  callbacksQueued: number
  /** Deliveries answered 2xx. */
  callbacksDelivered: number
  /** Deliveries that failed (not 2xx, no answer): each is sent again, until the last attempt. */
  callbackAttemptsFailed: number
  /** Callbacks given up after `maxAttempts` failed deliveries. */
  callbacksAbandoned: number
}

type DeviceId = { id: string; kind: string }

/** `devices: [{deviceIds: [{id, kind}]}]`, as the SDK's CarrierActionsRequest and CarrierActivateRequest send it. */
function devicesOf (body: unknown): DeviceId[][] | string {
  const devices = isRecord(body) ? body.devices : undefined
  if (!Array.isArray(devices) || devices.length === 0 || devices.length > 200) {
    return 'devices must be a list of 1 to 200 entries {"deviceIds": [{"id","kind"}]}'
  }
  const result: DeviceId[][] = []
  for (const device of devices) {
    const ids = isRecord(device) ? device.deviceIds : undefined
    if (!Array.isArray(ids) || ids.length === 0) return 'each device needs deviceIds: [{"id","kind"}]'
    const parsed: DeviceId[] = []
    for (const id of ids) {
      if (!isRecord(id) || typeof id.id !== 'string' || typeof id.kind !== 'string') {
        return 'each deviceIds entry must be {"id","kind"} (strings)'
      }
      parsed.push({ id: id.id, kind: id.kind })
    }
    result.push(parsed)
  }
  return result
}

export class CallbackDeliveries {
  readonly stats: CallbackDeliveryStats = {
    callbacksQueued: 0,
    callbacksDelivered: 0,
    callbackAttemptsFailed: 0,
    callbacksAbandoned: 0
  }

  private readonly registrations = new Map<string, Map<string, Registration>>()
  private readonly timers = new Set<NodeJS.Timeout>()
  private readonly inFlight = new Set<AbortController>()
  private readonly firstDelayMs: number
  private readonly retryDelayMs: number
  readonly maxAttempts: number
  private readonly timeoutMs: number
  private closed = false

  constructor (options: CallbackDeliveryOptions = {}) {
    this.firstDelayMs = options.firstDelayMs ?? 100
    this.retryDelayMs = options.retryDelayMs ?? 1000
    this.maxAttempts = options.maxAttempts ?? 4
    this.timeoutMs = options.timeoutMs ?? 5000
  }

  register (accountName: string, service: string, registration: Registration): void {
    const services = this.registrations.get(accountName) ?? new Map<string, Registration>()
    services.set(service, registration)
    this.registrations.set(accountName, services)
  }

  /**
   * What GET lists, for one API (Connectivity Management's, or Device Location's signed ones): the service and URL,
   * never the username, password or key.
   */
  list (accountName: string, signed = false): Array<{ accountName: string; name: string; url: string }> {
    return [...(this.registrations.get(accountName) ?? new Map<string, Registration>())]
      .filter(([, registration]) => (registration.signingKey !== undefined) === signed)
      .map(([name, { url }]) => ({ accountName, name, url }))
  }

  /** The key a Device Location registration returned (for tests that check what the listener kept). */
  signingKeyOf (accountName: string, service: string): string | undefined {
    return this.registrations.get(accountName)?.get(service)?.signingKey
  }

  remove (accountName: string, service: string): boolean {
    return this.registrations.get(accountName)?.delete(service) ?? false
  }

  /** Queues one callback for the account's listener of `service`, if one is registered. */
  send (accountName: string, service: string, body: Record<string, unknown>): void {
    const registration = this.registrations.get(accountName)?.get(service)
    if (registration === undefined || this.closed) return
    this.stats.callbacksQueued++
    this.later(this.firstDelayMs, () => { void this.deliver(registration, body, 1) })
  }

  /** Stops every resend and delivery under way (the simulator is closing). */
  close (): void {
    this.closed = true
    for (const timer of this.timers) clearTimeout(timer)
    this.timers.clear()
    for (const delivery of this.inFlight) delivery.abort()
  }

  private later (ms: number, run: () => void): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer)
      run()
    }, ms)
    this.timers.add(timer)
  }

  private async deliver (registration: Registration, body: Record<string, unknown>, attempt: number): Promise<void> {
    if (this.closed) return
    const message = {
      ...(registration.username === undefined ? {} : { username: registration.username }),
      ...(registration.password === undefined ? {} : { password: registration.password }),
      ...body,
      callbackCount: attempt,
      maxCallbackThreshold: this.maxAttempts
    }
    const text = JSON.stringify(message)
    const headers: Record<string, string> = { 'content-type': 'application/json' }
    if (registration.signingKey !== undefined) {
      headers[SIMULATOR_SIGNATURE_HEADER] = createHmac('sha256', registration.signingKey).update(text).digest('hex')
    }
    const abort = new AbortController()
    this.inFlight.add(abort)
    const timer = setTimeout(() => { abort.abort() }, this.timeoutMs)
    let delivered = false
    try {
      const answer = await fetch(registration.url, {
        method: 'POST',
        headers,
        body: text,
        signal: abort.signal
      })
      await answer.arrayBuffer()
      delivered = answer.status >= 200 && answer.status < 300
    } catch {
      delivered = false // refused, reset or timed out: sent again, as ThingSpace does
    } finally {
      clearTimeout(timer)
      this.inFlight.delete(abort)
    }
    if (delivered) {
      this.stats.callbacksDelivered++
      return
    }
    if (this.closed) return
    this.stats.callbackAttemptsFailed++
    if (attempt >= this.maxAttempts) {
      this.stats.callbacksAbandoned++
      return
    }
    this.later(this.retryDelayMs * 2 ** (attempt - 1), () => { void this.deliver(registration, body, attempt + 1) })
  }
}

export interface CallbackRouteOptions {
  deliveries: CallbackDeliveries
  accounts: ReadonlySet<string>
}

/** The registration routes and the asynchronous device actions; inside the scope that checks both tokens. */
export async function callbackRoutes (
  scope: FastifyInstance,
  { deliveries, accounts }: CallbackRouteOptions
): Promise<void> {
  const unknownAccount = (accountName: string): ReturnType<typeof uwsError> =>
    uwsError(UWS_ERROR_CODES.accountNotFound, `Account ${accountName} was not found`)

  scope.post<{ Params: { accountName: string }; Body: unknown }>(
    '/api/m2m/v1/callbacks/:accountName',
    async (request, reply) => {
      const { accountName } = request.params
      if (!accounts.has(accountName)) return reply.code(400).send(unknownAccount(accountName))
      const { name, url, username, password } = isRecord(request.body) ? request.body : ({} as Record<string, unknown>)
      if (typeof name !== 'string' || !CALLBACK_SERVICE_NAMES.includes(name)) {
        return reply
          .code(400)
          .send(uwsError(UWS_ERROR_CODES.badRequest, `name must be one of ${CALLBACK_SERVICE_NAMES.join(', ')}`))
      }
      if (typeof url !== 'string' || !/^https?:\/\/[^/]/.test(url) || !URL.canParse(url)) {
        return reply.code(400).send(uwsError(UWS_ERROR_CODES.badRequest, 'url must be an absolute http(s) URL'))
      }
      if ((username !== undefined && typeof username !== 'string') || (password !== undefined && typeof password !== 'string')) {
        return reply.code(400).send(uwsError(UWS_ERROR_CODES.badRequest, 'username and password must be strings'))
      }
      deliveries.register(accountName, name, {
        url,
        ...(username === undefined ? {} : { username }),
        ...(password === undefined ? {} : { password })
      })
      return { accountName, serviceName: name }
    }
  )

  scope.get<{ Params: { accountName: string } }>('/api/m2m/v1/callbacks/:accountName', async (request, reply) => {
    const { accountName } = request.params
    if (!accounts.has(accountName)) return reply.code(400).send(unknownAccount(accountName))
    return deliveries.list(accountName)
  })

  scope.delete<{ Params: { accountName: string; serviceName: string } }>(
    '/api/m2m/v1/callbacks/:accountName/name/:serviceName',
    async (request, reply) => {
      const { accountName, serviceName } = request.params
      if (!accounts.has(accountName)) return reply.code(400).send(unknownAccount(accountName))
      if (!deliveries.remove(accountName, serviceName)) {
        return reply
          .code(400)
          .send(uwsError(UWS_ERROR_CODES.badRequest, `No ${serviceName} callback is registered for ${accountName}`))
      }
      return { accountName, serviceName }
    }
  )

  scope.post<{ Params: { action: string }; Body: unknown }>(
    '/api/m2m/v1/devices/actions/:action',
    async (request, reply) => {
      const { action } = request.params
      if (!ASYNC_DEVICE_ACTIONS.includes(action)) {
        return reply.code(404).send(uwsError(UWS_ERROR_CODES.badRequest, `Unknown device action ${action}`))
      }
      const devices = devicesOf(request.body)
      if (typeof devices === 'string') return reply.code(400).send(uwsError(UWS_ERROR_CODES.badRequest, devices))
      const named = isRecord(request.body) ? request.body.accountName : undefined
      const accountName = typeof named === 'string' ? named : [...accounts][0] ?? ''
      if (!accounts.has(accountName)) return reply.code(400).send(unknownAccount(accountName))
      const requestId = randomUUID()
      // One callback per device, as ThingSpace reports each device of a request on its own.
      for (const deviceIds of devices) {
        deliveries.send(accountName, 'CarrierService', {
          requestId,
          deviceIds,
          deviceResponse: { [`${action}Response`]: { deviceIds, status: 'Success' } },
          status: 'Success'
        })
      }
      return { requestId }
    }
  )

  locationCallbackRoutes(scope, deliveries, accounts)
}

/** Device Location's callback API (/api/loc/v1): a registration answers the key in a header; callbacks are signed. */
function locationCallbackRoutes (
  scope: FastifyInstance,
  deliveries: CallbackDeliveries,
  accounts: ReadonlySet<string>
): void {
  const prefix = '/api/loc/v1'
  const invalidAccount = (accountName: string): { errorCode: string; errorMessage: string } => ({
    errorCode: 'INVALID_ACCOUNT',
    errorMessage: `Account ${accountName} is not registered for location services`
  })
  const invalid = (errorMessage: string): { errorCode: string; errorMessage: string } => ({
    errorCode: 'INVALID_REQUEST',
    errorMessage
  })

  scope.post<{ Params: { account: string }; Body: unknown }>(`${prefix}/callbacks/:account`, async (request, reply) => {
    const { account } = request.params
    if (!accounts.has(account)) return reply.code(400).send(invalidAccount(account))
    const { name, url } = isRecord(request.body) ? request.body : ({} as Record<string, unknown>)
    if (typeof name !== 'string' || !LOCATION_SERVICE_NAMES.includes(name)) {
      return reply.code(400).send(invalid(`name must be one of ${LOCATION_SERVICE_NAMES.join(', ')}`))
    }
    if (typeof url !== 'string' || !/^https?:\/\/[^/]/.test(url) || !URL.canParse(url)) {
      return reply.code(400).send(invalid('url must be an absolute http(s) URL'))
    }
    const signingKey = randomBytes(32).toString('hex')
    deliveries.register(account, name, { url, signingKey })
    return reply.header(SIMULATOR_KEY_HEADER, signingKey).send({ account, name })
  })

  scope.get<{ Params: { account: string } }>(`${prefix}/callbacks/:account`, async (request, reply) => {
    const { account } = request.params
    if (!accounts.has(account)) return reply.code(400).send(invalidAccount(account))
    return deliveries.list(account, true).map(({ accountName, name, url }) => ({ accountName, serviceName: name, url }))
  })

  scope.delete<{ Params: { account: string; service: string } }>(
    `${prefix}/callbacks/:account/name/:service`,
    async (request, reply) => {
      const { account, service } = request.params
      if (!accounts.has(account)) return reply.code(400).send(invalidAccount(account))
      if (!LOCATION_SERVICE_NAMES.includes(service) || !deliveries.remove(account, service)) {
        return reply.code(400).send(invalid(`No ${service} callback is registered for ${account}`))
      }
      return { success: true }
    }
  )

  // The asynchronous location request: {txid, status} at once, the locations later by DeviceLocation callback.
  scope.post<{ Body: unknown }>(`${prefix}/devicelocations`, async (request, reply) => {
    const accountName = stringField(request.body, 'accountName')
    const deviceList = isRecord(request.body) ? request.body.deviceList : undefined
    const devices = Array.isArray(deviceList) ? deviceList.length : 0
    if (accountName === undefined || devices === 0 || devices > 10_000 || !Array.isArray(deviceList)) {
      return reply.code(400).send(invalid('accountName and a deviceList of 1 to 10000 devices are required'))
    }
    if (!accounts.has(accountName)) return reply.code(400).send(invalidAccount(accountName))
    const txid = randomUUID()
    deliveries.send(accountName, 'DeviceLocation', { txid, status: 'COMPLETED', locations: locationsOf(deviceList) })
    return { txid, status: 'QUEUED' }
  })
}
