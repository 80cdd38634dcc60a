// The fleet at a glance: each replica publishes a heartbeat (who it is, its state, its password generation) under the
// fleet's prefix, sealed like the rest of the shared state; any replica reads them all for GET /admin/fleet.

import { createHash } from 'node:crypto'
import type { Clock, Timer } from '../clock.js'
import { messageOf } from '../errors.js'

/** What one replica says of itself, every heartbeat. */
export interface ReplicaBeat {
  /** host/pid: unique while the process lives. */
  id: string
  host: string
  pid: number
  version: string
  state: string
  ready: boolean
  notReadyReason: string | null
  /** The password generation it holds (null before it reached the store). */
  generation: number | null
  /** When the session it uses was logged in (by it or another replica). */
  loggedInAt: string | null
  logins: number
  consecutiveLoginFailures: number
  maxLoginFailures: number
  /** When it wrote this beat (its own clock: replicas on other hosts may differ by their clock skew). */
  seenAt: number
  /** Its heartbeat interval: staleness is judged by the writer's own interval. */
  intervalMs: number
}

/** The store's side of the heartbeats (the Redis adapter, the tests' memory store). */
export interface ReplicaDirectory {
  /** Stores this replica's beat; the whole directory expires `keepMs` after the last beat of any replica. */
  writeHeartbeat: (beat: ReplicaBeat, keepMs: number) => Promise<void>
  /** Every stored beat; `unreadable` counts those that do not open under this fleet key (or were altered). */
  readHeartbeats: () => Promise<{ beats: ReplicaBeat[]; unreadable: number }>
  removeHeartbeat: (id: string) => Promise<void>
  /** The lock tag (lockTag) of the login lock's holder, when the lock is held. */
  readLoginLockTag: () => Promise<string | undefined>
}

/** A beat older than this many of its writer's intervals is stale; older than DROP_AFTER_BEATS, removed. */
export const STALE_AFTER_BEATS = 3
export const DROP_AFTER_BEATS = 12

/**
 * The replica's name in a lock's value: a hash, so that host names never stand in plain in Redis (the heartbeats,
 * which carry them, are sealed).
 */
export function lockTag (replicaId: string): string {
  return createHash('sha256').update(replicaId, 'utf8').digest('hex').slice(0, 12)
}

export interface ReplicaView extends Omit<ReplicaBeat, 'seenAt'> {
  lastSeenAt: string
  stale: boolean
  self: boolean
}

export interface FleetView {
  mode: 'fleet' | 'single'
  self: string
  /** The replica holding the login lock; "unknown" when no heartbeat matches the lock's holder; null when free. */
  lockHolder: string | null
  /** The newest password generation a live replica holds. */
  generation: number | null
  heartbeatIntervalMs: number
  replicas: ReplicaView[]
  unreadable: number
}

/** The heartbeats could not be read: the fleet store does not answer. */
export class FleetViewUnavailableError extends Error {
  override readonly name = 'FleetViewUnavailableError'
}

export interface ReplicaHeartbeatOptions {
  directory: ReplicaDirectory
  /** This replica's beat as of now, without seenAt and intervalMs. */
  describe: () => Omit<ReplicaBeat, 'seenAt' | 'intervalMs'>
  intervalMs: number
  clock: Clock
  /** A beat that could not be written; the store itself logs a lost connection. */
  onError?: (error: unknown) => void
}

export class ReplicaHeartbeat {
  private timer: Timer | undefined
  private stopped = false

  constructor (private readonly options: ReplicaHeartbeatOptions) {}

  /** Beats now and then every interval (on the clock's unreferenced timers: never keeps the process alive). */
  start (): void {
    const tick = (): void => {
      if (this.stopped) return
      void this.beat().finally(() => {
        if (!this.stopped) this.timer = this.options.clock.setTimer?.(tick, this.options.intervalMs)
      })
    }
    tick()
  }

