// HTTP calls to ThingSpace's auth endpoints (OAuth token, session login and logout), classified for the lockout guard.

import type { Dispatcher } from 'undici'
import { isSessionTokenCode, MAX_UPSTREAM_CODE_LENGTH, UpstreamAuthError } from './errors.js'
import { failedBeforeSending } from '../errors.js'

export const OAUTH_TOKEN_PATH = '/api/ts/v1/oauth2/token'
export const LOGIN_PATH = '/api/m2m/v1/session/login'
export const LOGOUT_PATH = '/api/m2m/v1/session/logout'
export const PASSWORD_RESET_PATH = '/api/m2m/v1/session/password/actions/reset'
const MAX_AUTH_RESPONSE_BYTES = 64 * 1024

export interface OAuthGrant {
  accessToken: string
  expiresInSeconds: number
}

/** What the session manager needs from ThingSpace; tests substitute a fake. */
export interface ThingSpaceAuthApi {
  fetchOAuthToken: (clientId: string, clientSecret: string) => Promise<OAuthGrant>
  login: (oauthToken: string, username: string, password: string) => Promise<string>
  logout: (oauthToken: string, sessionToken: string) => Promise<void>
  /** ThingSpace generates the new password; it is effective at once. */
  resetPassword: (oauthToken: string, sessionToken: string, oldPassword: string) => Promise<string>
}

interface JsonAnswer {
  statusCode: number
  body: Record<string, unknown> | undefined
}

/** Answers that say nothing of the credentials: the platform did not evaluate the call. */
const NOT_EVALUATED_STATUSES = new Set([408, 429]) // request timeout, throttled

/**
 * Seconds to wait from a Retry-After header (delay-seconds or an HTTP date), or undefined when absent or unreadable.
 */
export function retryAfterSecondsOf (header: string | string[] | undefined, nowMs: number): number | undefined {
  const value = (Array.isArray(header) ? header[0] : header)?.trim()
  if (value === undefined || value === '') return undefined
  if (/^\d+$/.test(value)) return Number(value)
  // Date.parse reads "-5" or "2" as years: an HTTP date has a day or month name.
  const dateMs = /[a-z]/i.test(value) ? Date.parse(value) : NaN
  if (Number.isNaN(dateMs)) return undefined
  return Math.max(0, Math.ceil((dateMs - nowMs) / 1000))
}

/**
 * The answer's error code only (never its message: a body may echo what was sent), truncated. A code is upstream text
 * too: each of the call's `secrets` in it (as sent, or escaped in the JSON body) is blotted out before it is cut, so
 * that not even a part of one reaches a log line, an event or an answer.
 */
function describeBody (body: Record<string, unknown> | undefined, secrets: readonly string[]): string | undefined {
  const code = body?.errorCode ?? body?.error ?? (body?.fault as Record<string, unknown> | undefined)?.code
  if (typeof code !== 'string') return undefined
  const spellings = secrets.flatMap((secret) => [secret, JSON.stringify(secret).slice(1, -1)])
  const blotted = spellings
    .filter((spelling) => spelling !== '')
    .sort((a, b) => b.length - a.length)
    .reduce((text, spelling) => text.split(spelling).join('[redacted]'), code)
  return blotted.slice(0, MAX_UPSTREAM_CODE_LENGTH)
}

/** For the log: the code of a network or TLS error, or of its cause (an egress proxy's agent may wrap it). */
function networkCodeOf (error: unknown): string {
  for (let current = error, depth = 0; current instanceof Error && depth < 4; current = current.cause, depth++) {
    if ('code' in current && typeof current.code === 'string' && current.code !== '') return current.code
  }
  return error instanceof Error ? error.name : 'unknown'
}

export class ThingSpaceAuthClient implements ThingSpaceAuthApi {
  constructor (
    private readonly origin: string,
    private readonly dispatcher: Dispatcher,
    private readonly timeoutMs: number
  ) {}

  async fetchOAuthToken (clientId: string, clientSecret: string): Promise<OAuthGrant> {
    const basic = Buffer.from(`${clientId}:${clientSecret}`).toString('base64')
    const answer = await this.call(
      'POST',
      OAUTH_TOKEN_PATH,
      {
        authorization: `Basic ${basic}`,
        'content-type': 'application/x-www-form-urlencoded',
        accept: 'application/json'
      },
      'grant_type=client_credentials',
      'OAuth token request',
      [clientSecret, basic, `${clientId}:${clientSecret}`]
    )
    const accessToken = answer.body?.access_token
    const expiresIn = Number(answer.body?.expires_in)
    if (typeof accessToken !== 'string' || accessToken === '' || !Number.isFinite(expiresIn)) {
      throw new UpstreamAuthError(
        'unavailable',
        'OAuth token response lacks access_token or expires_in',
        answer.statusCode
      )
    }
    return { accessToken, expiresInSeconds: expiresIn }
  }

