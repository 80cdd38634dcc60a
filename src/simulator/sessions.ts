// VZ-M2M session tokens with ThingSpace's sliding idle expiry; expired tokens stay known so they answer "Expired".
import { randomUUID } from 'node:crypto'

export type SessionCheck = 'valid' | 'expired' | 'invalid'

interface SessionRecord {
  lastUsedMs: number
  expired: boolean
}

/** Past this many remembered tokens, login forgets expired ones (they then answer "Invalid" rather than "Expired"). */
const MAX_REMEMBERED_SESSIONS = 10_000
const MS_PER_SECOND = 1000

export class SessionStore {
  readonly #idleMs: number
  readonly #now: () => number
  readonly #sessions = new Map<string, SessionRecord>()

  constructor (idleSeconds: number, now: () => number) {
    this.#idleMs = idleSeconds * MS_PER_SECOND
    this.#now = now
  }

  create (): string {
    if (this.#sessions.size >= MAX_REMEMBERED_SESSIONS) this.#forgetExpired()
    const token = randomUUID()
    this.#sessions.set(token, { lastUsedMs: this.#now(), expired: false })
    return token
  }

  /** Checks a token presented with a request; a valid one counts as used now (the idle clock restarts). */
  use (token: string | undefined): SessionCheck {
    const record = token === undefined ? undefined : this.#sessions.get(token)
    if (record === undefined) return 'invalid'
    const nowMs = this.#now()
    if (this.#hasExpired(record, nowMs)) {
      record.expired = true
      return 'expired'
    }
    record.lastUsedMs = nowMs
    return 'valid'
  }

  /** Forgets the token: from now on it answers "Invalid". */
  end (token: string): void {
    this.#sessions.delete(token)
  }

  /** Forgets a live token (it answers "Invalid" from now on); false when it was not live. */
  invalidate (token: string): boolean {
    const record = this.#sessions.get(token)
    if (record === undefined || this.#hasExpired(record, this.#now())) return false
    this.#sessions.delete(token)
    return true
  }

  activeTokens (): string[] {
    const nowMs = this.#now()
    return [...this.#sessions].filter(([, record]) => !this.#hasExpired(record, nowMs)).map(([token]) => token)
  }

  expireAll (): void {
    for (const record of this.#sessions.values()) record.expired = true
  }

  #hasExpired (record: SessionRecord, nowMs: number): boolean {
    return record.expired || nowMs - record.lastUsedMs > this.#idleMs
  }

  #forgetExpired (): void {
    const nowMs = this.#now()
    for (const [token, record] of this.#sessions) {
      if (this.#hasExpired(record, nowMs)) this.#sessions.delete(token)
    }
  }
}
