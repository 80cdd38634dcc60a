// Lockout guard: counts consecutive logins that may have been rejected, on disk, so restarts cannot walk the account into ThingSpace's 5-failure lockout.

import fs from 'node:fs'
import path from 'node:path'
import { createHmac, randomBytes } from 'node:crypto'
import { writeFileAtomicSync } from '../fs/atomic-write.js'
import { ConfigError } from '../config/errors.js'
import { errorCode } from '../config/load.js'

export const LOGIN_GUARD_FILE = 'login-guard.json'

interface GuardState {
  version: 1
  /** Salted hash of user name and password: tells whether the credentials changed, reveals nothing usable. */
  credentialsId: string
  salt: string
  consecutiveRejections: number
  updatedAt: string
}

export interface AccountIdentity {
  username: string
  password: string
}

function credentialsId (identity: AccountIdentity, salt: string): string {
  return createHmac('sha256', salt).update(identity.username).update('\0').update(identity.password).digest('hex').slice(0, 32)
}

export class LoginGuard {
  private state: GuardState

  private constructor (
    private readonly file: string,
    readonly maxFailures: number,
    state: GuardState
  ) {
    this.state = state
  }

  /**
   * Reads the persisted count (creating the state directory and file when missing). A count kept
   * for other credentials is dropped: new credentials deserve a fresh try.
   */
  static open (stateDir: string, maxFailures: number, identity: AccountIdentity): LoginGuard {
    const file = path.join(stateDir, LOGIN_GUARD_FILE)
    let state: GuardState | undefined
    try {
      fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 })
      state = parseState(fs.readFileSync(file, 'utf8'), file)
    } catch (error) {
      if (error instanceof ConfigError) throw error
      if (errorCode(error) !== 'ENOENT') {
        throw new ConfigError('M2M_PROXY_STATE_DIR', `${file} cannot be read (${errorCode(error)})`)
      }
    }
    const salt = state?.salt ?? randomBytes(16).toString('hex')
    const guard = new LoginGuard(file, maxFailures, state ?? {
      version: 1,
      credentialsId: credentialsId(identity, salt),
      salt,
      consecutiveRejections: 0,
      updatedAt: new Date().toISOString()
    })
    guard.useCredentials(identity)
    try {
      guard.persist()
    } catch (error) {
      // Without a writable state directory the count would not survive a restart: refuse to run.
      throw new ConfigError('M2M_PROXY_STATE_DIR', `${stateDir} is not writable (${errorCode(error)}); the login failure count must survive restarts`)
    }
    return guard
  }

  get consecutiveRejections (): number {
    return this.state.consecutiveRejections
  }

  /** True once the limit is reached: no login may be sent until the credentials change. */
  get engaged (): boolean {
    return this.state.consecutiveRejections >= this.maxFailures
  }

  /** Counted before the login is sent, so a crash mid-login still counts it. */
  beginAttempt (): void {
    this.update(this.state.consecutiveRejections + 1)
  }

  /** The platform answered in a way that did not count a failure (5xx, no connection). */
  attemptNotCounted (): void {
    this.update(Math.max(0, this.state.consecutiveRejections - 1))
  }

  recordSuccess (): void {
    if (this.state.consecutiveRejections !== 0) this.update(0)
  }

  /** Releases the guard when the credentials differ from those the count was kept for. */
  useCredentials (identity: AccountIdentity): boolean {
    const id = credentialsId(identity, this.state.salt)
    if (id === this.state.credentialsId) return false
    this.state = { ...this.state, credentialsId: id, consecutiveRejections: 0 }
    this.persist()
    return true
  }

  private update (consecutiveRejections: number): void {
    this.state = { ...this.state, consecutiveRejections, updatedAt: new Date().toISOString() }
    this.persist()
  }

  private persist (): void {
    writeFileAtomicSync(this.file, JSON.stringify(this.state) + '\n')
  }
}

function parseState (json: string, file: string): GuardState {
  let parsed: unknown
  try {
    parsed = JSON.parse(json)
  } catch {
    parsed = undefined
  }
  const state = parsed as Partial<GuardState> | undefined
  if (state?.version !== 1 || typeof state.credentialsId !== 'string' || typeof state.salt !== 'string' ||
    !Number.isInteger(state.consecutiveRejections) || (state.consecutiveRejections ?? -1) < 0) {
    throw new ConfigError('M2M_PROXY_STATE_DIR', `${file} is corrupt; check in ThingSpace that the account is not locked, then delete the file`)
  }
  return state as GuardState
}
