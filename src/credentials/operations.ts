// Operator actions on the credentials, one at a time: password rotation (saved before anything else) and reload.

import type { Clock } from '../session/clock.js'
import type { ThingSpaceAuthApi } from '../session/auth-client.js'
import { AuthUnavailableError, failureCause, UpstreamAuthError, type FailureCause } from '../session/errors.js'
import type { SessionManager, SessionSnapshot } from '../session/session-manager.js'
import { errorCode } from '../config/load.js'
import type { Credentials } from './credentials.js'
import { sameCredentials, type CredentialsFile } from './credentials-file.js'

export type OperationErrorKind = 'busy' | 'not-rewritable' | 'upstream-failed' | 'not-saved' | 'unchanged-while-rejected'

/** An operator action that could not be carried out; the message never holds a secret. */
export class OperationError extends Error {
  override readonly name = 'OperationError'
  constructor (readonly kind: OperationErrorKind, message: string) {
    super(message)
  }
}

export interface RotationResult {
  rotated: true
  at: string
  /** A login with the new password succeeded. */
  verified: boolean
}

export interface OperationEvents {
  onWarning?: (message: string) => void
  onInfo?: (message: string) => void
  /** ThingSpace's password reset failed: why (status, errorCode, network or TLS error code), never a secret. */
  onResetFailed?: (detail: { message: string, cause: FailureCause }) => void
}

export class CredentialOperations {
  private busy: string | undefined

  constructor (private readonly deps: {
    session: SessionManager
    api: ThingSpaceAuthApi
    file: CredentialsFile
    clock: Clock
    events?: OperationEvents
  }) {}

  get inProgress (): string | undefined {
    return this.busy
  }

  /**
   * PUT /session/password/actions/reset with the current password. ThingSpace generates the new one and
   * it is effective at once, so it is written to the credentials file before anything else happens.
   */
  async rotatePassword (): Promise<RotationResult> {
    return await this.exclusive('password rotation', async () => {
      const { session, file } = this.deps
      const problem = file.rewriteProblem()
      if (problem !== undefined) throw new OperationError('not-rewritable', `rotation refused before contacting ThingSpace: ${problem}`)
      const current = session.currentCredentials
      const newPassword = await this.resetUpstream(current.password)
      const rotated: Credentials = { ...current, password: newPassword }
      try {
        file.writePassword(newPassword)
      } catch (error) {
        // Keep working with the password only this process knows, and say loudly that it is not saved.
        session.useCredentials(rotated)
        throw new OperationError('not-saved', `ThingSpace changed the password but writing ${file.path} failed (${errorCode(error)}); ` +
          'the proxy keeps the new password in memory only: do not restart it, fix the file system and rotate again')
      }
      session.useCredentials(rotated)
      let verified = true
      try {
        await session.restartSession('rotation')
      } catch (error) {
        verified = false
        this.deps.events?.onWarning?.(`login with the rotated password failed: ${error instanceof Error ? error.message : String(error)}`)
      }
      return { rotated: true, at: new Date(this.deps.clock.now()).toISOString(), verified }
    })
  }

  /**
   * Re-reads and validates the credentials file. Explicit reloads (`login: true`) log in afresh; the file
   * watcher logs in only when the new credentials released the lockout guard or no session is held.
   */
  async reload (options: { login: boolean }): Promise<SessionSnapshot> {
    return await this.exclusive('credentials reload', async () => {
      const { session, file } = this.deps
      const next = file.read() // ConfigError: the old credentials stay in force
      const exposure = file.exposure()
      if (exposure !== undefined) this.deps.events?.onWarning?.(exposure)
      const changed = !sameCredentials(next, session.currentCredentials)
      if (!changed && session.guardEngaged) {
        throw new OperationError('unchanged-while-rejected', `${file.path} is unchanged since ThingSpace rejected it; logins stay paused to protect the account from lockout`)
      }
      const wasEngaged = session.guardEngaged
      if (changed) {
        session.useCredentials(next)
        this.deps.events?.onInfo?.('credentials reloaded')
      }
      if (options.login || (changed && (wasEngaged || session.snapshot().state !== 'active'))) {
        await session.restartSession('admin').catch((error: unknown) => {
          if (!(error instanceof AuthUnavailableError)) throw error
        })
      }
      return session.snapshot()
    })
  }

  private async resetUpstream (oldPassword: string): Promise<string> {
    const { session, api } = this.deps
    let tokens = await session.acquireTokens() // AuthUnavailableError when it cannot authenticate
    for (let attempt = 1; ; attempt++) {
      try {
        return await api.resetPassword(tokens.oauthToken, tokens.sessionToken, oldPassword)
      } catch (error) {
        if (!(error instanceof UpstreamAuthError)) throw error
        const tokenProblem = error.kind === 'session-invalid' ? 'session' : error.kind === 'oauth-invalid' ? 'oauth' : undefined
        // The old password is still valid: a rejected token is renewed and the reset asked once more
        // (unless the session manager holds off renewing a session refused right after its login).
        const renewed = tokenProblem !== undefined && attempt === 1 ? await session.tokensAfterRejection(tokens, tokenProblem) : undefined
        if (renewed !== undefined) {
          tokens = renewed
          continue
        }
        const outcome = error.kind === 'unknown-outcome'
          ? 'the password may or may not have changed: check the account before retrying'
          : 'the password is unchanged'
        const message = `ThingSpace password reset failed (${error.message}); ${outcome}`
        this.deps.events?.onResetFailed?.({ message, cause: failureCause(error) })
        throw new OperationError('upstream-failed', message)
      }
    }
  }

  private async exclusive<T> (name: string, action: () => Promise<T>): Promise<T> {
    if (this.busy !== undefined) throw new OperationError('busy', `a ${this.busy} is in progress; try again when it has finished`)
    this.busy = name
    try {
      return await action()
    } finally {
      this.busy = undefined
    }
  }
}