  async login (oauthToken: string, username: string, password: string): Promise<string> {
    let answer: JsonAnswer
    try {
      answer = await this.call(
        'POST',
        LOGIN_PATH,
        {
          authorization: `Bearer ${oauthToken}`,
          'content-type': 'application/json',
          accept: 'application/json'
        },
        JSON.stringify({ username, password }),
        'session login',
        [password, oauthToken]
      )
    } catch (error) {
      // A login sends no session token, so a ".SessionToken." errorCode cannot mean one was refused: whatever its
      // errorCode, a 4xx other than 408/429 may be a failed login at ThingSpace, and must count toward the lockout.
      if (error instanceof UpstreamAuthError && error.kind === 'session-invalid') {
        throw new UpstreamAuthError(
          'rejected',
          error.message,
          error.statusCode,
          error.upstreamCode,
          error.retryAfterSeconds
        )
      }
      throw error
    }
    const sessionToken = answer.body?.sessionToken
    if (typeof sessionToken !== 'string' || sessionToken === '') {
      throw new UpstreamAuthError('unavailable', 'session login response lacks sessionToken', answer.statusCode)
    }
    return sessionToken
  }

  async logout (oauthToken: string, sessionToken: string): Promise<void> {
    await this.call(
      'POST',
      LOGOUT_PATH,
      {
        authorization: `Bearer ${oauthToken}`,
        'vz-m2m-token': sessionToken,
        accept: 'application/json'
      },
      undefined,
      'session logout',
      [oauthToken, sessionToken]
    )
  }

  async resetPassword (oauthToken: string, sessionToken: string, oldPassword: string): Promise<string> {
    const answer = await this.call(
      'PUT',
      PASSWORD_RESET_PATH,
      {
        authorization: `Bearer ${oauthToken}`,
        'vz-m2m-token': sessionToken,
        'content-type': 'application/json',
        accept: 'application/json'
      },
      JSON.stringify({ oldPassword }),
      'password reset',
      [oldPassword, oauthToken, sessionToken]
    )
    const newPassword = answer.body?.newPassword
    if (typeof newPassword !== 'string' || newPassword === '') {
      // The reset may have happened: say so, the operator must check the account.
      throw new UpstreamAuthError('unknown-outcome', 'password reset answered without newPassword', answer.statusCode)
    }
    return newPassword
  }

  private async call (
    method: 'POST' | 'PUT',
    path: string,
    headers: Record<string, string>,
    body: string | undefined,
    what: string,
    /** What this call sends that must not come back in a log line: taken out of the answer's error code. */
    secrets: readonly string[]
  ): Promise<JsonAnswer> {
    let response: Dispatcher.ResponseData
    try {
      response = await this.dispatcher.request({
        origin: this.origin,
        path,
        method,
        headers,
        body,
        headersTimeout: this.timeoutMs,
        bodyTimeout: this.timeoutMs
      })
    } catch (error) {
      const code = error instanceof Error && 'code' in error ? String(error.code) : 'unknown'
      // Failed before any byte reached the server: the platform cannot have counted it.
      const kind = failedBeforeSending(code) ? 'unavailable' : 'unknown-outcome'
      // The host, and where it comes from: a typo in the setting and a network problem read differently.
      throw new UpstreamAuthError(
        kind,
        `${what} failed: ${code} (ThingSpace at ${new URL(this.origin).host}, M2M_PROXY_UPSTREAM)`,
        undefined,
        undefined,
        undefined,
        networkCodeOf(error)
      )
    }
    let answerBody: Record<string, unknown> | undefined
    try {
      answerBody = await readJsonBody(response.body)
    } catch (error) {
      const code = error instanceof Error && 'code' in error ? String(error.code) : 'unknown'
      throw new UpstreamAuthError(
        'unknown-outcome',
        `${what} answer was cut off: ${code}`,
        response.statusCode,
        undefined,
        undefined,
        networkCodeOf(error)
      )
    }
    const answer = { statusCode: response.statusCode, body: answerBody }
    if (answer.statusCode >= 200 && answer.statusCode < 300) return answer
    const upstreamCode = describeBody(answer.body, secrets)
    const detail = `${what} answered ${answer.statusCode}${upstreamCode === undefined ? '' : ` ${upstreamCode}`}`
    if (answer.statusCode === 401 && answer.body?.fault !== undefined) {
      // The API gateway refused the bearer token: the request never reached the session service.
      throw new UpstreamAuthError('oauth-invalid', detail, answer.statusCode, upstreamCode)
    }
    // A Retry-After is an HTTP date on the wall clock, hence Date.now(): the result is a duration.
    const retryAfterSeconds = retryAfterSecondsOf(response.headers['retry-after'], Date.now())
    if (NOT_EVALUATED_STATUSES.has(answer.statusCode)) {
      throw new UpstreamAuthError('unavailable', detail, answer.statusCode, upstreamCode, retryAfterSeconds)
    }
    if (upstreamCode !== undefined && isSessionTokenCode(upstreamCode)) {
      throw new UpstreamAuthError('session-invalid', detail, answer.statusCode, upstreamCode)
    }
    if (answer.statusCode >= 400 && answer.statusCode < 500) {
      throw new UpstreamAuthError('rejected', detail, answer.statusCode, upstreamCode, retryAfterSeconds)
    }
    throw new UpstreamAuthError('unavailable', detail, answer.statusCode, upstreamCode, retryAfterSeconds)
  }
}

async function readJsonBody (body: Dispatcher.ResponseData['body']): Promise<Record<string, unknown> | undefined> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of body) {
    size += (chunk as Buffer).length
    if (size > MAX_AUTH_RESPONSE_BYTES) {
      body.destroy()
      return undefined
    }
    chunks.push(chunk as Buffer)
  }
  try {
    const parsed: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'))
    return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)
      ? (parsed as Record<string, unknown>)
      : undefined
  } catch {
    return undefined
  }
}
