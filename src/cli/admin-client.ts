// The CLI's side of the admin API: one request, its JSON answer, and a clear error when nothing answers.

import { messageOf } from '../errors.js'

export interface AdminAnswer {
  status: number
  /** The parsed JSON body; the text when it is not JSON. */
  body: unknown
}

/** Nothing answered at the admin address (refused, timed out, not HTTP): exit code 2 for scripts. */
export class AdminUnreachableError extends Error {
  override readonly name = 'AdminUnreachableError'
}

export interface AdminClientOptions {
  url: string
  token: string | undefined
  timeoutMs: number
}

export class AdminClient {
  constructor (private readonly options: AdminClientOptions) {}

  get url (): string {
    return this.options.url
  }

  get hasToken (): boolean {
    return this.options.token !== undefined
  }

  async request (method: 'GET' | 'POST' | 'DELETE', path: string, json?: unknown): Promise<AdminAnswer> {
    const headers: Record<string, string> = { accept: 'application/json' }
    if (this.options.token !== undefined) headers.authorization = `Bearer ${this.options.token}`
    if (json !== undefined) headers['content-type'] = 'application/json'
    let response: Response
    let text: string
    try {
      response = await fetch(`${this.options.url}${path}`, {
        method,
        headers,
        ...(json === undefined ? {} : { body: JSON.stringify(json) }),
        signal: AbortSignal.timeout(this.options.timeoutMs)
      })
      text = await response.text()
    } catch (error) {
      const cause = causeOf(error)
      // An action sent but not answered in time (a slow rotation) may have happened all the same.
      const outcome =
        method !== 'GET' && cause === 'timed out'
          ? '; the action may have been carried out all the same: check with "m2m-session-proxy status"'
          : ''
      throw new AdminUnreachableError(`no answer from the admin listener at ${this.options.url}: ${cause}${outcome}`)
    }
    let body: unknown = text
    try {
      body = JSON.parse(text)
    } catch {
      // kept as text: a proxy in front, or not this program at all
    }
    return { status: response.status, body }
  }
}

/** undici's fetch hides the system error (ECONNREFUSED, ...) in `cause`. */
function causeOf (error: unknown): string {
  if (error instanceof Error && error.name === 'TimeoutError') return 'timed out'
  const cause = error instanceof Error ? (error.cause as { code?: unknown } | undefined) : undefined
  if (typeof cause?.code === 'string') return cause.code
  return messageOf(cause ?? error)
}
