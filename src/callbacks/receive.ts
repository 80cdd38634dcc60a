// What the callback listener accepts: a JSON object from ThingSpace for a known service, carrying the username and
// password registered with the callback URL (ThingSpace's only authentication of Connectivity Management callbacks;
// Device Location's are signed instead: location-signature.ts). Pure: no I/O.

import { createHash, timingSafeEqual } from 'node:crypto'
import type { CallbackMessage } from './inbox.js'

/** The Connectivity Management callback services (GET /api/m2m/v1/callbacks/{accountName} lists them). */
export const CALLBACK_SERVICES: readonly string[] = [
  'CarrierService',
  'DeviceUsage',
  'ExternalProvisioningChanges',
  'PromoChanges',
  'SMSDelivery',
  'DeviceSuspendStatus',
  'DeviceProvisioningHistory',
  'AlertService'
]

export type Verdict =
  | { accepted: CallbackMessage }
  | { refused: 'unauthorized' | 'bad-request'; reason: string }

function digest (text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest()
}

/** Constant time whatever the lengths: both sides are hashed first. */
function sameSecret (given: unknown, expected: string): boolean {
  return typeof given === 'string' && timingSafeEqual(digest(given), digest(expected))
}

function deviceIdsOf (value: unknown): Array<{ id: string; kind: string }> {
  if (!Array.isArray(value)) return []
  return value.flatMap((entry: unknown) => {
    const { id, kind } = (typeof entry === 'object' && entry !== null ? entry : {}) as Record<string, unknown>
    return typeof id === 'string' && typeof kind === 'string' ? [{ id, kind }] : []
  })
}

/**
 * `expected`: the username and password registered with the URL, or 'signed' for a Device Location callback whose
 * signature the listener has checked (location-signature.ts): those carry no username or password.
 */
export function receiveCallback (
  service: string,
  text: string,
  expected: { username: string; password: string } | 'signed'
): Verdict {
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    return { refused: 'bad-request', reason: 'the body is not JSON' }
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return { refused: 'bad-request', reason: 'the body is not a JSON object' }
  }
  const { username, password, ...rest } = body as Record<string, unknown>
  // Both checked whatever the first says: the time taken tells nothing about which one was wrong.
  const userOk = expected === 'signed' || sameSecret(username, expected.username)
  const passwordOk = expected === 'signed' || sameSecret(password, expected.password)
  if (!userOk || !passwordOk) return { refused: 'unauthorized', reason: 'wrong or missing username or password' }
  const requestId = [rest.requestId, rest.txid, rest.transactionId].find((value) => typeof value === 'string')
  return {
    accepted: {
      service,
      requestId: (requestId as string | undefined) ?? null,
      deviceIds: deviceIdsOf(rest.deviceIds),
      body: rest
    }
  }
}
