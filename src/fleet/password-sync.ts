// Fleet mode: which password generation this replica holds, and how it follows the fleet's newest one. No HTTP
// framework here.
//
// The store's password generation is the truth: a replica takes a newer one into use before any login
// (beforeLogin), on a `password` notification and whenever its store connection comes up; a store that
// lost its state (a Redis restarted without persistence) is re-seeded with the generation held here.
// The credentials file is rewritten on each change when it can be; otherwise the password is kept in
// memory and GET /admin/session says so. No password ever appears in a message.
//
// The store is not trusted beyond its seal: a generation is taken into use only if it is newer than the
// highest this replica verified before (its FleetLedger, on disk) and carries no password ThingSpace
// rejected from this replica. A replayed old record, or one whose plain fields were changed, is refused
// with a warning that names the key: someone who can write Redis without the fleet key can deny
// service, never put an old or wrong password into use.

import { createHmac, randomBytes } from 'node:crypto'
import type { FleetStore, PasswordGeneration } from './store.js'
import type { PasswordSyncStatus, PublishedPassword } from '../credentials/fleet-passwords.js'
import type { FleetLedger } from './ledger.js'
import type { SessionCredentials } from '../session/session-manager.js'
import { errorCode, messageOf } from '../errors.js'
import { pause, type Clock } from '../clock.js'
import { ignoreCredentialsEvents, type PublishCredentialsEvent } from '../credentials/events.js'

/** What the sync needs of the session manager. */
export interface PasswordHolder {
  readonly currentCredentials: SessionCredentials
  useCredentials: (credentials: SessionCredentials) => void
}

/** What the sync needs of the credentials file. */
export interface PasswordFile {
  readonly path: string
  writePassword: (password: string) => void
}

export interface PasswordSyncOptions {
  store: FleetStore
  /**
   * The password in force at start (the credentials file's): the generation it is, if this replica verified it before.
   */
  password: string
  file: PasswordFile
  /** What this replica verified before (highest generation, rejected passwords), surviving restarts. */
  ledger: FleetLedger
  /**
   * When the password in force was changed as far as this replica knows: the changedAt of a generation 1 it publishes.
   */
  localChangedAt: () => number
  /**
   * Where the change time of the password in force is kept (credentials/password-age.ts): each generation taken into
   * use.
   */
  passwordAge?: { observe: (password: string, changedAt: number) => void }
  /** Where the sync reports (src/events.ts binds it to the credentials channel). */
  publish?: PublishCredentialsEvent
  /** The time the waits between attempts to publish run on (default the system's). */
  clock?: Clock
  /** Waits between attempts to publish a new password when the store fails; default 100, 300, 1000, 3000 ms. */
  publishRetryDelaysMs?: readonly number[]
}

const DEFAULT_PUBLISH_RETRY_DELAYS_MS = [100, 300, 1000, 3000] as const
/** Compare-and-set races lost in a row before giving up for this call (another replica publishing at the same time). */
const MAX_LOST_RACES = 5

export class PasswordSync {
  private held: PasswordGeneration | undefined
  private savedToFile = true
  private published = true
  /**
   * Salted hashes of passwords this replica replaced: a file still holding one is a stale copy, never an operator's
   * change.
   */
  private readonly superseded = new Set<string>()
  private readonly salt = randomBytes(16).toString('hex')
  private queue: Promise<unknown> = Promise.resolve()
  private unsubscribe: (() => void) | undefined
  /** The session whose password this sync keeps the fleet's: given at start, once both exist. */
  private session: PasswordHolder | undefined

  constructor (private readonly options: PasswordSyncOptions) {
    // A restarted replica whose file kept the highest generation it verified holds that generation: it can re-seed it.
    const { ledger, password } = options
    const highest = ledger.highestGeneration
    if (highest !== undefined && ledger.isHighestPassword(password)) {
      this.held = { generation: highest.generation, password, changedAt: highest.changedAt }
    }
  }

