// The in-memory fleet store: the FleetStore port inside one process, for tests (with a fake clock); production has only
// the Redis adapter.

import type { Clock } from '../../src/clock.js'
import {
  FleetStoreClosedError,
  newLockOwner,
  type FleetChange,
  type FleetChangeListener,
  type FleetLock,
  type FleetLockName,
  type FleetStore,
  type PasswordGeneration,
  type SharedOAuthToken,
  type SharedSession
} from '../../src/fleet/store.js'
import { lockTag, type ReplicaBeat } from '../../src/fleet/replicas.js'

interface AccountState {
  session?: SharedSession
  oauth?: SharedOAuthToken
  locks: Map<FleetLockName, { owner: string; expiresAt: number }>
  failures: number
  password?: PasswordGeneration
  /** When the fleet's sending pause ends, and the next free slot of the contracted rate (clock ms). */
  pausedUntil: number
  nextSlotAt: number
  listeners: Set<FleetChangeListener>
  heartbeats: Map<string, ReplicaBeat>
}

/**
 * What several MemoryFleetStore instances share, as replicas share one Redis: state per key prefix
 * and account. Expiries (lock, OAuth token) run on `clock`.
 */
export class MemoryFleet {
  private readonly accounts = new Map<string, AccountState>()

  constructor (readonly clock: Clock) {}

  /** The state of one account under one prefix, created empty on first use. */
  account (keyPrefix: string, username: string): AccountState {
    const id = `${keyPrefix}\0${username}`
    let state = this.accounts.get(id)
    if (state === undefined) {
      state = {
        failures: 0,
        locks: new Map(),
        listeners: new Set(),
        pausedUntil: 0,
        nextSlotAt: 0,
        heartbeats: new Map()
      }
      this.accounts.set(id, state)
    }
    return state
  }

  /** Tests: as if the store lost everything (a Redis restarted without persistence) and the replicas reconnected. */
  flush (): void {
    for (const state of this.accounts.values()) {
      state.session = undefined
      state.oauth = undefined
      state.locks.clear()
      state.failures = 0
      state.password = undefined
      state.pausedUntil = 0
      state.nextSlotAt = 0
      state.heartbeats.clear()
      for (const listener of [...state.listeners]) queueMicrotask(() => listener({ kind: 'connected' }))
    }
  }
}

export interface MemoryFleetStoreOptions {
  fleet: MemoryFleet
  username: string
  keyPrefix: string
  /** Default: a new random id (host/pid in production). */
  replicaId?: string
}

export class MemoryFleetStore implements FleetStore {
  private readonly state: AccountState
  private readonly clock: Clock
  private readonly own = new Set<FleetChangeListener>()
  private closed = false
  readonly replicaId: string

  constructor (options: MemoryFleetStoreOptions) {
    this.replicaId = options.replicaId ?? `memory/${newLockOwner().slice(0, 8)}`
    this.state = options.fleet.account(options.keyPrefix, options.username)
    this.clock = options.fleet.clock
  }

  get connected (): boolean {
    return !this.closed
  }

  async readSession (): Promise<SharedSession | undefined> {
    this.check()
    return this.state.session === undefined ? undefined : { ...this.state.session }
  }

  async writeSession (session: SharedSession): Promise<void> {
    this.check()
    this.state.session = { ...session }
    this.notify({ kind: 'session' })
  }

  async touchSession (loggedInAt: number, lastUsedAt: number): Promise<boolean> {
    this.check()
    const session = this.state.session
    if (session === undefined || session.loggedInAt !== loggedInAt) return false
    if (lastUsedAt > session.lastUsedAt) session.lastUsedAt = lastUsedAt
    return true
  }

  async seedSession (session: SharedSession): Promise<boolean> {
    this.check()
    if (this.state.session !== undefined) return false
    await this.writeSession(session)
    return true
  }

  async clearSession (): Promise<void> {
    this.check()
    this.state.session = undefined
    this.notify({ kind: 'session', ended: true })
  }

  async readOAuthToken (): Promise<SharedOAuthToken | undefined> {
    this.check()
    const oauth = this.state.oauth
    return oauth === undefined || oauth.expiresAt <= this.clock.now() ? undefined : { ...oauth }
  }

  async writeOAuthToken (token: SharedOAuthToken): Promise<void> {
    this.check()
    this.state.oauth = { ...token }
  }

