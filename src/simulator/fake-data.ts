// Deterministic fake accounts, devices and usage: the same request always gets the same answer, across restarts.
import { createHash } from 'node:crypto'

export const DEVICES_PER_ACCOUNT = 25
export const DEFAULT_DEVICES_PER_PAGE = 10
export const MAX_DEVICES_PER_PAGE = 2000
export const MAX_USAGE_RECORDS = 366

const MS_PER_DAY = 24 * 60 * 60 * 1000
const FIRST_CREATED_AT_MS = Date.UTC(2023, 0, 15, 9, 30)
const FIRST_ACTIVATION_AT_MS = Date.UTC(2023, 1, 1, 12, 0)
const LAST_CONNECTION_AT_MS = Date.UTC(2025, 5, 1, 8, 0)
const MAX_DAILY_BYTES = 50 * 1024 * 1024
const MAX_DAILY_SMS = 20

export interface DeviceId {
  id: string
  kind: string
}

export interface SimulatedAccountInfo {
  accountName: string
  accountNumber: string
  organizationName: string
  isProvisioningAllowed: boolean
  carriers: string[]
  features: string[]
  iPPools: { poolName: string; poolType: string; isDefaultPool: boolean }[]
  servicePlans: { name: string; code: string; sizeKb: number; carrierServicePlanCode: string }[]
  operationsAllowed: string[]
}

export interface SimulatedDevice {
  accountName: string
  billingCycleEndDate: string
  carrierInformations: { carrierName: string; servicePlan: string; state: string }[]
  connected: boolean
  createdAt: string
  deviceIds: DeviceId[]
  extendedAttributes: { key: string; value: string }[]
  groupNames: string[]
  ipAddress: string
  lastActivationBy: string
  lastActivationDate: string
  lastConnectionDate: string
  state: string
}

export interface DevicePage {
  hasMoreData: boolean
  devices: SimulatedDevice[]
}

export interface UsageRecord {
  bytesUsed: number
  smsUsed: number
  timestamp: string
}

export interface UsageHistory {
  hasMoreData: boolean
  usageHistory: UsageRecord[]
}

/** Bytes of a SHA-256 of `seed`: the source of every "random" value here. */
function seedBytes (seed: string): Buffer {
  return createHash('sha256').update(seed, 'utf8').digest()
}

function seedNumber (seed: string): number {
  return seedBytes(seed).readUInt32BE(0)
}

function seedDigits (seed: string, count: number): string {
  const bytes = seedBytes(seed)
  let digits = ''
  for (let i = 0; i < count; i++) digits += String(bytes.readUInt8(i % bytes.length) % 10)
  return digits
}

/** Luhn check digit, as IMEIs and ICCIDs carry. */
function luhnCheckDigit (payload: string): string {
  let sum = 0
  for (let i = 0; i < payload.length; i++) {
    let digit = Number(payload[payload.length - 1 - i])
    if (i % 2 === 0) {
      digit *= 2
      if (digit > 9) digit -= 9
    }
    sum += digit
  }
  return String((10 - (sum % 10)) % 10)
}

function isoDate (ms: number): string {
  return new Date(ms).toISOString()
}

export function accountInfo (accountName: string): SimulatedAccountInfo {
  return {
    accountName,
    accountNumber: `${seedDigits(`account:${accountName}`, 10)}-00001`,
    organizationName: `Simulated Organization (${accountName})`,
    isProvisioningAllowed: true,
    carriers: ['Verizon Wireless'],
    features: ['ThingSpace Connectivity Management'],
    iPPools: [{ poolName: 'VZWINTERNET', poolType: 'Dynamic', isDefaultPool: true }],
    servicePlans: [{ name: 'M2M 5GB Shared', code: 'M2M5GB', sizeKb: 5 * 1024 * 1024, carrierServicePlanCode: '84777' }],
    operationsAllowed: ['ACTIVATE', 'DEACTIVATE', 'SUSPEND', 'RESTORE', 'CHANGE_SERVICE_PLAN']
  }
}

function deviceState (index: number): string {
  if (index % 10 === 4) return 'deactive'
  if (index % 10 === 9) return 'suspend'
  return 'active'
}

/** IMEIs ascend with the index, so paging by "largest IMEI seen" walks the list in order. */
function device (accountName: string, index: number): SimulatedDevice {
  const seed = `device:${accountName}:${index}`
  const typeAllocationCode = `35${seedDigits(`tac:${accountName}`, 6)}`
  const serial = String(100_000 + index * 1000 + (seedNumber(seed) % 1000))
  const imeiPayload = typeAllocationCode + serial
  const iccidPayload = `891480${seedDigits(seed, 13)}`
  const state = deviceState(index)
  const ipTail = seedBytes(seed)
  const activationMs = FIRST_ACTIVATION_AT_MS + index * MS_PER_DAY
  return {
    accountName,
    billingCycleEndDate: isoDate(Date.UTC(2025, 6, 1)),
    carrierInformations: [{ carrierName: 'Verizon Wireless', servicePlan: 'M2M5GB', state }],
    connected: state === 'active' && index % 3 !== 0,
    createdAt: isoDate(FIRST_CREATED_AT_MS + index * MS_PER_DAY),
    deviceIds: [
      { id: imeiPayload + luhnCheckDigit(imeiPayload), kind: 'imei' },
      { id: iccidPayload + luhnCheckDigit(iccidPayload), kind: 'iccid' }
    ],
    extendedAttributes: [{ key: 'SimulatorDeviceIndex', value: String(index) }],
    groupNames: [`Default: ${accountName}`],
    ipAddress: `10.${ipTail.readUInt8(1)}.${ipTail.readUInt8(2)}.${(index % 250) + 1}`,
    lastActivationBy: 'simulator',
    lastActivationDate: isoDate(activationMs),
    lastConnectionDate: isoDate(LAST_CONNECTION_AT_MS - index * 3_600_000),
    state
  }
}

function imeiOf (simulated: SimulatedDevice): bigint {
  return BigInt(simulated.deviceIds[0]?.id ?? '0')
}

/**
 * One page of the account's devices, ordered by IMEI. `largestDeviceIdSeen` is the largest IMEI the
 * client has already received (0 or absent for the first page).
 */
export function devicePage (accountName: string, maxNumberOfDevices: number, largestDeviceIdSeen: bigint): DevicePage {
  const remaining: SimulatedDevice[] = []
  for (let index = 0; index < DEVICES_PER_ACCOUNT; index++) {
    const candidate = device(accountName, index)
    if (imeiOf(candidate) > largestDeviceIdSeen) remaining.push(candidate)
  }
  return { hasMoreData: remaining.length > maxNumberOfDevices, devices: remaining.slice(0, maxNumberOfDevices) }
}

/** One record per UTC midnight within [earliestMs, latestMs], at most MAX_USAGE_RECORDS of them. */
export function usageHistory (deviceId: DeviceId, earliestMs: number, latestMs: number): UsageHistory {
  const records: UsageRecord[] = []
  let dayMs = Math.ceil(earliestMs / MS_PER_DAY) * MS_PER_DAY
  while (dayMs <= latestMs && records.length < MAX_USAGE_RECORDS) {
    const timestamp = isoDate(dayMs)
    const seed = `usage:${deviceId.kind}:${deviceId.id}:${timestamp}`
    records.push({
      bytesUsed: seedNumber(seed) % MAX_DAILY_BYTES,
      smsUsed: seedNumber(`sms:${seed}`) % (MAX_DAILY_SMS + 1),
      timestamp
    })
    dayMs += MS_PER_DAY
  }
  return { hasMoreData: dayMs <= latestMs, usageHistory: records }
}
