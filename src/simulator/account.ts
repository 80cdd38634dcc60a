// The simulated UWS account: credential checks, ThingSpace's lockout after consecutive failures, password reset.
import { generatePassword, secretsEqual } from './secrets.js'
import type { SimulatorStats } from './stats.js'

export type LoginOutcome = 'accepted' | 'wrong-credentials' | 'locked'

export class SimulatedAccount {
  readonly #username: string
  #password: string
  readonly #lockoutThreshold: number
  readonly #stats: SimulatorStats
  #locked = false

  constructor (username: string, password: string, lockoutThreshold: number, stats: SimulatorStats) {
    this.#username = username
    this.#password = password
    this.#lockoutThreshold = lockoutThreshold
    this.#stats = stats
  }

  get locked (): boolean {
    return this.#locked
  }

  get password (): string {
    return this.#password
  }

  /** Once locked, even the right password is refused (and counts as another failure) until unlock(). */
  login (username: string, password: string): LoginOutcome {
    if (this.#locked) {
      this.#recordFailure()
      return 'locked'
    }
    // Both comparisons always run, so timing does not tell which one failed.
    const usernameMatches = secretsEqual(username, this.#username)
    const passwordMatches = secretsEqual(password, this.#password)
    if (!(usernameMatches && passwordMatches)) {
      this.#recordFailure()
      if (this.#stats.consecutiveFailedLogins >= this.#lockoutThreshold) this.#locked = true
      return 'wrong-credentials'
    }
    this.#stats.logins++
    this.#stats.consecutiveFailedLogins = 0
    return 'accepted'
  }

  /** Returns the generated new password (effective immediately), or undefined when oldPassword is wrong. */
  resetPassword (oldPassword: string): string | undefined {
    if (!secretsEqual(oldPassword, this.#password)) return undefined
    this.#password = generatePassword(this.#password)
    this.#stats.passwordResets++
    return this.#password
  }

  unlock (): void {
    this.#locked = false
    this.#stats.consecutiveFailedLogins = 0
  }

  #recordFailure (): void {
    this.#stats.failedLogins++
    this.#stats.consecutiveFailedLogins++
  }
}