  async takeLock (name: FleetLockName, ttlMs: number): Promise<FleetLock | undefined> {
    this.check()
    const now = this.clock.now()
    const held = this.state.locks.get(name)
    if (held !== undefined && held.expiresAt > now) return undefined
    const owner = `${lockTag(this.replicaId)}.${newLockOwner()}`
    this.state.locks.set(name, { owner, expiresAt: now + ttlMs })
    return { name, owner }
  }

  async releaseLock (lock: FleetLock): Promise<boolean> {
    this.check()
    const held = this.state.locks.get(lock.name)
    if (held === undefined || held.owner !== lock.owner || held.expiresAt <= this.clock.now()) return false
    this.state.locks.delete(lock.name)
    return true
  }

  async countLoginAttempt (): Promise<number> {
    this.check()
    return ++this.state.failures
  }

  async uncountLoginAttempt (): Promise<number> {
    this.check()
    this.state.failures = Math.max(0, this.state.failures - 1)
    return this.state.failures
  }

  async readLoginFailures (): Promise<number> {
    this.check()
    return this.state.failures
  }

  async resetLoginFailures (): Promise<void> {
    this.check()
    this.state.failures = 0
  }

  async raiseLoginFailures (atLeast: number, atMost: number): Promise<number> {
    this.check()
    const current = this.state.failures
    const isCount = Number.isSafeInteger(current) && current >= 0 && current <= atMost
    this.state.failures = isCount ? Math.max(current, atLeast) : atLeast
    return this.state.failures
  }

  async readPassword (): Promise<PasswordGeneration | undefined> {
    this.check()
    return this.state.password === undefined ? undefined : { ...this.state.password }
  }

  async publishPassword (next: PasswordGeneration): Promise<boolean> {
    this.check()
    if (next.generation !== (this.state.password?.generation ?? 0) + 1) return false
    this.state.password = { ...next }
    this.notify({ kind: 'password', generation: next.generation })
    return true
  }

  async seedPassword (held: PasswordGeneration): Promise<boolean> {
    this.check()
    if (this.state.password !== undefined && this.state.password.generation >= held.generation) return false
    this.state.password = { ...held }
    this.notify({ kind: 'password', generation: held.generation })
    return true
  }

  async writeHeartbeat (beat: ReplicaBeat): Promise<void> {
    this.check()
    this.state.heartbeats.set(beat.id, { ...beat })
  }

  async readHeartbeats (): Promise<{ beats: ReplicaBeat[]; unreadable: number }> {
    this.check()
    return { beats: [...this.state.heartbeats.values()].map((beat) => ({ ...beat })), unreadable: 0 }
  }

  async removeHeartbeat (id: string): Promise<void> {
    this.check()
    this.state.heartbeats.delete(id)
  }

  async readLoginLockTag (): Promise<string | undefined> {
    this.check()
    const held = this.state.locks.get('login')
    return held === undefined || held.expiresAt <= this.clock.now() ? undefined : held.owner.split('.', 1)[0]
  }

  async pauseSending (pauseMs: number): Promise<void> {
    this.check()
    this.state.pausedUntil = Math.max(this.state.pausedUntil, this.clock.now() + pauseMs)
    this.notify({ kind: 'throttle', pauseMs })
  }

  async readSendingPause (): Promise<number> {
    this.check()
    return Math.max(0, this.state.pausedUntil - this.clock.now())
  }

  async takeSendSlot (intervalMs: number, notBeforeMs: number, maxWaitMs: number): Promise<number> {
    this.check()
    const now = this.clock.now()
    const sendAt = Math.max(this.state.nextSlotAt, now + notBeforeMs)
    if (sendAt - now > maxWaitMs) return -1
    this.state.nextSlotAt = sendAt + intervalMs
    return sendAt - now
  }

  subscribe (listener: FleetChangeListener): () => void {
    // A wrapper per call, so that the same function subscribed twice is told twice and unsubscribed once each.
    const wrapper: FleetChangeListener = (change) => listener(change)
    this.own.add(wrapper)
    this.state.listeners.add(wrapper)
    return () => {
      this.own.delete(wrapper)
      this.state.listeners.delete(wrapper)
    }
  }

  async close (): Promise<void> {
    this.closed = true
    for (const listener of this.own) this.state.listeners.delete(listener)
    this.own.clear()
  }

  private check (): void {
    if (this.closed) throw new FleetStoreClosedError()
  }

  /** Told after the writer's call returns, as a Redis message arrives later. */
  private notify (change: FleetChange): void {
    for (const listener of [...this.state.listeners]) queueMicrotask(() => listener(change))
  }
}
