// Operator actions on the credentials, one at a time: password rotation (saved before anything else) and reload.

import type { Clock } from '../clock.js'
import type { ThingSpaceAuthApi } from '../session/auth-client.js'
import { AuthUnavailableError, failureCause, UpstreamAuthError } from '../session/errors.js'
import type { SessionManager, SessionSnapshot } from '../session/session-manager.js'
import { errorCode, messageOf } from '../errors.js'
import type { FleetLock } from '../session/shared-session.js'
import type { FleetRotation } from './fleet-passwords.js'
import { credentialsWhitespace, type Credentials } from './credentials.js'
import { sameCredentials, type CredentialsFile } from './credentials-file.js'
import type { PasswordAge, PasswordAgeSource } from './password-age.js'
import { ignoreCredentialsEvents, type PublishCredentialsEvent } from './events.js'

export type OperationErrorKind =
  | 'busy'
  | 'not-rewritable'
  | 'upstream-failed'
  | 'not-saved'
  | 'unchanged-while-rejected'
  | 'fleet-unavailable'
  | 'credentials-rejected'

/** An operator action that could not be carried out; the message never holds a secret. */
export class OperationError extends Error {
  override readonly name = 'OperationError'
  /** `logged`: the operation already logged it (the file watcher then does not log it twice). */
  constructor (
    readonly kind: OperationErrorKind,
    message: string,
    readonly logged = false
  ) {
    super(message)
  }
}

export interface RotationResult {
  rotated: true
  at: string
  /** A login with the new password succeeded. */
  verified: boolean
  /** Fleet mode: the password generation published (undefined in single-process mode). */
  generation?: number
}

/** What GET /admin/session says about the password (never the password). */
export interface PasswordStatus {
  /** Fleet mode: the generation this replica holds (null before it reached the store); null in single-process mode. */
  generation: number | null
  /** When the password in force was changed (or first seen, see changedAtSource). */
  changedAt: string | null
  changedAtSource: PasswordAgeSource | 'fleet' | null
  ageSeconds: number | null
  /** False when the password in force is held in memory only: the credentials file could not be written. */
  savedToFile: boolean
  /** Fleet mode: false while the password this replica holds could not be published to the store yet. */
  published: boolean | null
  /** M2M_PROXY_PASSWORD_ROTATION_DAYS; 0: off. */
  rotationDays: number
  /** When scheduled rotation is due (null when off). */
  rotationDueAt: string | null
}

export class CredentialOperations {
  private busy: string | undefined
  private running: Promise<unknown> | undefined
  /** Single-process mode: the password in force could not be written to the credentials file. */
  private unsaved = false

  constructor (
    private readonly deps: {
      session: SessionManager
      api: ThingSpaceAuthApi
      file: CredentialsFile
      clock: Clock
      /** Where operations report (src/events.ts binds it to the credentials channel). */
      publish?: PublishCredentialsEvent
      /** The password's change time in the state directory (single-process mode's age; the fleet's generation 1). */
      passwordAge?: PasswordAge
      /** Fleet mode; absent: single-process mode, unchanged. */
      fleet?: FleetRotation
      /** M2M_PROXY_PASSWORD_ROTATION_DAYS, for the status (0: off). */
      rotationDays?: number
    }
  ) {}

  private get publish (): PublishCredentialsEvent {
    return this.deps.publish ?? ignoreCredentialsEvents
  }

  get inProgress (): string | undefined {
    return this.busy
  }

  /**
   * PUT /session/password/actions/reset with the current password. ThingSpace generates the new one and
   * it is effective at once, so it is written to the credentials file before anything else happens.
   * Fleet mode: one rotation at a time fleet-wide (`busy` elsewhere), and the new password is published
   * as the next generation before any replica can log in again.
   */
  async rotatePassword (): Promise<RotationResult> {
    const result = await this.exclusive('password rotation', async () => (await this.rotate(undefined)) as RotationResult)
    // Logged here, not only by the caller's request: an operator who hung up before the answer still gets a record.
    this.publish({
      type: 'info',
      message:
        `password rotated on an operator's request${result.generation === undefined ? '' : ` (fleet generation ${result.generation})`}` +
        (result.verified ? '' : ', but the login with the new password failed')
    })
    return result
  }

