// Lockout guard: counts consecutive logins that may have been rejected, on disk, so restarts cannot walk the account
// into ThingSpace's 5-failure lockout.

import fs from 'node:fs'
import path from 'node:path'
import { createHmac, randomBytes } from 'node:crypto'
import { writeFileAtomicSync } from '../fs/atomic-write.js'
import { refuseDanglingLink, refuseNewerFormat } from '../fs/state-file.js'
import { ConfigError } from '../config/errors.js'
import { errorCode } from '../errors.js'

export const LOGIN_GUARD_FILE = 'login-guard.json'
/** ThingSpace locks an account at 5 consecutive failed logins: whatever the credentials, never send a 5th. */
export const ACCOUNT_FAILURE_CEILING = 4

interface GuardState {
  version: 1
  salt: string
  /** Salted hashes: tell whether the credentials or the account changed, reveal nothing usable. */
  credentialsId: string
  accountId: string
  /** Consecutive possibly-failed logins with the current credentials. */
  consecutiveRejections: number
  /** The same for the account, across password changes: the platform only resets it on a success. */
  accountConsecutiveRejections: number
  /**
   * The counts of the other accounts used here that still have failures (by account id): going back to one of them
   * (a user name mistyped, then corrected) continues its count instead of starting afresh. Absent in files written
   * before it, which earlier versions still read.
   */
  otherAccounts?: Record<string, number>
  updatedAt: string
}

export interface AccountIdentity {
  username: string
  password: string
}

function hashOf (salt: string, ...parts: string[]): string {
  const hmac = createHmac('sha256', salt)
  for (const part of parts) hmac.update(part).update('\0')
  return hmac.digest('hex').slice(0, 32)
}

/**
 * The ids an account is counted under: its user name case-folded (whether ThingSpace tells `Alice` from `alice` is not
 * published, and counting them together is the safe side), and as written, the id of files written before.
 */
function accountIdsOf (salt: string, username: string): { id: string; asWritten: string } {
  return { id: hashOf(salt, username.toLowerCase()), asWritten: hashOf(salt, username) }
}

export class LoginGuard {
  private state: GuardState

  private constructor (
    readonly file: string,
    readonly maxFailures: number,
    state: GuardState
  ) {
    this.state = state
  }

  /**
   * Reads the persisted counts (creating the state directory and file when missing). The count kept
   * for other credentials is dropped, as new credentials deserve a fresh try; the account's count is
   * kept, also for an account used before and used again.
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
      refuseDanglingLink(file)
    }
    const salt = state?.salt ?? randomBytes(16).toString('hex')
    const guard = new LoginGuard(
      file,
      maxFailures,
      state ?? {
        version: 1,
        salt,
        credentialsId: hashOf(salt, identity.username, identity.password),
        accountId: accountIdsOf(salt, identity.username).id,
        consecutiveRejections: 0,
        accountConsecutiveRejections: 0,
        updatedAt: new Date().toISOString()
      }
    )
    try {
      guard.useCredentials(identity)
      guard.persist()
    } catch (error) {
      // Without a writable state directory the count would not survive a restart: refuse to run.
      throw new ConfigError(
        'M2M_PROXY_STATE_DIR',
        `${stateDir} is not writable (${errorCode(error)}); the login failure count must survive restarts`
      )
    }
    return guard
  }

  get consecutiveRejections (): number {
    return this.state.consecutiveRejections
  }

  get accountConsecutiveRejections (): number {
    return this.state.accountConsecutiveRejections
  }

  /**
   * True once a limit is reached: no login may be sent until the credentials change (or, at the ceiling, an operator
   * resets the count).
   */
  get engaged (): boolean {
    return this.state.consecutiveRejections >= this.maxFailures || this.atAccountCeiling
  }

  /** Rejected logins that may still be sent: the credentials' limit or the account's ceiling, whichever is closer. */
  get attemptsLeft (): number {
    if (this.engaged) return 0
    return Math.min(
      this.maxFailures - this.state.consecutiveRejections,
      ACCOUNT_FAILURE_CEILING - this.state.accountConsecutiveRejections
    )
  }

  /** So many failures for the account that even new credentials must not be tried. */
  get atAccountCeiling (): boolean {
    return this.state.accountConsecutiveRejections >= ACCOUNT_FAILURE_CEILING
  }

