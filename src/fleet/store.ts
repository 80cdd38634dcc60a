// The fleet store port: the state that replicas of one account share, and the one lock and count that keep their logins
// safe. No Redis here.
//
// Two adapters: MemoryFleetStore (one process; unit tests with a fake clock) and RedisFleetStore. Single-flight exists
// at two levels: the session manager's in-process promise joins logins inside one replica; the login lock here joins
// replicas.

import type { LocationKeyStore } from '../callbacks/location-keys.js'
import type { CallbackInbox } from '../callbacks/inbox.js'
import { randomBytes } from 'node:crypto'
import type { SharedSessionStore } from '../session/shared-session.js'
import type { PasswordStore } from '../credentials/fleet-passwords.js'
import type { ReplicaDirectory } from './replicas.js'

export type {
  FleetChange,
  FleetChangeListener,
  FleetLock,
  FleetLockName,
  SharedOAuthToken,
  SharedSession,
  SharedSessionStore
} from '../session/shared-session.js'
export type { PasswordGeneration, PasswordStore } from '../credentials/fleet-passwords.js'
export { DEFAULT_REDIS_KEY_PREFIX } from '../config/settings.js'

/**
 * The shared session (session/shared-session.ts) and the password generations (credentials/fleet-passwords.ts), and the
 * fleet's throttling: all the state replicas of one account share.
 */
export interface FleetStore extends SharedSessionStore, PasswordStore, ReplicaDirectory {
  /** This replica's id (host/pid), as its heartbeat and the lock tags name it. */
  readonly replicaId: string

  /**
   * The fleet's callback inbox: any replica receives, any replica reads (redis-inbox.ts). Absent in a store that cannot
   * share one: each replica then keeps its own file.
   */
  openCallbackInbox?: (
    retention: { count: number; bytes: number; ageMs: number },
    /** Entries larger than this are not read (maxRecordBytes): none of them can be a replica's. */
    maxRecordBytes: number
  ) => CallbackInbox
  /** The Device Location callbacks' shared keys, for every replica (location-keys.ts); absent: each keeps its own. */
  openLocationKeys?: () => LocationKeyStore

  /**
   * ThingSpace throttled this replica: stores the fleet's pause (extended, never shortened) for `pauseMs`
   * so that a replica connecting meanwhile pauses too, then notifies `{ kind: 'throttle', pauseMs }`.
   */
  pauseSending: (pauseMs: number) => Promise<void>
  /** Milliseconds left of the fleet's sending pause; 0 when there is none. */
  readSendingPause: () => Promise<number>
  /**
   * Takes the next send slot of the fleet's contracted rate (one every `intervalMs`, on the store's
   * clock), not earlier than `notBeforeMs` from now: the milliseconds to wait before sending, or -1
   * (nothing taken) when that would be more than `maxWaitMs`.
   */
  takeSendSlot: (intervalMs: number, notBeforeMs: number, maxWaitMs: number) => Promise<number>

  /** Stops the connections; the store is unusable afterwards. */
  close: () => Promise<void>
}

/** A fresh, unguessable lock owner id. */
export function newLockOwner (): string {
  return randomBytes(16).toString('hex')
}

export class FleetStoreClosedError extends Error {
  override readonly name = 'FleetStoreClosedError'
  constructor () {
    super('the fleet store is closed')
  }
}