  /**
   * Scheduled rotation: rotates only if the password is at least `maxAgeMs` old, as read after taking
   * the rotation lock (fleet mode: the fleet's generation, so that exactly one replica rotates).
   * Undefined when it was not due.
   */
  async rotateIfDue (maxAgeMs: number): Promise<RotationResult | undefined> {
    return await this.exclusive('password rotation', async () => await this.rotate(maxAgeMs))
  }

  /**
   * When the password in force was changed: the fleet's generation in fleet mode once known, else the state directory's
   * record.
   */
  passwordChangedAt (): number | undefined {
    return this.deps.fleet?.sync.status().changedAt ?? this.deps.passwordAge?.changedAt
  }

  passwordStatus (): PasswordStatus {
    const { fleet, passwordAge, clock } = this.deps
    const sync = fleet?.sync.status()
    const changedAt = this.passwordChangedAt()
    const rotationDays = this.deps.rotationDays ?? 0
    const iso = (ms: number | undefined): string | null => (ms === undefined ? null : new Date(ms).toISOString())
    return {
      generation: sync?.generation ?? null,
      changedAt: iso(changedAt),
      changedAtSource: sync?.changedAt != null ? 'fleet' : (passwordAge?.source ?? null),
      ageSeconds: changedAt === undefined ? null : Math.max(0, Math.round((clock.now() - changedAt) / 1000)),
      savedToFile: sync?.savedToFile ?? !this.unsaved,
      published: sync?.published ?? null,
      rotationDays,
      rotationDueAt: rotationDays === 0 || changedAt === undefined ? null : iso(changedAt + rotationDays * DAY_MS)
    }
  }

  private async rotate (maxAgeMs: number | undefined): Promise<RotationResult | undefined> {
    const { session, file } = this.deps
    const problem = file.rewriteProblem()
    if (problem !== undefined) {
      throw new OperationError('not-rewritable', `rotation refused before contacting ThingSpace: ${problem}`)
    }
    if (this.deps.fleet !== undefined) return await this.rotateInFleet(this.deps.fleet, maxAgeMs)
    if (maxAgeMs !== undefined && !this.due(maxAgeMs)) return undefined
    const { rotated, at } = await this.resetHoldingLoginLock((newPassword, current) => {
      const rotated: Credentials = { ...current, password: newPassword }
      const at = this.deps.clock.now()
      try {
        file.writePassword(newPassword)
      } catch (error) {
        // Keep working with the password only this process knows, and say loudly that it is not saved.
        session.useCredentials(rotated)
        this.unsaved = true
        this.deps.passwordAge?.observe(newPassword, at, at, 'rotated')
        throw new OperationError(
          'not-saved',
          `ThingSpace changed the password but writing ${file.path} failed (${errorCode(error)}); ` +
            'the proxy keeps the new password in memory only: do not restart it, fix the file system and rotate again'
        )
      }
      return { rotated, at }
    })
    session.useCredentials(rotated)
    this.unsaved = false
    this.deps.passwordAge?.observe(rotated.password, at, at, 'rotated')
    return { rotated: true, at: new Date(at).toISOString(), verified: await this.verify() }
  }