  async beat (): Promise<void> {
    const { directory, intervalMs, clock } = this.options
    try {
      await directory.writeHeartbeat(
        { ...this.options.describe(), seenAt: clock.now(), intervalMs },
        DROP_AFTER_BEATS * intervalMs
      )
    } catch (error) {
      this.options.onError?.(error)
    }
  }

  /** Stops beating and removes this replica's beat: a replica shut down is gone at once, not stale. */
  async stop (): Promise<void> {
    this.stopped = true
    this.timer?.cancel()
    await this.options.directory.removeHeartbeat(this.options.describe().id).catch(() => {})
  }

  /** Every replica of the fleet as its beats say; beats past DROP_AFTER_BEATS are removed on the way. */
  async view (): Promise<FleetView> {
    const { directory, clock, intervalMs } = this.options
    const [{ beats, unreadable }, holderTag] = await Promise.all([
      directory.readHeartbeats(),
      directory.readLoginLockTag()
    ]).catch((error: unknown) => {
      throw new FleetViewUnavailableError(`the fleet view cannot be read: ${messageOf(error)}`)
    })
    const now = clock.now()
    const self = this.options.describe()
    const kept = beats.filter((beat) => now - beat.seenAt <= DROP_AFTER_BEATS * beat.intervalMs)
    for (const dropped of beats.filter((beat) => !kept.includes(beat))) {
      await directory.removeHeartbeat(dropped.id).catch(() => {})
    }
    // This replica as of now, whatever its last stored beat said.
    const current = { ...self, seenAt: now, intervalMs }
    const all = [current, ...kept.filter((beat) => beat.id !== self.id)].sort((a, b) => a.id.localeCompare(b.id))
    const replicas = all.map(({ seenAt, ...beat }) => ({
      ...beat,
      lastSeenAt: new Date(seenAt).toISOString(),
      stale: now - seenAt > STALE_AFTER_BEATS * beat.intervalMs,
      self: beat.id === self.id
    }))
    const live = replicas.filter((replica) => !replica.stale)
    const generations = live.map((replica) => replica.generation).filter((value) => value !== null)
    return {
      mode: 'fleet',
      self: self.id,
      lockHolder:
        holderTag === undefined ? null : (all.find((beat) => lockTag(beat.id) === holderTag)?.id ?? 'unknown'),
      generation: generations.length === 0 ? null : Math.max(...generations),
      heartbeatIntervalMs: intervalMs,
      replicas,
      unreadable
    }
  }
}

/** Single-process mode: the one replica there is, as the fleet view would show it. */
export function singleProcessView (self: Omit<ReplicaBeat, 'seenAt' | 'intervalMs'>, now: number): FleetView {
  return {
    mode: 'single',
    self: self.id,
    lockHolder: null,
    generation: self.generation,
    heartbeatIntervalMs: 0,
    replicas: [{ ...self, intervalMs: 0, lastSeenAt: new Date(now).toISOString(), stale: false, self: true }],
    unreadable: 0
  }
}

/** The shape a beat must have once opened: anything else is refused as written by someone else. */
export function isReplicaBeat (value: unknown): value is ReplicaBeat {
  if (typeof value !== 'object' || value === null) return false
  const beat = value as Record<string, unknown>
  const nullableString = (field: unknown): boolean => field === null || typeof field === 'string'
  return (
    typeof beat.id === 'string' &&
    typeof beat.host === 'string' &&
    Number.isSafeInteger(beat.pid) &&
    typeof beat.version === 'string' &&
    typeof beat.state === 'string' &&
    typeof beat.ready === 'boolean' &&
    nullableString(beat.notReadyReason) &&
    (beat.generation === null || Number.isSafeInteger(beat.generation)) &&
    nullableString(beat.loggedInAt) &&
    Number.isSafeInteger(beat.logins) &&
    Number.isSafeInteger(beat.consecutiveLoginFailures) &&
    Number.isSafeInteger(beat.maxLoginFailures) &&
    typeof beat.seenAt === 'number' &&
    Number.isSafeInteger(beat.intervalMs) &&
    (beat.intervalMs as number) > 0
  )
}