  private get publish (): PublishCredentialsEvent {
    return this.options.publish ?? ignoreCredentialsEvents
  }

  private get holder (): PasswordHolder {
    if (this.session === undefined) throw new Error('PasswordSync.start(session) must come first')
    return this.session
  }

  /**
   * Keeps `session`'s password the fleet's from now on: follows the store's notifications, and syncs at once
   * when the store is already connected. The session is given here, not at construction, because its logins
   * call catchUp() first: the session is built with this sync, then handed to it.
   */
  start (session: PasswordHolder): void {
    if (this.unsubscribe !== undefined) return
    this.session = session
    this.unsubscribe = this.options.store.subscribe((change) => {
      if (change.kind === 'session' || change.kind === 'throttle') return
      if (
        change.kind === 'password' &&
        this.held !== undefined &&
        change.generation <= this.held.generation &&
        this.published
      ) { return }
      this.syncInBackground(
        change.kind === 'connected'
          ? 'after the fleet store connected'
          : `after generation ${change.generation} was published`
      )
    })
    if (this.options.store.connected) this.syncInBackground('at start-up')
  }

  stop (): void {
    this.unsubscribe?.()
    this.unsubscribe = undefined
  }

  /**
   * Brings this replica to the store's newest generation (or the store to this replica's, when it lost
   * it). Rejects when the store cannot be reached: the caller then sends no login.
   */
  async catchUp (): Promise<void> {
    await this.serial(async () => await this.reconcile())
  }

  /**
   * Publishes `password`, already in use here and saved (`savedToFile`) or not, as the next generation:
   * a rotation, or an operator's change. Retries with backoff when the store fails; if it never
   * succeeds, the replica holds it as the next generation and re-seeds the store once it is back.
   */
  async publishNew (
    password: string,
    changedAt: number,
    previous: string,
    savedToFile: boolean
  ): Promise<PublishedPassword> {
    return await this.serial(async () => {
      this.savedToFile = savedToFile
      if (previous !== password) this.superseded.add(this.idOf(previous))
      const { store } = this.options
      const delays = this.options.publishRetryDelaysMs ?? DEFAULT_PUBLISH_RETRY_DELAYS_MS
      let failure = ''
      let lostRaces = 0
      for (let attempt = 0; attempt <= delays.length;) {
        try {
          const stored = await store.readPassword()
          if (stored?.password === password) return this.hold(stored, true)
          const generation =
            Math.max(
              stored?.generation ?? 0,
              this.held?.generation ?? 0,
              this.options.ledger.highestGeneration?.generation ?? 0
            ) + 1
          const next: PasswordGeneration = { generation, password, changedAt }
          // Exactly one more than the store's: publish; further (the store lost generations): seed.
          const written =
            generation === (stored?.generation ?? 0) + 1
              ? await store.publishPassword(next)
              : await store.seedPassword(next)
          if (written) return this.hold(next, true)
          if (++lostRaces < MAX_LOST_RACES) continue // another replica published meanwhile: go on from its generation
          failure = 'other replicas kept publishing at the same time'
        } catch (error) {
          failure = messageOf(error)
          this.publish({
            type: 'warning',
            message: `publishing the new password to the fleet store failed (attempt ${attempt + 1} of ${delays.length + 1}): ${failure}`
          })
        }
        const delay = delays[attempt]
        attempt += 1
        if (delay !== undefined) await pause(this.options.clock, delay)
      }
      const pending: PasswordGeneration = {
        generation: Math.max(this.held?.generation ?? 0, this.options.ledger.highestGeneration?.generation ?? 0) + 1,
        password,
        changedAt
      }
      this.publish({
        type: 'error',
        message:
          `THE NEW PASSWORD IS NOT IN THE FLEET STORE: publishing it failed ${delays.length + 1} times (${failure}). ` +
          `This replica holds it as generation ${pending.generation}${savedToFile ? ' and in its credentials file' : ', IN MEMORY ONLY'}, and re-seeds the store as soon as it can; ` +
          'until then the other replicas cannot log in with it: do not restart this replica'
      })
      return this.hold(pending, false)
    })
  }