  /**
   * Fleet mode: rotation lock → catch up on the newest generation → tokens (outside the login lock) →
   * holding the login lock (no replica logs in meanwhile): reset, write this replica's file first,
   * publish the next generation → log in with the new password.
   */
  private async rotateInFleet (
    fleet: FleetRotation,
    maxAgeMs: number | undefined
  ): Promise<RotationResult | undefined> {
    const { session, file, clock } = this.deps
    let lock: FleetLock | undefined
    try {
      lock = await fleet.store.takeLock('rotation', fleet.rotationLockTtlMs)
    } catch (error) {
      throw new OperationError(
        'fleet-unavailable',
        `rotation refused before contacting ThingSpace: the fleet store cannot be reached (${messageOf(error)})`
      )
    }
    if (lock === undefined) {
      throw new OperationError(
        'busy',
        'a password rotation is in progress on another replica of the fleet; try again when it has finished'
      )
    }
    try {
      await this.catchUp(fleet)
      if (maxAgeMs !== undefined && !this.due(maxAgeMs)) return undefined
      // Holding the login lock: nobody publishes a login meanwhile; a generation an operator published is taken up
      // first.
      const { saveError, published } = await this.resetHoldingLoginLock(
        async (newPassword, current) => {
          let saveError: string | undefined
          try {
            file.writePassword(newPassword)
          } catch (error) {
            saveError = errorCode(error)
          }
          session.useCredentials({ ...current, password: newPassword })
          const at = clock.now()
          this.deps.passwordAge?.observe(newPassword, at, at, 'rotated')
          return {
            saveError,
            published: await fleet.sync.publishNew(newPassword, at, current.password, saveError === undefined)
          }
        },
        async () => {
          await this.catchUp(fleet)
        }
      )
      if (saveError !== undefined) {
        throw new OperationError(
          'not-saved',
          `ThingSpace changed the password but writing ${file.path} failed (${saveError}); ` +
            `this replica keeps it in memory${published.published ? `, and it is published to the fleet store as generation ${published.generation}` : ' only, and it could not be published to the fleet store either: do not restart this replica'}; fix the file system`
        )
      }
      return {
        rotated: true,
        at: new Date(published.changedAt).toISOString(),
        verified: await this.verify(),
        generation: published.generation
      }
    } finally {
      await fleet.store.releaseLock(lock).catch((error: unknown) => {
        this.publish({
          type: 'warning',
          message: `the fleet's rotation lock could not be released (it expires by itself): ${messageOf(error)}`
        })
      })
    }
  }

  private async catchUp (fleet: FleetRotation): Promise<void> {
    try {
      await fleet.sync.catchUp()
    } catch (error) {
      throw new OperationError(
        'fleet-unavailable',
        `rotation refused before contacting ThingSpace: the fleet's password generation cannot be read (${messageOf(error)})`
      )
    }
  }

  private due (maxAgeMs: number): boolean {
    const changedAt = this.passwordChangedAt()
    return changedAt === undefined || this.deps.clock.now() - changedAt >= maxAgeMs
  }

  /** Logs in with the new password (and logs the old session out); false when that login failed. */
  private async verify (): Promise<boolean> {
    try {
      await this.deps.session.restartSession('rotation')
      return true
    } catch (error) {
      this.publish({ type: 'warning', message: `login with the rotated password failed: ${messageOf(error)}` })
      return false
    }
  }

  /**
   * Re-reads and validates the credentials file, and compares it with what is in force (never with what
   * this process last wrote): restoring a known-good file always takes effect. Explicit reloads
   * (`login: true`) log in afresh; the file watcher logs in only when the new credentials released the
   * lockout guard or no session is held. Fleet mode: see reloadInFleet.
   */
  async reload (options: { login: boolean }): Promise<SessionSnapshot> {
    return await this.exclusive('credentials reload', async () => {
      const { session, file, fleet } = this.deps
      const next = file.read() // ConfigError: the old credentials stay in force
      const exposure = file.exposure()
      if (exposure !== undefined) this.publish({ type: 'warning', message: exposure })
      const padded = credentialsWhitespace(next, file.path)
      if (padded !== undefined) this.publish({ type: 'warning', message: padded })
      if (fleet !== undefined) return await this.reloadInFleet(fleet, next, options)
      const current = session.currentCredentials
      const changed = !sameCredentials(next, current)
      // the watcher: this process's own write, or an edit back to what is in force
      if (!changed && !options.login) return session.snapshot()
      // Unchanged since ThingSpace rejected it (the guard engaged, or one rejection so far): not sent again.
      if (!changed && (session.guardEngaged || session.lastLoginRejected)) {
        throw new OperationError(
          'unchanged-while-rejected',
          `${file.path} is unchanged since ThingSpace rejected it; logins stay paused to protect the account from lockout`
        )
      }
      const wasEngaged = session.guardEngaged
      if (changed) {
        session.useCredentials(next)
        this.publish({ type: 'info', message: 'credentials reloaded' })
        if (next.password !== current.password) {
          const at = this.deps.clock.now()
          this.unsaved = false
          this.deps.passwordAge?.observe(next.password, at, at, 'changed')
        }
      }
      if (options.login || (changed && (wasEngaged || session.snapshot().state !== 'active'))) {
        try {
          await session.restartSession('admin')
        } catch (error) {
          if (!(error instanceof AuthUnavailableError)) throw error
          // An explicit reload answers for its login: a rejection is not a success (the watcher's is logged only).
          if (options.login && error.reason === 'credentials-rejected') {
            throw new OperationError('credentials-rejected', `the login with ${file.path} failed: ${error.message}`, true)
          }
        }
      }
      return session.snapshot()
    })
  }

