// Errors of the session lifecycle: what went wrong talking to the auth endpoints, and why the proxy cannot authenticate now.

/**
 * How an auth call to ThingSpace failed. The distinction drives the lockout guard:
 * - rejected: a 4xx answer (but 408 and 429); the platform counted a failed login
 * - oauth-invalid: the API gateway refused our bearer (401 fault), the login itself was never tried
 * - unavailable: a 5xx, 408 (request timeout) or 429 (throttled) answer, or no connection; the login was not counted
 * - unknown-outcome: sent but no answer (timeout, reset); it may have been counted
 * - session-invalid: a call made with the session token was refused for that token
 */
export type AuthFailureKind = 'rejected' | 'oauth-invalid' | 'unavailable' | 'unknown-outcome' | 'session-invalid'

export class UpstreamAuthError extends Error {
  override readonly name = 'UpstreamAuthError'

  constructor (
    readonly kind: AuthFailureKind,
    message: string,
    readonly statusCode?: number,
    /** ThingSpace errorCode or OAuth error, when the answer had one. */
    readonly upstreamCode?: string,
    /** The answer's Retry-After, in seconds from when it came, when it had a readable one. */
    readonly retryAfterSeconds?: number
  ) {
    super(message)
  }
}

export type UnavailableReason =
  | 'credentials-rejected' // lockout guard engaged: waiting for new credentials
  | 'oauth-client-rejected' // app key or secret refused by the token endpoint
  | 'upstream-unavailable' // login or token endpoint failing; backing off
  | 'state-unwritable' // the lockout count cannot be persisted, so no login is risked

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