  /** Whether `password` is one this replica replaced by a newer generation (a stale copy of the file). */
  isSuperseded (password: string): boolean {
    return this.superseded.has(this.idOf(password))
  }

  /** The credentials file was rewritten (or could not be) with the password in force. */
  noteSavedToFile (saved: boolean): void {
    this.savedToFile = saved
  }

  status (): PasswordSyncStatus {
    return {
      generation: this.held?.generation ?? null,
      changedAt: this.held?.changedAt ?? null,
      savedToFile: this.savedToFile,
      published: this.published
    }
  }

  /**
   * The generation held by this replica: the password of the fleet's newest generation it knows (undefined before it
   * knows one).
   */
  get heldPassword (): string | undefined {
    return this.held?.password
  }

  private hold (generation: PasswordGeneration, published: boolean): PublishedPassword {
    this.options.ledger.recordGeneration(generation.generation, generation.password, generation.changedAt)
    this.held = { generation: generation.generation, password: generation.password, changedAt: generation.changedAt }
    this.published = published
    this.superseded.delete(this.idOf(generation.password))
    this.options.passwordAge?.observe(generation.password, generation.changedAt)
    this.publish({ type: 'generation', generation: generation.generation, changedAt: generation.changedAt })
    return { ...generation, published }
  }

  private syncInBackground (when: string): void {
    this.serial(async () => await this.reconcile()).catch((error: unknown) => {
      this.publish({
        type: 'warning',
        message: `the fleet's password generation could not be checked ${when} (${messageOf(error)}); it is checked again before the next login`
      })
    })
  }

  /**
   * Runs `action` after the ones queued before it: no two changes of the held generation interleave. Never call
   * serial() from inside.
   */
  private async serial<T>(action: () => Promise<T>): Promise<T> {
    const run = this.queue.then(action, action)
    this.queue = run.catch(() => undefined)
    return await run
  }