  /**
   * Fleet mode: a password only reaches the fleet once ThingSpace accepted it. A changed file is
   * - the fleet's own generation (restored after a typo): in force again, nothing to check;
   * - an older generation's password (a stale copy, such as an old Secret): rewritten with the fleet's;
   * - a password ThingSpace rejected from this replica before: refused, never sent again;
   * - anything else: checked with one guarded login (verifyCredentials), then published as the next
   *   generation; a rejected one stays local: the fleet's password stays in force here, readiness says
   *   credentials-rejected and no other replica's file changes.
   * An explicit reload of the fleet's own password while the fleet's guard holds proves it again with
   * one login: the live way back after failed checks.
   */
  private async reloadInFleet (
    fleet: FleetRotation,
    next: Credentials,
    options: { login: boolean }
  ): Promise<SessionSnapshot> {
    const { session, file } = this.deps
    const current = session.currentCredentials
    const held = fleet.sync.heldPassword
    if (next.password !== current.password && next.password !== held && fleet.sync.isSuperseded(next.password)) {
      let rewritten = false
      try {
        file.writePassword(current.password)
        rewritten = true
      } catch {
        /* said below */
      }
      fleet.sync.noteSavedToFile(rewritten)
      this.publish({
        type: 'warning',
        message:
          `${file.path} holds a password older than the fleet's newest generation (a stale copy): the fleet's password stays in force` +
          (rewritten ? ' and the file was rewritten with it' : ' (the file cannot be rewritten: kept in memory)')
      })
      next = { ...next, password: current.password }
    }
    if (fleet.ledger.isRejected(next.password) && next.password !== current.password) {
      session.markCredentialsRejected()
      const message =
        `ThingSpace rejected the password in ${file.path} from this replica before: it is not sent again; ` +
        "this replica keeps the fleet's password in force and reports credentials-rejected until the file holds another password"
      this.publish({ type: 'warning', message })
      throw new OperationError('unchanged-while-rejected', message, true)
    }
    const changed = !sameCredentials(next, current)
    if (changed && next.password === held) {
      // Back to the fleet's own generation after a typo: ThingSpace accepted it before, nothing to check.
      session.useCredentials(next)
      this.publish({
        type: 'info',
        message: `${file.path} holds the fleet's password generation ${fleet.sync.status().generation ?? '?'} again: it is in force`
      })
    } else if (!changed && session.clearCredentialsRejected()) {
      this.publish({ type: 'info', message: `${file.path} holds the password in force again` })
    }
    if (!changed || next.password === held) {
      if (!options.login) return session.snapshot()
      if (next.password === held) {
        // An explicit reload proves the fleet's password with one login of its own: after failed checks of other
        // passwords, that success resets the fleet's count and every replica serves again.
        await session.verifyCredentials(next).catch((error: unknown) => {
          if (!(error instanceof AuthUnavailableError)) throw error
          this.publish({ type: 'warning', message: `the fleet's password could not be checked: ${error.message}` })
        })
        return session.snapshot()
      }
      if (session.guardEngaged) {
        throw new OperationError(
          'unchanged-while-rejected',
          `${file.path} is unchanged since ThingSpace rejected it; logins stay paused to protect the account from lockout`
        )
      }
      await session.restartSession('admin').catch((error: unknown) => {
        if (!(error instanceof AuthUnavailableError)) throw error
      })
      return session.snapshot()
    }
    this.publish({
      type: 'info',
      message: `${file.path} changed: checking the new credentials with one login before the fleet uses them`
    })
    try {
      await session.verifyCredentials(next)
    } catch (error) {
      if (!(error instanceof AuthUnavailableError)) throw error
      const rejected = fleet.ledger.isRejected(next.password)
      const message = rejected
        ? `ThingSpace rejected the credentials in ${file.path}: they stay local to this replica and are not sent again; the fleet's password stays in force, ` +
          'this replica reports credentials-rejected until the file holds accepted credentials (no other replica changed)'
        : `the credentials in ${file.path} could not be checked (${error.message}); the fleet's password stays in force`
      this.publish({ type: 'error', message })
      throw new OperationError(rejected ? 'credentials-rejected' : 'fleet-unavailable', message, true)
    }
    this.publish({ type: 'info', message: 'credentials reloaded: ThingSpace accepted them' })
    if (next.password !== current.password) {
      const at = this.deps.clock.now()
      this.deps.passwordAge?.observe(next.password, at, at, 'changed')
      const published = await fleet.sync.publishNew(next.password, at, current.password, true)
      if (published.published) {
        this.publish({
          type: 'info',
          message: `the checked password is published to the fleet as generation ${published.generation}`
        })
      }
    }
    return session.snapshot()
  }

