// Reads an upstream error answer to decide whether it is an expired token the proxy should renew and replay.

import type { RenewalReason } from '../session/session-manager.js'
import { isSessionTokenCode } from '../session/errors.js'

export interface TokenRejection {
  cause: 'session' | 'oauth'
  reason: RenewalReason
}

/** Only client-error answers can carry a token rejection; others stream through untouched. */
export function mayBeTokenRejection (statusCode: number): boolean {
  return statusCode >= 400 && statusCode < 500
}

/**
 * The refusals recognised, whatever API family answered (every family on thingspace.verizon.com sits
 * behind the same gateway, and the session is the Connectivity Management (UWS) session in all of them).
 * Error shapes of the families, from the SDK's error models and the public API documentation:
 * - `{errorCode, errorMessage}`: Connectivity Management (`UnifiedWebService.<CATEGORY>.<Code>`), Software
 *   Management v1-v3, Device Location and Subscription Server (`INVALID_PARAMETER`...), Device Diagnostics
 *   (`DEVICE_NOT_FOUND`...), and several `/api/m2m` families whose errorCode is an HTTP status ("400", "401").
 * - `{responseCode, message, fault: {code, message, description}}`: Hyper Precise Location, whose `fault`
 *   is the gateway's (its documented example is the gateway's 900906).
 * - `{error, error_description, cause}`: Cloud Connector; `{error, error_description}`: the OAuth endpoint.
 * - `{fault: {code, message, description}}`: the gateway itself, for any family.
 *
 * Recognised, conservatively (a false positive costs a successful login, a false negative a failed call):
 * 1. session: an errorCode containing `.SessionToken.` (`REQUEST_FAILED.SessionToken.Expired`,
 *    `INPUT_INVALID.SessionToken.Invalid`), any service prefix, any 4xx status (400 expected);
 * 2. session: Device Location's documented `{"errorCode":"INVALID_PARAMETER","errorMessage":"UWS verification
 *    failure (The Session has expired.)"}`, the only sign it gives, so matched on both fields;
 * 3. session: Cloud Connector's documented `{"error":"unauthorized","error_description":"Failure response
 *    received for UWS V1 REST accounts: [400]",...}`: UWS refused the session token with its 400;
 * 4. bearer: a gateway fault 900901 (Invalid Credentials) on 401, in any body that has `fault` at its top.
 * Not recognised: gateway 900902 (missing credentials: the proxy always sends them), errorCode "401" or
 * Hyper Precise Location's INVALID_ACCESS (which token, or a permission?), Device Diagnostics' 401
 * INVALID_ACCOUNT, OAuth `{error}` codes, and any match on a message alone.
 */
export function tokenRejectionOf (statusCode: number, body: Buffer): TokenRejection | undefined {
  let parsed: unknown
  try {
    parsed = JSON.parse(body.toString('utf8'))
  } catch {
    return undefined
  }
  if (typeof parsed !== 'object' || parsed === null) return undefined
  const record = parsed as {
    errorCode?: unknown
    errorMessage?: unknown
    error?: unknown
    error_description?: unknown
    fault?: { code?: unknown }
  }
  if (typeof record.errorCode === 'string') {
    if (isSessionTokenCode(record.errorCode)) {
      return { cause: 'session', reason: record.errorCode.includes('.SessionToken.Expired') ? 'expired' : 'invalid' }
    }
    if (
      record.errorCode === 'INVALID_PARAMETER' &&
      typeof record.errorMessage === 'string' &&
      LOCATION_SESSION_EXPIRED.test(record.errorMessage)
    ) {
      return { cause: 'session', reason: 'expired' }
    }
  }
  if (
    record.error === 'unauthorized' &&
    typeof record.error_description === 'string' &&
    CLOUD_CONNECTOR_SESSION_REFUSED.test(record.error_description)
  ) {
    return { cause: 'session', reason: 'invalid' }
  }
  if (statusCode === 401 && String(record.fault?.code) === '900901') {
    return { cause: 'oauth', reason: 'expired' }
  }
  return undefined
}

/** Device Location's expired session; its "UWS verification failure (Could not find account ...)" is not one. */
const LOCATION_SESSION_EXPIRED = /^UWS verification failure \(The Session has expired\.?\)/i
/**
 * Cloud Connector's refused session: UWS answered 400, its session-token status (its documented [401] is a malformed
 * bearer, under another error).
 */
const CLOUD_CONNECTOR_SESSION_REFUSED = /^Failure response received for UWS V1 REST accounts: \[400\]/
