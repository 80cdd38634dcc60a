// Deterministic fake accounts, devices and usage: the same request always gets the same answer, across restarts.
import { createHash } from 'node:crypto'

export const DEVICES_PER_ACCOUNT = 25
export const DEFAULT_DEVICES_PER_PAGE = 10
export const MAX_DEVICES_PER_PAGE = 2000
export const MAX_USAGE_RECORDS = 366
/** The one account the simulator knows unless told otherwise, named as Verizon's examples name accounts. */
export const DEMO_ACCOUNT_NAME = '0000123456-00001'

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
  servicePlans: {
    name: string
    code: string
    sizeKb: number
    carrierServicePlanCode: string
    extendedAttributes: KeyValue[]
  }[]
}

export interface KeyValue {
  key: string
  value: string
}

export interface SimulatedDevice {
  accountName: string
  billingCycleEndDate: string
  carrierInformations: { carrierName: string; servicePlan: string; state: string }[]
  connected: boolean
  createdAt: string
  deviceIds: DeviceId[]
  extendedAttributes: KeyValue[]
  groupNames: string[]
  ipAddress: string
  lastActivationBy: string
  lastActivationDate: string
  lastConnectionDate: string
}

export interface DevicePage {
  hasMoreData: boolean
  devices: SimulatedDevice[]
}

export interface UsageRecord {
  bytesUsed: number
  extendedAttributes: KeyValue[]
  smsUsed: number
  source: string
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

const EASTERN_OFFSET = new Intl.DateTimeFormat('en-US', { timeZone: 'America/New_York', timeZoneName: 'longOffset' })
const MS_PER_MINUTE = 60_000

/**
 * As Verizon's examples write dates: local time in US Eastern with its offset, whole seconds
 * ("2020-05-09T20:00:00-04:00").
 */
export function verizonDate (ms: number): string {
  const zone = EASTERN_OFFSET.formatToParts(ms).find((part) => part.type === 'timeZoneName')?.value ?? 'GMT'
  const match = /^GMT([+-])(\d{2}):(\d{2})$/.exec(zone)
  const sign = match?.[1] === '-' ? -1 : 1
  const offsetMinutes = match === null ? 0 : sign * (Number(match[2]) * 60 + Number(match[3]))
  const local = new Date(ms + offsetMinutes * MS_PER_MINUTE).toISOString().slice(0, 19)
  return match === null ? `${local}Z` : `${local}${match[1] as string}${match[2] as string}:${match[3] as string}`
}

/** UTC with whole seconds, as Verizon's usage examples write timestamps ("2020-12-01T00:00:00Z"). */
export function utcDate (ms: number): string {
  return `${new Date(ms).toISOString().slice(0, 19)}Z`
}

export function accountInfo (accountName: string): SimulatedAccountInfo {
  return {
    accountName,
    accountNumber: accountName,
    organizationName: `Simulated Organization (${accountName})`,
    isProvisioningAllowed: true,
    carriers: ['Verizon Wireless'],
    features: ['ThingSpace Connectivity Management'],
    iPPools: [{ poolName: 'VZWINTERNET', poolType: 'Dynamic', isDefaultPool: true }],
    servicePlans: [
      {
        name: 'M2M 5GB Shared',
        code: 'M2M5GB',
        sizeKb: 5 * 1024 * 1024,
        carrierServicePlanCode: '84777',
        extendedAttributes: []
      }
    ]
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
    billingCycleEndDate: verizonDate(Date.UTC(2025, 6, 1, 4)),
    carrierInformations: [{ carrierName: 'Verizon Wireless', servicePlan: 'M2M5GB', state }],
    connected: state === 'active' && index % 3 !== 0,
    createdAt: verizonDate(FIRST_CREATED_AT_MS + index * MS_PER_DAY),
    deviceIds: [
      { id: imeiPayload + luhnCheckDigit(imeiPayload), kind: 'imei' },
      { id: iccidPayload + luhnCheckDigit(iccidPayload), kind: 'iccid' }
    ],
    extendedAttributes: [{ key: 'SimulatorDeviceIndex', value: String(index) }],
    groupNames: [`Default: ${accountName}`],
    ipAddress: `10.${ipTail.readUInt8(1)}.${ipTail.readUInt8(2)}.${(index % 250) + 1}`,
    lastActivationBy: 'simulator',
    lastActivationDate: verizonDate(activationMs),
    lastConnectionDate: verizonDate(LAST_CONNECTION_AT_MS - index * 3_600_000)
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
    const timestamp = utcDate(dayMs)
    const seed = `usage:${deviceId.kind}:${deviceId.id}:${new Date(dayMs).toISOString()}`
    const smsUsed = seedNumber(`sms:${seed}`) % (MAX_DAILY_SMS + 1)
    const mobileOriginated = seedNumber(`mo:${seed}`) % (smsUsed + 1)
    records.push({
      bytesUsed: seedNumber(seed) % MAX_DAILY_BYTES,
      extendedAttributes: [
        { key: 'MoSms', value: String(mobileOriginated) },
        { key: 'MtSms', value: String(smsUsed - mobileOriginated) }
      ],
      smsUsed,
      source: 'Raw Usage',
      timestamp
    })
    dayMs += MS_PER_DAY
  }
  return { hasMoreData: dayMs <= latestMs, usageHistory: records }
}