  /**
   * ThingSpace's password reset, holding the login lock (in a fleet no replica logs in meanwhile; alone it just runs),
   * after `before` (the fleet's catch-up); `apply` takes the new password into use under the same lock. The old
   * password is still valid after a refused token: the token is renewed outside the lock and the reset asked once
   * more (unless the session manager holds off renewing a session refused right after its login).
   */
  private async resetHoldingLoginLock<R>(
    apply: (newPassword: string, current: Credentials) => R | Promise<R>,
    before?: () => Promise<void>
  ): Promise<R> {
    const { session, api } = this.deps
    let tokens = await session.acquireTokens() // AuthUnavailableError when it cannot authenticate
    for (let attempt = 1; ; attempt++) {
      // `renew`: the lock is left to renew the refused token outside it (a renewal logs in, which needs that lock).
      const outcome = await session.withLoginLock(
        async (): Promise<{ applied: R } | { renew: 'session' | 'oauth'; error: unknown }> => {
          await before?.()
          const current = session.currentCredentials
          let newPassword: string
          try {
            newPassword = await api.resetPassword(tokens.oauthToken, tokens.sessionToken, current.password)
          } catch (error) {
            const problem = tokenProblemOf(error)
            if (problem !== undefined && attempt === 1) return { renew: problem, error }
            throw this.resetFailed(error)
          }
          return { applied: await apply(newPassword, current) }
        }
      )
      if ('applied' in outcome) return outcome.applied
      const renewed = await session.tokensAfterRejection(tokens, outcome.renew)
      if (renewed === undefined) throw this.resetFailed(outcome.error)
      tokens = renewed
    }
  }

  /** The reset's failure as an operator error (rethrows what is not an upstream answer). */
  private resetFailed (error: unknown): OperationError {
    if (!(error instanceof UpstreamAuthError)) throw error
    const outcome =
      error.kind === 'unknown-outcome'
        ? 'the password may or may not have changed: check the account before retrying'
        : 'the password is unchanged'
    const message = `ThingSpace password reset failed (${error.message}); ${outcome}`
    this.publish({ type: 'reset-failed', message, cause: failureCause(error) })
    return new OperationError('upstream-failed', message)
  }

  private async exclusive<T>(name: string, action: () => Promise<T>): Promise<T> {
    if (this.busy !== undefined) {
      throw new OperationError('busy', `a ${this.busy} is in progress; try again when it has finished`)
    }
    this.busy = name
    const running = action()
    this.running = running
    try {
      return await running
    } finally {
      this.busy = undefined
      this.running = undefined
    }
  }

  /** Resolves once no operation is in progress (shutdown lets one finish: cut off, a rotation loses its password). */
  async settled (): Promise<void> {
    await this.running?.catch(() => {})
  }
}

const DAY_MS = 86_400_000

/** Which token a refused reset calls for renewing, if any. */
function tokenProblemOf (error: unknown): 'session' | 'oauth' | undefined {
  if (!(error instanceof UpstreamAuthError)) return undefined
  return error.kind === 'session-invalid' ? 'session' : error.kind === 'oauth-invalid' ? 'oauth' : undefined
}
