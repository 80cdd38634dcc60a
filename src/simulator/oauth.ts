// The simulated OAuth2 client-credentials issuer: one token at a time, fixed lifetime from first issue.
import { randomUUID } from 'node:crypto'

export interface IssuedOAuthToken {
  accessToken: string
  /** Whole seconds left, at least 1. */
  expiresInSeconds: number
  /** True when this call minted a new token rather than returning the current one. */
  minted: boolean
}

interface CurrentToken {
  accessToken: string
  expiresAtMs: number
}

const MS_PER_SECOND = 1000

export class OAuthTokenIssuer {
  readonly #lifetimeMs: number
  readonly #now: () => number
  #current: CurrentToken | undefined

  constructor (lifetimeSeconds: number, now: () => number) {
    this.#lifetimeMs = lifetimeSeconds * MS_PER_SECOND
    this.#now = now
  }

  /** Like ThingSpace: asking again within the lifetime returns the same token with the time left. */
  issue (): IssuedOAuthToken {
    const nowMs = this.#now()
    let minted = false
    if (this.#currentAt(nowMs) === undefined) {
      this.#current = { accessToken: randomUUID(), expiresAtMs: nowMs + this.#lifetimeMs }
      minted = true
    }
    const current = this.#current as CurrentToken
    const expiresInSeconds = Math.max(1, Math.floor((current.expiresAtMs - nowMs) / MS_PER_SECOND))
    return { accessToken: current.accessToken, expiresInSeconds, minted }
  }

  isValid (accessToken: string): boolean {
    return this.#currentAt(this.#now())?.accessToken === accessToken
  }

  /** The token the gateway accepts right now, if any. */
  currentToken (): string | undefined {
    return this.#currentAt(this.#now())?.accessToken
  }

  /** The current token is rejected from now on; the next issue() mints a new one. */
  revoke (): void {
    this.#current = undefined
  }

  #currentAt (nowMs: number): CurrentToken | undefined {
    return this.#current !== undefined && nowMs < this.#current.expiresAtMs ? this.#current : undefined
  }
}
