// What one replica has verified of its fleet, on disk in its state directory: the highest password generation it opened
// under the fleet key, the passwords ThingSpace rejected from it, and the highest fleet failure count it saw. None of
// it can be set back by writing to Redis, so someone who can write Redis but has no fleet key cannot replay an old
// password generation into use, make a replica send a password ThingSpace already rejected, or reset the fleet's
// failure count into extra attempts.

import fs from 'node:fs'
import path from 'node:path'
import { createHmac, randomBytes } from 'node:crypto'
import { writeFileAtomicSync } from '../fs/atomic-write.js'
import { refuseDanglingLink, refuseNewerFormat } from '../fs/state-file.js'
import { ConfigError } from '../config/errors.js'
import { errorCode } from '../errors.js'

export const FLEET_LEDGER_FILE = 'fleet-ledger.json'
/**
 * Rejected passwords remembered; the oldest is forgotten past this (a password rejected 32 changes ago is not coming
 * back).
 */
const MAX_REJECTED = 32
/** Passwords of older generations remembered, by the same reasoning. */
const MAX_OLDER = 32

export interface VerifiedGeneration {
  generation: number
  changedAt: number
}

/** How a generation read from the store relates to the highest one this replica verified. */
export type GenerationVerdict = 'newer' | 'same' | 'older' | 'conflict'

interface LedgerState {
  version: 1
  /** Salt of the hashes below: they tell passwords apart and reveal nothing usable. */
  salt: string
  generation: (VerifiedGeneration & { passwordId: string }) | null
  /** Hashes of user name and password, oldest first. */
  rejected: string[]
  /**
   * The same hashes for the passwords of the generations verified before the highest, oldest first: a credentials file
   * holding one is a stale copy. Absent in ledgers written before it.
   */
  older?: string[]
  /** The highest fleet failure count seen since a login success this replica could verify; when it was seen. */
  failuresSeen: number
  failuresSeenAt: number
}

export class FleetLedger {
  private constructor (
    readonly file: string,
    private readonly username: string,
    private state: LedgerState
  ) {}

  /** Reads the ledger of `stateDir` (made empty when missing). ConfigError when it is corrupt or cannot be written. */
  static open (stateDir: string, username: string): FleetLedger {
    const file = path.join(stateDir, FLEET_LEDGER_FILE)
    let state: LedgerState | undefined
    try {
      state = parseState(fs.readFileSync(file, 'utf8'), file)
    } catch (error) {
      if (error instanceof ConfigError) throw error
      if (errorCode(error) !== 'ENOENT') {
        throw new ConfigError('M2M_PROXY_STATE_DIR', `${file} cannot be read (${errorCode(error)})`)
      }
      refuseDanglingLink(file)
    }
    const ledger = new FleetLedger(
      file,
      username,
      state ?? {
        version: 1,
        salt: randomBytes(16).toString('hex'),
        generation: null,
        rejected: [],
        failuresSeen: 0,
        failuresSeenAt: 0
      }
    )
    try {
      ledger.persist()
    } catch (error) {
      throw new ConfigError(
        'M2M_PROXY_STATE_DIR',
        `${stateDir} is not writable (${errorCode(error)}); the fleet ledger must survive restarts`
      )
    }
    return ledger
  }

  /** The highest generation this replica verified, undefined before the first. */
  get highestGeneration (): VerifiedGeneration | undefined {
    const held = this.state.generation
    return held === null ? undefined : { generation: held.generation, changedAt: held.changedAt }
  }

  /**
   * Whether `password` is the one of the highest generation verified (a restarted replica whose file kept it holds that
   * generation).
   */
  isHighestPassword (password: string): boolean {
    return this.state.generation !== null && this.state.generation.passwordId === this.idOf(password)
  }

  /** `conflict`: the same generation number with another password or change time, which only a forger writes. */
  judge (generation: number, password: string, changedAt: number): GenerationVerdict {
    const held = this.state.generation
    if (held === null || generation > held.generation) return 'newer'
    if (generation < held.generation) return 'older'
    return held.passwordId === this.idOf(password) && held.changedAt === changedAt ? 'same' : 'conflict'
  }

