// Errors of the session lifecycle: what went wrong talking to the auth endpoints, and why the proxy cannot authenticate
// now.

/**
 * How an auth call to ThingSpace failed. The distinction drives the lockout guard:
 * - rejected: a 4xx answer (but 408 and 429); the platform counted a failed login
 * - oauth-invalid: the API gateway refused our bearer (401 fault), the login itself was never tried
 * - unavailable: a 5xx, 408 (request timeout) or 429 (throttled) answer, or no connection; the login was not counted
 * - unknown-outcome: sent but no answer (timeout, reset); it may have been counted
 * - session-invalid: a call made with the session token was refused for that token
 */
export type AuthFailureKind = 'rejected' | 'oauth-invalid' | 'unavailable' | 'unknown-outcome' | 'session-invalid'

/** A ThingSpace errorCode about the session token (`UnifiedWebService.REQUEST_FAILED.SessionToken.Expired`, ...). */
export function isSessionTokenCode (errorCode: string): boolean {
  return errorCode.includes('.SessionToken.')
}

export class UpstreamAuthError extends Error {
  override readonly name = 'UpstreamAuthError'

  constructor (
    readonly kind: AuthFailureKind,
    message: string,
    readonly statusCode?: number,
    /** ThingSpace errorCode or OAuth error, when the answer had one. */
    readonly upstreamCode?: string,
    /** The answer's Retry-After, in seconds from when it came, when it had a readable one. */
    readonly retryAfterSeconds?: number,
    /** When no answer came: the network or TLS error code (ECONNREFUSED, UNABLE_TO_VERIFY_LEAF_SIGNATURE...). */
    readonly networkCode?: string
  ) {
    super(message)
  }
}

export type UnavailableReason =
  | 'credentials-rejected' // lockout guard engaged: waiting for new credentials
  | 'oauth-client-rejected' // app key or secret refused by the token endpoint
  | 'upstream-unavailable' // login or token endpoint failing; backing off
  | 'state-unwritable' // the lockout count cannot be persisted, so no login is risked
  | 'fleet-store-unreachable' // fleet mode: the fleet's failure count cannot be checked, so no login is sent
  | 'fleet-key-mismatch' // fleet mode: the shared state was sealed with another M2M_PROXY_FLEET_KEY

/** The proxy cannot obtain tokens right now; clients get 503 with Retry-After. */
export class AuthUnavailableError extends Error {
  override readonly name = 'AuthUnavailableError'

  constructor (
    readonly reason: UnavailableReason,
    message: string,
    readonly retryAfterSeconds: number
  ) {
    super(message)
  }
}

/**
 * Why an auth call failed, for the log: codes only, never a message or body text (an upstream's body,
 * or an egress proxy's URL in a network error, could hold a secret).
 */
export interface FailureCause {
  /** The upstream's HTTP status, when it answered. */
  status?: number
  /** ThingSpace errorCode, gateway fault code or OAuth `error`, truncated. */
  errorCode?: string
  /** No answer: the connection's error code (ECONNREFUSED, ENOTFOUND, UND_ERR_HEADERS_TIMEOUT...). */
  networkError?: string
  /** No answer: the TLS error code (UNABLE_TO_VERIFY_LEAF_SIGNATURE, ERR_TLS_CERT_ALTNAME_INVALID...). */
  tlsError?: string
  /** No call was made: the proxy's own reason (backing off, guard engaged...). */
  reason?: UnavailableReason
}

/** Upstream error codes are kept to this many characters in logs and messages. */
export const MAX_UPSTREAM_CODE_LENGTH = 100

const TLS_CODE = /^(ERR_TLS_|ERR_SSL_|ERR_OSSL_|CERT_|UNABLE_TO_|DEPTH_ZERO_|SELF_SIGNED_|HOSTNAME_MISMATCH|EPROTO$)/

export function isTlsErrorCode (code: string): boolean {
  return TLS_CODE.test(code)
}

/** The cause of a failed auth call, from what it threw; undefined parts are left out. */
export function failureCause (error: unknown): FailureCause {
  if (error instanceof AuthUnavailableError) return { reason: error.reason }
  if (!(error instanceof UpstreamAuthError)) {
    const code = error instanceof Error && 'code' in error && typeof error.code === 'string' ? error.code : undefined
    return { networkError: code ?? (error instanceof Error ? error.name : 'unknown') }
  }
  const cause: FailureCause = {}
  if (error.statusCode !== undefined) cause.status = error.statusCode
  if (error.upstreamCode !== undefined) cause.errorCode = error.upstreamCode.slice(0, MAX_UPSTREAM_CODE_LENGTH)
  if (error.networkCode !== undefined) {
    if (isTlsErrorCode(error.networkCode)) cause.tlsError = error.networkCode
    else cause.networkError = error.networkCode
  }
  return cause
}
