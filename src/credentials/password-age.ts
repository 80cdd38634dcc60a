// When the password in force was changed, kept in the state directory: the age that scheduled rotation and the age
// gauge read.

import fs from 'node:fs'
import path from 'node:path'
import { createHmac, randomBytes } from 'node:crypto'
import { writeFileAtomicSync } from '../fs/atomic-write.js'
import { errorCode } from '../errors.js'

export const PASSWORD_AGE_FILE = 'password-age.json'

/**
 * How the change time was learnt: `first-seen` (this password was met without knowing when it was
 * set: its age is counted from then), `rotated` (this proxy rotated it), `changed` (the credentials
 * file changed), `fleet` (the fleet's password generation says so).
 */
export type PasswordAgeSource = 'first-seen' | 'rotated' | 'changed' | 'fleet'

interface AgeState {
  version: 1
  salt: string
  /** Salted hash of the password: tells a changed password, reveals nothing usable. */
  passwordId: string
  changedAt: number
  source: PasswordAgeSource
}

function hashOf (salt: string, password: string): string {
  return createHmac('sha256', salt).update(password).digest('hex').slice(0, 32)
}

function parse (json: string): AgeState | undefined {
  try {
    const state = JSON.parse(json) as Partial<AgeState>
    if (
      state.version !== 1 ||
      typeof state.salt !== 'string' ||
      typeof state.passwordId !== 'string' ||
      typeof state.changedAt !== 'number' ||
      !Number.isFinite(state.changedAt) ||
      typeof state.source !== 'string'
    ) { return undefined }
    return state as AgeState
  } catch {
    return undefined
  }
}

export class PasswordAge {
  private state: AgeState

  private constructor (
    readonly file: string,
    state: AgeState,
    private readonly onWarning: (message: string) => void
  ) {
    this.state = state
  }

  /**
   * Reads the record kept for the password in force; a missing, corrupt or other password's record is
   * replaced by one counted from `now` (`first-seen`). A write failure is a warning, not a stop: the
   * age is then counted from this start.
   */
  static open (
    stateDir: string,
    password: string,
    now: number,
    onWarning: (message: string) => void = () => {}
  ): PasswordAge {
    const file = path.join(stateDir, PASSWORD_AGE_FILE)
    let stored: AgeState | undefined
    let text: string | undefined
    try {
      text = fs.readFileSync(file, 'utf8')
    } catch {
      text = undefined // missing (or unreadable: the write below says so)
    }
    if (text !== undefined) {
      stored = parse(text)
      // Only an estimate for the rotation's schedule, so it starts again; but not without a word.
      if (stored === undefined) {
        onWarning(`${file} could not be read as a password age record: the password's age counts from now (first seen)`)
      }
    }
    const salt = stored?.salt ?? randomBytes(16).toString('hex')
    const age = new PasswordAge(
      file,
      stored ?? { version: 1, salt, passwordId: '', changedAt: now, source: 'first-seen' },
      onWarning
    )
    age.observe(password, now)
    return age
  }

  get changedAt (): number {
    return this.state.changedAt
  }

  get source (): PasswordAgeSource {
    return this.state.source
  }

  /**
   * The password in force is `password`: if the record is about another one, a new record starts,
   * at `changedAt` when known (`source`), else at `now` as `first-seen`. Returns true when it changed.
   */
  observe (password: string, now: number, changedAt?: number, source: PasswordAgeSource = 'changed'): boolean {
    const passwordId = hashOf(this.state.salt, password)
    if (passwordId === this.state.passwordId) {
      // The same password: a more precise time from the fleet (older than first sight) is taken.
      if (changedAt === undefined || changedAt === this.state.changedAt || source !== 'fleet') return false
    }
    this.state =
      changedAt === undefined
        ? { ...this.state, passwordId, changedAt: now, source: 'first-seen' }
        : { ...this.state, passwordId, changedAt, source }
    this.persist()
    return true
  }

  private persist (): void {
    try {
      writeFileAtomicSync(this.file, JSON.stringify(this.state) + '\n')
    } catch (error) {
      this.onWarning(
        `the password change time cannot be written to ${this.file} (${errorCode(error)}); the password age restarts from now at the next start`
      )
    }
  }
}
