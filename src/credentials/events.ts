// What the credential modules (and the fleet's password sync) report: published on the 'm2m-session-proxy:credentials'
// diagnostics channel (src/events.ts), where logging subscribes. Never a password: messages, codes and times only.

import type { FailureCause } from '../session/errors.js'

export type CredentialsEvent =
  | { type: 'info' | 'warning'; message: string }
  /**
   * An operator's change could not take effect and the fleet needs them (a rejected credentials file, an unpublished
   * password).
   */
  | { type: 'error'; message: string }
  /** ThingSpace's password reset failed: why (status, errorCode, network or TLS error code). */
  | { type: 'reset-failed'; message: string; cause: FailureCause }
  /**
   * Fleet mode: a password generation was taken into use or found equal to the password in force, changed at
   * `changedAt`.
   */
  | { type: 'generation'; generation: number; changedAt: number }

export type PublishCredentialsEvent = (event: CredentialsEvent) => void

export const ignoreCredentialsEvents: PublishCredentialsEvent = () => {}