  /**
   * What an operator must know at the ceiling: ThingSpace's own count is likely one short of its lockout, so deleting
   * this count is safe only once the password has been proved (docs/operations.md, section 1).
   */
  get accountCeilingMessage (): string {
    return (
      `${this.state.accountConsecutiveRejections} consecutive failed logins for this account: one more, from anywhere ` +
      'and with any credentials, may lock it in ThingSpace (at 5), so logins stay paused. Prove the password first ' +
      "(a successful login with it elsewhere resets ThingSpace's count), put it in the credentials file, " +
      `then delete ${this.file} and restart`
    )
  }

  /** Counted before the login is sent, so a crash mid-login still counts it. */
  beginAttempt (): void {
    this.update(this.state.consecutiveRejections + 1, this.state.accountConsecutiveRejections + 1)
  }

  /** The platform answered in a way that did not count a failure (5xx, no connection). */
  attemptNotCounted (): void {
    this.update(
      Math.max(0, this.state.consecutiveRejections - 1),
      Math.max(0, this.state.accountConsecutiveRejections - 1)
    )
  }

  recordSuccess (): void {
    if (this.state.consecutiveRejections !== 0 || this.state.accountConsecutiveRejections !== 0) this.update(0, 0)
  }

  /**
   * Releases the guard when the credentials differ from those the count was kept for; true when they did. The
   * account's count goes with the account: another user name takes up its own count where it was left.
   */
  useCredentials (identity: AccountIdentity): boolean {
    const credentialsId = hashOf(this.state.salt, identity.username, identity.password)
    if (credentialsId === this.state.credentialsId) return false
    const { id, asWritten } = accountIdsOf(this.state.salt, identity.username)
    let accountConsecutiveRejections = this.state.accountConsecutiveRejections
    const otherAccounts = { ...this.state.otherAccounts }
    if (this.state.accountId !== id && this.state.accountId !== asWritten) {
      if (accountConsecutiveRejections > 0) otherAccounts[this.state.accountId] = accountConsecutiveRejections
      accountConsecutiveRejections = Math.max(otherAccounts[id] ?? 0, otherAccounts[asWritten] ?? 0)
      delete otherAccounts[id]
      delete otherAccounts[asWritten]
    }
    this.commit({
      ...this.state,
      credentialsId,
      accountId: id,
      consecutiveRejections: 0,
      accountConsecutiveRejections,
      otherAccounts
    })
    return true
  }

  private update (consecutiveRejections: number, accountConsecutiveRejections: number): void {
    this.commit({
      ...this.state,
      consecutiveRejections,
      accountConsecutiveRejections,
      updatedAt: new Date().toISOString()
    })
  }

  /**
   * Written first, then in force: a write that fails (a full or read-only disk) changes nothing, so that an attempt
   * never sent is never counted as a failure.
   */
  private commit (state: GuardState): void {
    writeFileAtomicSync(this.file, JSON.stringify(state) + '\n')
    this.state = state
  }

  private persist (): void {
    writeFileAtomicSync(this.file, JSON.stringify(this.state) + '\n')
  }
}

function isCount (value: unknown): boolean {
  return Number.isInteger(value) && (value as number) >= 0
}

function isCountById (value: unknown): boolean {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && Object.values(value).every(isCount)
}

function parseState (json: string, file: string): GuardState {
  let parsed: unknown
  try {
    parsed = JSON.parse(json)
  } catch {
    parsed = undefined
  }
  refuseNewerFormat(parsed, 1, file)
  const state = parsed as Partial<GuardState> | undefined
  if (
    state?.version !== 1 ||
    typeof state.credentialsId !== 'string' ||
    typeof state.accountId !== 'string' ||
    typeof state.salt !== 'string' ||
    !isCount(state.consecutiveRejections) ||
    !isCount(state.accountConsecutiveRejections) ||
    (state.otherAccounts !== undefined && !isCountById(state.otherAccounts))
  ) {
    throw new ConfigError(
      'M2M_PROXY_STATE_DIR',
      `${file} is corrupt; check in ThingSpace that the account is not locked, then delete the file`
    )
  }
  return state as GuardState
}
