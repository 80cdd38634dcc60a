// The simulated M2M data endpoints (account, device list, usage); the caller has already checked both tokens.
// Only the known accounts exist: any other name answers AccountNotFound rather than invented data.
import type { FastifyInstance } from 'fastify'
import { UWS_ERROR_CODES, uwsError } from './errors.js'
import {
  accountInfo,
  DEFAULT_DEVICES_PER_PAGE,
  type DeviceId,
  devicePage,
  MAX_DEVICES_PER_PAGE,
  usageHistory
} from './fake-data.js'
import { isRecord, ok, type Parsed, problem } from './request-input.js'

interface DeviceListRequest {
  accountName: string
  maxNumberOfDevices: number
  largestDeviceIdSeen: bigint
}

interface UsageRequest {
  deviceId: DeviceId
  earliestMs: number
  latestMs: number
}

function parseLargestDeviceIdSeen (value: unknown): Parsed<bigint> {
  if (value === undefined || value === null) return ok(0n)
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) return ok(BigInt(value))
  if (typeof value === 'string' && /^\d{1,30}$/.test(value)) return ok(BigInt(value))
  return problem('largestDeviceIdSeen must be a non-negative whole number (the largest IMEI already received)')
}

function parseDeviceListRequest (body: unknown): Parsed<DeviceListRequest> {
  if (!isRecord(body) || typeof body.accountName !== 'string' || body.accountName === '') {
    return problem('accountName (a non-empty string) is required')
  }
  const max = body.maxNumberOfDevices ?? DEFAULT_DEVICES_PER_PAGE
  if (typeof max !== 'number' || !Number.isInteger(max) || max < 1 || max > MAX_DEVICES_PER_PAGE) {
    return problem(`maxNumberOfDevices must be a whole number from 1 to ${MAX_DEVICES_PER_PAGE}`)
  }
  const largest = parseLargestDeviceIdSeen(body.largestDeviceIdSeen)
  if (!largest.ok) return problem(largest.problem)
  return ok({ accountName: body.accountName, maxNumberOfDevices: max, largestDeviceIdSeen: largest.value })
}

function parseTimestamp (value: unknown, name: string): Parsed<number> {
  const ms = typeof value === 'string' ? Date.parse(value) : Number.NaN
  return Number.isNaN(ms) ? problem(`${name} must be a date-time string such as 2025-01-01T00:00:00Z`) : ok(ms)
}

function parseUsageRequest (body: unknown): Parsed<UsageRequest> {
  const deviceId = isRecord(body) ? body.deviceId : undefined
  if (!isRecord(deviceId) || typeof deviceId.id !== 'string' || typeof deviceId.kind !== 'string') {
    return problem('deviceId {"id","kind"} (both strings) is required')
  }
  const earliest = parseTimestamp(isRecord(body) ? body.earliest : undefined, 'earliest')
  if (!earliest.ok) return problem(earliest.problem)
  const latest = parseTimestamp(isRecord(body) ? body.latest : undefined, 'latest')
  if (!latest.ok) return problem(latest.problem)
  return ok({ deviceId: { id: deviceId.id, kind: deviceId.kind }, earliestMs: earliest.value, latestMs: latest.value })
}

export interface DataRouteOptions {
  /** Account names the simulator knows; any other answers AccountNotFound, as ThingSpace does. */
  accounts: ReadonlySet<string>
}

function accountNotFound (accountName: string): ReturnType<typeof uwsError> {
  return uwsError(UWS_ERROR_CODES.accountNotFound, `Account ${accountName} was not found`)
}

export async function dataRoutes (scope: FastifyInstance, { accounts }: DataRouteOptions): Promise<void> {
  scope.get<{ Params: { aname: string } }>('/api/m2m/v1/accounts/:aname', async (request, reply) => {
    const { aname } = request.params
    return accounts.has(aname) ? accountInfo(aname) : reply.code(400).send(accountNotFound(aname))
  })

  scope.post<{ Body: unknown }>('/api/m2m/v1/devices/actions/list', async (request, reply) => {
    const parsed = parseDeviceListRequest(request.body)
    if (!parsed.ok) return reply.code(400).send(uwsError(UWS_ERROR_CODES.badRequest, parsed.problem))
    const { accountName, maxNumberOfDevices, largestDeviceIdSeen } = parsed.value
    if (!accounts.has(accountName)) return reply.code(400).send(accountNotFound(accountName))
    return devicePage(accountName, maxNumberOfDevices, largestDeviceIdSeen)
  })

  scope.post<{ Body: unknown }>('/api/m2m/v1/devices/usage/actions/list', async (request, reply) => {
    const parsed = parseUsageRequest(request.body)
    if (!parsed.ok) return reply.code(400).send(uwsError(UWS_ERROR_CODES.badRequest, parsed.problem))
    const { deviceId, earliestMs, latestMs } = parsed.value
    return usageHistory(deviceId, earliestMs, latestMs)
  })
}