  /** Records `generation` as verified when it is higher than the one recorded (never moves back). */
  recordGeneration (generation: number, password: string, changedAt: number): void {
    const held = this.state.generation
    if (held !== null && held.generation >= generation) return
    const passwordId = this.idOf(password)
    const older = this.state.older ?? []
    this.update({
      generation: { generation, changedAt, passwordId },
      older:
        held === null || held.passwordId === passwordId
          ? older
          : [...older.filter((id) => id !== held.passwordId), held.passwordId].slice(-MAX_OLDER)
    })
  }

  /** Whether `password` is that of a generation older than the highest this replica verified (a stale copy's). */
  isOlderGeneration (password: string): boolean {
    const id = this.idOf(password)
    return this.state.generation?.passwordId !== id && (this.state.older ?? []).includes(id)
  }

  isRejected (password: string): boolean {
    return this.state.rejected.includes(this.idOf(password))
  }

  /** ThingSpace rejected a login with `password`: this replica never sends it again. */
  recordRejected (password: string): void {
    const id = this.idOf(password)
    if (this.state.rejected.includes(id)) return
    this.update({ rejected: [...this.state.rejected, id].slice(-MAX_REJECTED) })
  }

  get failuresSeen (): number {
    return this.state.failuresSeen
  }

  get failuresSeenAt (): number {
    return this.state.failuresSeenAt
  }

  /**
   * The fleet's count as this replica knows it now: what it read, counted or took back itself. Only this
   * replica's own actions and a verified success (clearFailures) lower it, never a value read from the store.
   */
  recordFailures (count: number, at: number): void {
    if (count === this.state.failuresSeen) return
    this.update({
      failuresSeen: count,
      failuresSeenAt: count > this.state.failuresSeen ? at : this.state.failuresSeenAt
    })
  }

  /** A login success this replica sent or verified (a sealed session logged in after the failures were seen). */
  clearFailures (): void {
    if (this.state.failuresSeen !== 0) this.update({ failuresSeen: 0, failuresSeenAt: 0 })
  }

  private idOf (password: string): string {
    return createHmac('sha256', this.state.salt)
      .update(this.username)
      .update('\0')
      .update(password)
      .digest('hex')
      .slice(0, 32)
  }

  private update (change: Partial<LedgerState>): void {
    this.state = { ...this.state, ...change }
    this.persist()
  }

  private persist (): void {
    writeFileAtomicSync(this.file, JSON.stringify(this.state) + '\n')
  }
}

const isCount = (value: unknown): boolean => Number.isSafeInteger(value) && (value as number) >= 0

function parseState (json: string, file: string): LedgerState {
  let parsed: unknown
  try {
    parsed = JSON.parse(json)
  } catch {
    parsed = undefined
  }
  refuseNewerFormat(parsed, 1, file)
  const state = parsed as Partial<LedgerState> | undefined
  const generation = state?.generation
  const generationValid =
    generation === null ||
    (typeof generation === 'object' &&
      generation !== undefined &&
      isCount(generation.generation) &&
      Number.isFinite(generation.changedAt) &&
      typeof generation.passwordId === 'string')
  if (
    state?.version !== 1 ||
    typeof state.salt !== 'string' ||
    !generationValid ||
    !Array.isArray(state.rejected) ||
    !state.rejected.every((id) => typeof id === 'string') ||
    (state.older !== undefined && (!Array.isArray(state.older) || !state.older.every((id) => typeof id === 'string'))) ||
    !isCount(state.failuresSeen) ||
    !Number.isFinite(state.failuresSeenAt)
  ) {
    throw new ConfigError(
      'M2M_PROXY_STATE_DIR',
      `${file} is corrupt; check in ThingSpace that the account is not locked, then delete the file (the replica takes the fleet's newest password generation again)`
    )
  }
  return state as LedgerState
}
