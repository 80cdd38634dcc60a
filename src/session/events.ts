// What the session modules report as they work: published on the 'm2m-session-proxy:session' diagnostics channel
// (src/events.ts), where logging and metrics subscribe. Never a token or a secret: codes and counts only.

import type { FailureCause } from './errors.js'

export type LoginOutcome = 'success' | 'rejected' | 'error'
export type RenewalReason = 'idle' | 'expired' | 'invalid' | 'admin' | 'rotation'

export type SessionEvent =
  /** A login answered: `cause` on a failure (status, errorCode, network or TLS error code). */
  | { type: 'login'; outcome: LoginOutcome; consecutiveRejections: number; message?: string; cause?: FailureCause }
  | { type: 'oauth-fetch'; outcome: LoginOutcome; cause?: FailureCause }
  /** A session replaced, and why. */
  | { type: 'renewal'; reason: RenewalReason }
  /** A logout failed: of the session a new login replaced (`replaced`), or of the session ended on request. */
  | { type: 'logout-failed'; message: string; cause: FailureCause; replaced: boolean }
  /**
   * Not ready because ThingSpace or the fleet store is failing (not a rejection): a login is tried again in `delayMs`
   * without a client.
   */
  | { type: 'background-retry'; delayMs: number; cause: 'upstream-unavailable' | 'fleet-store-unreachable' | 'state-unwritable' }
  /** Fleet mode: a session another replica logged in was taken up instead of logging in. */
  | { type: 'fleet-login-avoided' }
  /** Fleet mode: another replica held the login lock, and this one waited for its outcome. */
  | { type: 'fleet-lock-wait' }
  | { type: 'info' | 'warning'; message: string }

export type PublishSessionEvent = (event: SessionEvent) => void

/** For modules built without a subscriber (tests). */
export const ignoreSessionEvents: PublishSessionEvent = () => {}
