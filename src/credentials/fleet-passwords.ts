// The fleet-password port, owned by the credential operations that use it (operations.ts): the password generations the
// replicas share, and what a rotation or a reload needs of the fleet. fleet/password-sync.ts and fleet/store.ts
// implement it.

import type { FleetLock, FleetLockName } from '../session/shared-session.js'

/** The password the fleet uses, numbered so that a replica can tell a newer one from its own. */
export interface PasswordGeneration {
  /** 1 for the first published password, then +1 per rotation. */
  generation: number
  password: string
  changedAt: number
  /** Who published it (host and process), when read from the store: for the operator's log lines. */
  publisher?: string
}

export interface PasswordStore {
  /** The newest published password, or undefined when none was published. */
  readPassword: () => Promise<PasswordGeneration | undefined>
  /**
   * Publishes `next` only if its generation is exactly one more than the stored one (0 when none): of
   * two rotations racing, one wins. True when published; then notifies `{ kind: 'password', generation }`.
   */
  publishPassword: (next: PasswordGeneration) => Promise<boolean>
  /**
   * Stores `held` only if no password or an older generation is stored (re-seeding a store that lost it); true when
   * stored, then notifies.
   */
  seedPassword: (held: PasswordGeneration) => Promise<boolean>
}

export interface PublishedPassword extends PasswordGeneration {
  published: boolean
}

export interface PasswordSyncStatus {
  /** The generation this replica holds; null before it could reach the store. */
  generation: number | null
  changedAt: number | null
  /** False when the password in force could not be written to this replica's credentials file. */
  savedToFile: boolean
  /**
   * False while a password this replica holds still has to reach the store (it is re-seeded when the store is back).
   */
  published: boolean
}

/**
 * Fleet mode: rotations are fleet-wide, one at a time, and every password change becomes the fleet's next generation.
 */
export interface FleetRotation {
  store: {
    takeLock: (name: FleetLockName, ttlMs: number) => Promise<FleetLock | undefined>
    releaseLock: (lock: FleetLock) => Promise<boolean>
  }
  sync: {
    readonly heldPassword: string | undefined
    /** Brings this replica to the fleet's newest password generation. */
    catchUp: () => Promise<void>
    publishNew: (
      password: string,
      changedAt: number,
      previous: string,
      savedToFile: boolean
    ) => Promise<PublishedPassword>
    isSuperseded: (password: string) => boolean
    noteSavedToFile: (saved: boolean) => void
    status: () => PasswordSyncStatus
  }
  /** What this replica verified: a password ThingSpace rejected from it is refused at reload. */
  ledger: { isRejected: (password: string) => boolean }
  /** How long one rotation may hold the fleet's rotation lock: a holder that dies frees it after this. */
  rotationLockTtlMs: number
}