  private async reconcile (raced = 0): Promise<void> {
    const { store, ledger } = this.options
    const session = this.holder
    const stored = await store.readPassword()
    const held = this.held
    const again = async (): Promise<void> => {
      if (raced < MAX_LOST_RACES) await this.reconcile(raced + 1)
    }
    const seedHeld = async (why: string): Promise<void> => {
      if (held === undefined) return
      if (await store.seedPassword(held)) {
        this.published = true
        this.publish({ type: 'info', message: `${why}: re-seeded it with generation ${held.generation}` })
        return
      }
      await again()
    }
    if (stored === undefined) {
      // The store lost it (flushed, restarted without persistence): put back what this replica holds.
      if (held !== undefined) return await seedHeld('the fleet store had no password generation')
      const highest = ledger.highestGeneration
      if (highest !== undefined) {
        // This replica verified a generation before, and its file does not hold it: its file is no proof of anything.
        this.publish({
          type: 'warning',
          message:
            `the fleet store has no password generation and ${this.options.file.path} does not hold generation ${highest.generation}, ` +
            'the highest this replica verified: nothing is published until a login with the password in force succeeds'
        })
        return
      }
      const first: PasswordGeneration = {
        generation: 1,
        password: session.currentCredentials.password,
        changedAt: this.options.localChangedAt()
      }
      if (await store.publishPassword(first)) {
        this.hold(first, true)
        this.publish({
          type: 'info',
          message: "published the password of the credentials file as the fleet's password generation 1"
        })
        return
      }
      return await again() // another replica published first: take up its generation
    }
    const verdict = ledger.judge(stored.generation, stored.password, stored.changedAt)
    const highest = ledger.highestGeneration?.generation ?? 0
    if (verdict === 'older') {
      this.publish({
        type: 'warning',
        message:
          `the fleet store holds password generation ${stored.generation}, older than generation ${highest} which this replica verified before: ` +
          'refused (a replayed record, or a Redis restored from an old backup); check who can write to this Redis'
      })
      return await seedHeld(
        `the fleet store held password generation ${stored.generation}, older than this replica's ${highest}`
      )
    }
    if (verdict === 'conflict') {
      this.publish({
        type: 'warning',
        message:
          `the fleet store holds another password under generation ${stored.generation} than this replica verified: refused, ` +
          'the password in force stays; check who can write to this Redis'
      })
      return
    }
    if (ledger.isRejected(stored.password)) {
      this.publish({
        type: 'warning',
        message: `the fleet store's password generation ${stored.generation} holds a password ThingSpace rejected from this replica: refused, it is never sent again`
      })
      return
    }
    if (verdict === 'same' && held !== undefined && held.generation === stored.generation) {
      this.published = true
      return
    }
    if (stored.password === session.currentCredentials.password) {
      this.hold(stored, true)
      return
    }
    if (held === undefined && verdict === 'same' && !ledger.isOlderGeneration(session.currentCredentials.password)) {
      // The store holds the very generation this replica verified last, and the file a password of no generation it
      // verified: the file was written after it (a rotation killed between its file and its publication, or an edit
      // while this replica was stopped), so it may hold the only copy of the password ThingSpace has. Never
      // overwritten: it waits for a check.
      this.keepNewerFile(stored)
      return
    }
    if (held === undefined) {
      this.adopt(
        stored,
        'warning',
        `the fleet store holds password generation ${stored.generation}, which differs from the password in ${this.options.file.path}; ` +
          'the store wins (the file may be a stale copy, such as an old Secret): taking it into use and rewriting the file'
      )
      return
    }
    this.adopt(
      stored,
      'info',
      `took the fleet's password generation ${stored.generation} into use (held ${held.generation}${stored.publisher === undefined ? '' : `; published by ${stored.publisher}`})`
    )
  }

  /**
   * Takes `stored` into use: the session's next login uses it, and this replica's credentials file is rewritten when it
   * can be.
   */
  private adopt (stored: PasswordGeneration, level: 'info' | 'warning', message: string): void {
    const { file } = this.options
    const session = this.holder
    const current = session.currentCredentials
    if (current.password !== stored.password) this.superseded.add(this.idOf(current.password))
    session.useCredentials({ ...current, password: stored.password })
    this.hold(stored, true)
    this.publish({ type: level, message })
    try {
      file.writePassword(stored.password)
      this.savedToFile = true
    } catch (error) {
      this.savedToFile = false
      this.publish({
        type: 'warning',
        message:
          `password generation ${stored.generation} is in use but could not be written to ${file.path} (${errorCode(error)}); ` +
          'this replica keeps it in memory only (GET /admin/session: password.savedToFile false); make the file writable, or let a restart take it from the fleet store again'
      })
    }
  }

  /**
   * Start-up, the file newer than the store's generation (see reconcile): the store's password is in force (no login
   * with an unchecked password), the file stays as it is, and an explicit reload checks it with one login and
   * publishes it.
   */
  private keepNewerFile (stored: PasswordGeneration): void {
    const session = this.holder
    session.useCredentials({ ...session.currentCredentials, password: stored.password })
    this.hold(stored, true)
    this.savedToFile = false
    this.publish({
      type: 'warning',
      message:
        `${this.options.file.path} holds a password this replica never verified, while the fleet store holds generation ` +
        `${stored.generation}, the last one it verified: the file is newer (a password rotation cut short before it was ` +
        'published, or an edit made while this replica was stopped) and is kept as it is, not rewritten. Generation ' +
        `${stored.generation} stays in force; POST /admin/credentials/reload checks the file's password with one login ` +
        'and, accepted, publishes it to the fleet'
    })
  }

  private idOf (password: string): string {
    return createHmac('sha256', this.salt).update(password).digest('hex')
  }
}
