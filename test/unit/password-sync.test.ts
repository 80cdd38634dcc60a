// Unit tests of password generations in fleet mode (issue 13, items 4 and 5): three replicas on one in-memory fleet
// store, a fake clock and one fake ThingSpace whose password changes on reset. Rotation reaches every replica before
// its next login; one rotation at a time fleet-wide; a flushed store is re-seeded; scheduled rotation rotates on
// exactly one replica; the age gauge.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import t, { type Test } from 'tap'
import type { OAuthGrant, ThingSpaceAuthApi } from '../../src/session/auth-client.js'
import { UpstreamAuthError } from '../../src/session/errors.js'
import { LoginGuard } from '../../src/session/login-guard.js'
import { SessionManager, type SessionCredentials } from '../../src/session/session-manager.js'
import { MemoryFleet, MemoryFleetStore } from '../helpers/memory-store.js'
import type { FleetChangeListener, FleetStore } from '../../src/fleet/store.js'
import { PasswordSync } from '../../src/fleet/password-sync.js'
import { FleetLedger } from '../../src/fleet/ledger.js'
import { CredentialsFile } from '../../src/credentials/credentials-file.js'
import { CredentialOperations, OperationError } from '../../src/credentials/operations.js'
import { PasswordAge, PASSWORD_AGE_FILE } from '../../src/credentials/password-age.js'
import {
  DAY_MS,
  FIRST_CHECK_DELAY_MS,
  ROTATION_CHECK_INTERVAL_MS,
  RotationScheduler
} from '../../src/credentials/rotation-schedule.js'
import type { Clock } from '../../src/clock.js'
import { ProxyMetrics } from '../../src/metrics.js'
import { FakeClock, TimerClock } from '../helpers/fake-clock.js'
import type { SessionEvent } from '../../src/session/events.js'
import type { CredentialsEvent } from '../../src/credentials/events.js'

const ORIGINAL = 'Pw-original-7c1e'
const CREDENTIALS: SessionCredentials = {
  username: 'rotation-user@example.com',
  password: ORIGINAL,
  clientId: 'app-key',
  clientSecret: 'app-secret'
}
const PREFIX = 'm2m-session-proxy:'
const LOCK_TTL_MS = 65_000

/** One ThingSpace account: checks the password at login, generates a new one on reset. */
class FakeThingSpace implements ThingSpaceAuthApi {
  password = ORIGINAL
  logins = 0
  failedLogins = 0
  resets = 0
  readonly loginPasswords: string[] = []
  /** While set, resets wait for it (after checking the old password). */
  holdReset: Promise<void> | undefined
  /** Refuse the session token of the next reset this many times. */
  refuseResetSession = 0

  async fetchOAuthToken (): Promise<OAuthGrant> {
    return { accessToken: `oauth-${randomBytes(6).toString('hex')}`, expiresInSeconds: 3600 }
  }

  async login (_oauth: string, _username: string, password: string): Promise<string> {
    this.loginPasswords.push(password)
    if (password !== this.password) {
      this.failedLogins += 1
      throw new UpstreamAuthError('rejected', 'session login answered 400 UnifiedWebService.Authentication.Failed', 400)
    }
    this.logins += 1
    return `session-${this.logins}-${randomBytes(6).toString('hex')}`
  }

  async logout (): Promise<void> {}

  async resetPassword (_oauth: string, _session: string, oldPassword: string): Promise<string> {
    if (this.refuseResetSession > 0) {
      this.refuseResetSession -= 1
      throw new UpstreamAuthError('session-invalid', 'reset answered 400 SessionToken.Expired', 400)
    }
    if (oldPassword !== this.password) {
      throw new UpstreamAuthError('rejected', 'reset answered 400 oldPassword does not match', 400)
    }
    if (this.holdReset !== undefined) await this.holdReset
    this.resets += 1
    this.password = `Pw-rotated-${this.resets}-${randomBytes(4).toString('hex')}`
    return this.password
  }
}

/** A store whose notifications can be lost (`deaf`), as a replica disconnected from pub/sub. */
function deafenable (inner: FleetStore): { store: FleetStore; deaf: { value: boolean } } {
  const deaf = { value: false }
  const store = new Proxy(inner, {
    get (target, property) {
      if (property === 'subscribe') {
        return (listener: FleetChangeListener) =>
          target.subscribe((change) => {
            if (!deaf.value) listener(change)
          })
      }
      const value: unknown = Reflect.get(target, property, target)
      return typeof value === 'function' ? value.bind(target) : value
    }
  })
  return { store, deaf }
}

/** A credentials file that cannot be written (a read-only Secret mount), whatever the user: root ignores mode bits. */
class ReadOnlyFile extends CredentialsFile {
  override writePassword (): void {
    throw Object.assign(new Error('read-only file system'), { code: 'EROFS' })
  }
}

interface Replica {
  name: string
  dir: string
  file: CredentialsFile
  manager: SessionManager
  sync: PasswordSync
  operations: CredentialOperations
  schedule: RotationScheduler
  age: PasswordAge
  store: FleetStore
  deaf: { value: boolean }
  messages: string[]
  filePassword: () => string
}

interface ReplicaOptions {
  password?: string
  readOnly?: boolean
  rotationDays?: number
  /** Single-process mode: no fleet store. */
  single?: boolean
  /** The directory of a replica stopped before (a restart): its credentials file and state as it left them. */
  dir?: string
}

function replica (
  t: Test,
  fleet: MemoryFleet,
  api: FakeThingSpace,
  clock: FakeClock,
  name: string,
  options: ReplicaOptions = {}
): Replica {
  // One directory per replica (t.testdir is one per test): each has its own credentials file and state.
  const dir = options.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-password-sync-'))
  const credentialsPath = path.join(dir, 'credentials.json')
  if (options.dir === undefined) {
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
    fs.writeFileSync(
      credentialsPath,
      JSON.stringify({ ...CREDENTIALS, password: options.password ?? ORIGINAL, comment: name }),
      { mode: 0o600 }
    )
  }
  const file = options.readOnly === true ? new ReadOnlyFile(credentialsPath) : new CredentialsFile(credentialsPath)
  const credentials = file.read()
  const messages: string[] = []
  const log = (message: string): void => {
    messages.push(message)
  }
  const { store, deaf } = deafenable(new MemoryFleetStore({ fleet, username: CREDENTIALS.username, keyPrefix: PREFIX }))
  const age = PasswordAge.open(dir, credentials.password, clock.now(), log)
  const ledger = FleetLedger.open(dir, credentials.username)
  // What logging would write of the events: their messages.
  const publish = (event: SessionEvent | CredentialsEvent): void => {
    if ('message' in event && event.message !== undefined) log(event.message)
  }
  const sync = new PasswordSync({
    store,
    ledger,
    password: credentials.password,
    file,
    localChangedAt: () => age.changedAt,
    publishRetryDelaysMs: [5, 5],
    passwordAge: {
      observe: (password, changedAt) => {
        age.observe(password, clock.now(), changedAt, 'fleet')
      }
    },
    publish
  })
  const manager = new SessionManager({
    api,
    credentials,
    guard: LoginGuard.open(dir, 2, credentials),
    sessionIdleSeconds: 1200,
    clock,
    fleet:
      options.single === true
        ? undefined
        : {
            store,
            ledger,
            lockTtlMs: LOCK_TTL_MS,
            pollIntervalMs: 20,
            beforeLogin: async () => {
              await sync.catchUp()
            }
          },
    publish: (event) => {
      if (event.type === 'warning') log(event.message)
    }
  })
  const operations = new CredentialOperations({
    session: manager,
    api,
    file,
    clock,
    passwordAge: age,
    rotationDays: options.rotationDays ?? 0,
    fleet: options.single === true ? undefined : { store, sync, ledger, rotationLockTtlMs: 4 * LOCK_TTL_MS },
    publish
  })
  const schedule = new RotationScheduler({ days: options.rotationDays ?? 0, clock, operations, publish })
  if (options.single !== true) sync.start(manager)
  t.teardown(() => {
    manager.close()
    sync.stop()
    schedule.stop()
  })
  return {
    name,
    dir,
    file,
    manager,
    sync,
    operations,
    schedule,
    age,
    store,
    deaf,
    messages,
    filePassword: () => (JSON.parse(fs.readFileSync(credentialsPath, 'utf8')) as { password: string }).password
  }
}

function fleetOf (
  t: Test,
  size = 3,
  options: ReplicaOptions = {}
): { fleet: MemoryFleet; api: FakeThingSpace; clock: FakeClock; replicas: Replica[]; raw: MemoryFleetStore } {
  const clock = new FakeClock()
  const fleet = new MemoryFleet(clock)
  const api = new FakeThingSpace()
  const replicas = Array.from({ length: size }, (_, i) => replica(t, fleet, api, clock, `replica-${i}`, options))
  return {
    fleet,
    api,
    clock,
    replicas,
    raw: new MemoryFleetStore({ fleet, username: CREDENTIALS.username, keyPrefix: PREFIX })
  }
}

/** Lets queued notifications and the syncs they start run. */
async function settle (): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve))
}

async function kindOf (promise: Promise<unknown>): Promise<string> {
  try {
    await promise
    return 'done'
  } catch (error) {
    if (error instanceof OperationError) return error.kind
    throw error
  }
}

/** Every password the test met: none may appear in a message. */
function assertNoSecretIn (t: Test, replicas: Replica[], api: FakeThingSpace): void {
  const secrets = new Set([ORIGINAL, api.password, ...api.loginPasswords])
  const text = replicas.flatMap((r) => r.messages).join('\n')
  for (const secret of secrets) t.notOk(text.includes(secret), 'no password in any message')
}

t.test("start-up: the first replica publishes the file's password as generation 1, the others hold it", async (t) => {
  const { api, replicas, raw } = fleetOf(t)
  for (const { manager } of replicas) await manager.startSession()
  t.equal(api.logins, 1, 'one login for the fleet')
  const stored = await raw.readPassword()
  t.equal(stored?.generation, 1)
  t.equal(stored?.password, ORIGINAL)
  await settle()
  t.same(
    replicas.map((r) => r.sync.status().generation),
    [1, 1, 1]
  )
  t.match(
    replicas[0]?.messages.join('\n'),
    /published the password of the credentials file as the fleet's password generation 1/
  )
})

t.test(
  "start-up: a replica whose file differs from the store takes the store's password, rewrites its file and warns (never the password)",
  async (t) => {
    const { fleet, api, clock, replicas } = fleetOf(t, 1)
    const [first] = replicas as [Replica]
    await first.manager.startSession()
    await first.operations.rotatePassword()
    const stale = replica(t, fleet, api, clock, 'stale', { password: ORIGINAL })
    await stale.sync.catchUp()
    t.equal(stale.manager.currentCredentials.password, api.password, 'the store wins')
    t.equal(stale.filePassword(), api.password, 'its file is rewritten')
    t.match(
      JSON.parse(fs.readFileSync(path.join(stale.dir, 'credentials.json'), 'utf8')),
      { comment: 'stale', clientId: 'app-key' },
      'other fields kept'
    )
    t.match(
      stale.messages.join('\n'),
      /holds password generation 2, which differs from the password in .*the store wins/
    )
    t.ok(stale.sync.isSuperseded(ORIGINAL), 'the old password is known as superseded')
    assertNoSecretIn(t, [first, stale], api)
  }
)

t.test(
  'a rotation killed after its file was written, before it was published: the restart keeps the file, never the old password in it',
  async (t) => {
    const { fleet, api, clock, replicas, raw } = fleetOf(t, 1)
    const [first] = replicas as [Replica]
    await first.manager.startSession()
    // What the kill left: ThingSpace reset the password and the file holds the new one; the store still generation 1.
    const rotated = (api.password = 'Pw-rotated-before-the-kill-3a9d')
    first.file.writePassword(rotated)
    first.manager.close()
    first.sync.stop()
    const restarted = replica(t, fleet, api, clock, 'restarted', { dir: first.dir })
    await restarted.sync.catchUp()
    t.equal(restarted.filePassword(), rotated, 'the file still holds the password ThingSpace has')
    t.match(restarted.messages.join('\n'), /holds a password this replica never verified.*kept as it is, not rewritten/)
    t.equal(restarted.sync.status().savedToFile, false, 'the password in force is not the file\'s')
    await restarted.operations.reload({ login: true })
    t.match(await raw.readPassword(), { generation: 2, password: rotated }, 'checked with one login, then published')
    t.equal(api.failedLogins, 0, 'no failed login at ThingSpace')
    assertNoSecretIn(t, [first, restarted], api)
  }
)

t.test(
  'a replica restarted on its state directory with a file of an older generation it verified: the store wins, as before',
  async (t) => {
    const { fleet, api, clock, replicas } = fleetOf(t, 1)
    const [first] = replicas as [Replica]
    await first.manager.startSession()
    await first.operations.rotatePassword()
    first.manager.close()
    first.sync.stop()
    first.file.writePassword(ORIGINAL) // a stale copy put back, the state directory kept
    const restarted = replica(t, fleet, api, clock, 'restarted', { dir: first.dir })
    await restarted.sync.catchUp()
    t.equal(restarted.filePassword(), api.password, 'its file is rewritten with generation 2')
    t.match(restarted.messages.join('\n'), /the store wins/)
  }
)

t.test(
  'rotation on one replica: one reset, its file first, generation 2 published, every replica takes it and rewrites its file',
  async (t) => {
    const { api, replicas, raw } = fleetOf(t)
    for (const { manager } of replicas) await manager.startSession()
    const [rotating] = replicas as [Replica]
    const result = await rotating.operations.rotatePassword()
    t.match(result, { rotated: true, verified: true, generation: 2 })
    t.equal(api.resets, 1, 'one reset')
    t.equal((await raw.readPassword())?.generation, 2)
    t.equal((await raw.readPassword())?.password, api.password)
    await settle()
    for (const r of replicas) {
      t.equal(r.manager.currentCredentials.password, api.password, `${r.name} uses the new password`)
      t.equal(r.filePassword(), api.password, `${r.name} rewrote its file`)
      t.same(
        r.sync.status(),
        {
          generation: 2,
          changedAt: result.at === undefined ? null : Date.parse(result.at),
          savedToFile: true,
          published: true
        },
        `${r.name} status`
      )
      // The watcher sees the replica's own write: the file holds what is in force, nothing to do.
      const logins = api.logins
      await r.operations.reload({ login: false })
      t.equal(api.logins, logins, `${r.name}: its own write is no change`)
      t.equal(r.sync.status().generation, 2, `${r.name}: nothing published`)
    }
    t.equal(api.failedLogins, 0)
    assertNoSecretIn(t, replicas, api)
  }
)

t.test(
  'one rotation at a time fleet-wide: a second replica gets busy (409) and never reaches ThingSpace',
  async (t) => {
    const { api, replicas } = fleetOf(t)
    for (const { manager } of replicas) await manager.startSession()
    const [a, b] = replicas as [Replica, Replica]
    let release!: () => void
    api.holdReset = new Promise<void>((resolve) => {
      release = resolve
    })
    const first = a.operations.rotatePassword()
    await new Promise((resolve) => setTimeout(resolve, 20))
    t.equal(await kindOf(b.operations.rotatePassword()), 'busy', 'the other replica is refused')
    t.equal(await kindOf(a.operations.rotatePassword()), 'busy', 'a second call on the rotating replica too')
    release()
    api.holdReset = undefined
    t.equal(await kindOf(first), 'done')
    t.equal(api.resets, 1, 'exactly one reset')
    await settle()
    t.equal(
      await kindOf(b.operations.rotatePassword()),
      'done',
      'the next rotation, once the first is over, is allowed'
    )
    t.equal(api.resets, 2)
    await settle()
    t.same(
      replicas.map((r) => r.sync.status().generation),
      [3, 3, 3]
    )
    t.same(
      replicas.map((r) => r.manager.currentCredentials.password === api.password),
      [true, true, true]
    )
  }
)

t.test("the reset's refused session is renewed outside the login lock and the reset asked once more", async (t) => {
  const { api, replicas } = fleetOf(t, 2)
  for (const { manager } of replicas) await manager.startSession()
  api.refuseResetSession = 1
  const result = await (replicas[0] as Replica).operations.rotatePassword()
  t.match(result, { rotated: true, verified: true, generation: 2 })
  t.equal(api.resets, 1)
  t.equal(api.failedLogins, 0)
})

t.test(
  'catch-up before login: a replica that missed the notification logs in with the newest password, never an older one',
  async (t) => {
    const { api, replicas, raw } = fleetOf(t)
    for (const { manager } of replicas) await manager.startSession()
    const [rotating, , missed] = replicas as [Replica, Replica, Replica]
    missed.deaf.value = true
    await rotating.operations.rotatePassword()
    await settle()
    t.equal(missed.manager.currentCredentials.password, ORIGINAL, 'it still holds the old password in memory')
    // The shared session is gone (expired, logged out): the replica must log in itself.
    await raw.clearSession()
    const before = api.loginPasswords.length
    await missed.manager.restartSession('admin')
    t.same(api.loginPasswords.slice(before), [api.password], 'its one login used the newest password')
    t.equal(api.failedLogins, 0, 'no failed login')
    t.equal(missed.filePassword(), api.password, 'and its file was rewritten')
    t.equal(missed.sync.status().generation, 2)
  }
)

t.test(
  'a replica that cannot write its credentials file keeps the new password in memory, warns, and its status says so',
  async (t) => {
    const { fleet, api, clock, replicas } = fleetOf(t, 1)
    const [rotating] = replicas as [Replica]
    const readOnly = replica(t, fleet, api, clock, 'read-only', { readOnly: true })
    await rotating.manager.startSession()
    await readOnly.manager.startSession()
    await rotating.operations.rotatePassword()
    await settle()
    t.equal(readOnly.manager.currentCredentials.password, api.password, 'in use, in memory')
    t.equal(readOnly.filePassword(), ORIGINAL, 'the file still holds the old one')
    t.match(readOnly.operations.passwordStatus(), { generation: 2, savedToFile: false, published: true })
    t.match(
      readOnly.messages.join('\n'),
      /password generation 2 is in use but could not be written to .*EROFS.*in memory only/
    )
    // The watcher or an operator reloading that stale file changes nothing: no older password is published.
    await readOnly.operations.reload({ login: false })
    t.equal(readOnly.manager.currentCredentials.password, api.password, 'the stale file does not win')
    t.equal(readOnly.sync.status().generation, 2, 'nothing published')
    t.match(readOnly.messages.join('\n'), /holds a password older than the fleet's newest generation/)
    await readOnly.manager.restartSession('admin')
    t.equal(api.failedLogins, 0)
    assertNoSecretIn(t, [rotating, readOnly], api)
  }
)

t.test(
  "the rotating replica's own file cannot be written: it keeps going in memory, publishes, and answers not-saved",
  async (t) => {
    const { fleet, api, clock, replicas, raw } = fleetOf(t, 1)
    const [other] = replicas as [Replica]
    const rotating = replica(t, fleet, api, clock, 'rotating')
    await other.manager.startSession()
    await rotating.manager.startSession()
    // Writable when checked up front, failing at the write itself (a disk filling up).
    rotating.file.writePassword = () => {
      throw Object.assign(new Error('no space'), { code: 'ENOSPC' })
    }
    t.equal(await kindOf(rotating.operations.rotatePassword()), 'not-saved')
    t.equal(api.resets, 1)
    t.equal((await raw.readPassword())?.password, api.password, 'published all the same')
    t.equal(rotating.manager.currentCredentials.password, api.password)
    t.match(rotating.operations.passwordStatus(), { generation: 2, savedToFile: false })
    await settle()
    t.equal(other.filePassword(), api.password, 'the others have it')
  }
)

t.test('a flushed store is re-seeded with the generation the replicas hold when they reconnect', async (t) => {
  const { fleet, api, replicas, raw } = fleetOf(t)
  for (const { manager } of replicas) await manager.startSession()
  await (replicas[0] as Replica).operations.rotatePassword()
  await settle()
  fleet.flush()
  await settle()
  const stored = await raw.readPassword()
  t.equal(stored?.generation, 2, 'generation 2 is back')
  t.equal(stored?.password, api.password, "with the newest password, not a file's generation 1")
  t.match(replicas.flatMap((r) => r.messages).join('\n'), /re-seeded it with generation 2/)
  // Going on from there: the next rotation is generation 3.
  t.match(await (replicas[1] as Replica).operations.rotatePassword(), { generation: 3 })
})

t.test(
  "an operator's change of a replica's credentials file is published as the next generation; the others take it up",
  async (t) => {
    const { api, replicas } = fleetOf(t)
    for (const { manager } of replicas) await manager.startSession()
    const [edited, other] = replicas as [Replica, Replica]
    api.password = 'Pw-changed-by-operator-1f'
    fs.writeFileSync(
      path.join(edited.dir, 'credentials.json'),
      JSON.stringify({ ...CREDENTIALS, password: api.password }),
      { mode: 0o600 }
    )
    await edited.operations.reload({ login: true })
    await settle()
    t.equal(edited.sync.status().generation, 2)
    t.equal(other.manager.currentCredentials.password, api.password)
    t.equal(other.filePassword(), api.password)
    t.equal(api.failedLogins, 0)
  }
)

t.test(
  'publishing fails (store down after the reset): retried, then held and re-seeded once the store is back',
  async (t) => {
    const { fleet, api, clock, raw } = fleetOf(t, 0)
    const only = replica(t, fleet, api, clock, 'only')
    await only.manager.startSession()
    await only.sync.catchUp()
    const store = only.store as unknown as { publishPassword: unknown; seedPassword: unknown; readPassword: unknown }
    const originals = {
      publishPassword: store.publishPassword,
      seedPassword: store.seedPassword,
      readPassword: store.readPassword
    }
    let failing = false
    const reset = api.resetPassword.bind(api)
    api.resetPassword = async (...args) => {
      const password = await reset(...args)
      failing = true // the store goes down right after ThingSpace changed the password
      return password
    }
    for (const name of ['publishPassword', 'seedPassword', 'readPassword'] as const) {
      const original = originals[name] as (...args: unknown[]) => Promise<unknown>
      store[name] = async (...args: unknown[]) => {
        if (failing) throw new Error('cannot reach Redis: ECONNREFUSED')
        return await original.apply(only.store, args)
      }
    }
    const result = await only.operations.rotatePassword()
    t.equal(result.generation, 2, 'held as generation 2')
    t.match(only.sync.status(), { generation: 2, published: false, savedToFile: true })
    t.match(only.messages.join('\n'), /THE NEW PASSWORD IS NOT IN THE FLEET STORE/)
    t.equal((await raw.readPassword())?.generation, 1, 'the store has only the old one')
    failing = false
    fleet.flush() // the store comes back (empty, or not: seedPassword writes over an older generation)
    await settle()
    t.equal((await raw.readPassword())?.password, api.password, 'the held password reached the store')
    t.match(only.sync.status(), { generation: 2, published: true })
    assertNoSecretIn(t, [only], api)
  }
)

t.test('scheduled rotation: due → exactly one of three replicas rotates; checked again, none', async (t) => {
  const { api, clock, replicas } = fleetOf(t, 3, { rotationDays: 30 })
  for (const { manager } of replicas) await manager.startSession()
  await settle()
  clock.advance(31 * DAY_MS)
  const outcomes = await Promise.all(replicas.map(async (r) => await r.schedule.check()))
  t.equal(api.resets, 1, 'one reset for the fleet')
  t.equal(outcomes.filter((outcome) => outcome === 'rotated').length, 1, `one replica rotated (${outcomes.join(', ')})`)
  await settle()
  const again = []
  for (const r of replicas) again.push(await r.schedule.check())
  t.same(again, ['not-due', 'not-due', 'not-due'])
  t.equal(api.resets, 1, 'still one')
  t.same(
    replicas.map((r) => r.manager.currentCredentials.password === api.password),
    [true, true, true]
  )
})

t.test(
  'scheduled rotation: a replica with a stale view of the age rotates nothing once it has caught up',
  async (t) => {
    const { api, clock, replicas } = fleetOf(t, 2, { rotationDays: 30 })
    for (const { manager } of replicas) await manager.startSession()
    const [first, second] = replicas as [Replica, Replica]
    second.deaf.value = true
    clock.advance(31 * DAY_MS)
    t.equal(await first.schedule.check(), 'rotated')
    t.equal(await second.schedule.check(), 'not-due', "it read the fleet's change time after taking the lock")
    t.equal(api.resets, 1)
  }
)

t.test('scheduled rotation: not due → no replica rotates; off → none either', async (t) => {
  const { api, clock, replicas } = fleetOf(t, 3, { rotationDays: 30 })
  for (const { manager } of replicas) await manager.startSession()
  clock.advance(29 * DAY_MS)
  t.same(await Promise.all(replicas.map(async (r) => await r.schedule.check())), ['not-due', 'not-due', 'not-due'])
  const off = fleetOf(t, 1)
  off.clock.advance(400 * DAY_MS)
  t.equal(await (off.replicas[0] as Replica).schedule.check(), 'off')
  t.equal(api.resets + off.api.resets, 0)
})

t.test(
  'single process: the change time lives in the state directory, keyed to the password; scheduled rotation when due',
  async (t) => {
    const clock = new FakeClock()
    const fleet = new MemoryFleet(clock)
    const api = new FakeThingSpace()
    const single = replica(t, fleet, api, clock, 'single', { single: true, rotationDays: 2 })
    await single.manager.startSession()
    const record = JSON.parse(fs.readFileSync(path.join(single.dir, PASSWORD_AGE_FILE), 'utf8')) as Record<
      string,
      unknown
    >
    t.match(record, { version: 1, changedAt: clock.now(), source: 'first-seen' })
    t.notOk(JSON.stringify(record).includes(ORIGINAL), 'a salted hash, never the password')
    t.match(single.operations.passwordStatus(), {
      generation: null,
      published: null,
      changedAtSource: 'first-seen',
      ageSeconds: 0,
      rotationDays: 2
    })
    clock.advance(DAY_MS)
    t.equal(await single.schedule.check(), 'not-due')
    // Reopened (a restart) with the same password: the age goes on, it does not start again.
    t.equal(PasswordAge.open(single.dir, ORIGINAL, clock.now()).changedAt, clock.now() - DAY_MS)
    clock.advance(DAY_MS)
    t.equal(await single.schedule.check(), 'rotated')
    t.equal(api.resets, 1)
    t.equal(single.filePassword(), api.password)
    t.match(single.operations.passwordStatus(), { changedAtSource: 'rotated', ageSeconds: 0, savedToFile: true })
    // A file changed by hand to another password: its age starts again.
    clock.advance(DAY_MS / 2)
    t.equal(PasswordAge.open(single.dir, 'Pw-other', clock.now()).source, 'first-seen')
  }
)

t.test('a password age record that cannot be read starts again from now, with a warning naming it', async (t) => {
  const dir = t.testdir({ [PASSWORD_AGE_FILE]: '{"version":1,"salt":' })
  const warnings: string[] = []
  const age = PasswordAge.open(dir, ORIGINAL, 1_000_000, (message) => warnings.push(message))
  t.equal(age.source, 'first-seen')
  t.equal(age.changedAt, 1_000_000)
  t.match(warnings, [/password-age\.json could not be read as a password age record: .*counts from now/])
  const fresh = t.testdir({})
  const none: string[] = []
  PasswordAge.open(fresh, ORIGINAL, 1_000_000, (message) => none.push(message))
  t.same(none, [], 'a missing record is no warning')
})

t.test('m2m_proxy_password_age_seconds: the age of the password in force, in both modes', async (t) => {
  const { clock, replicas } = fleetOf(t, 1)
  const [fleetReplica] = replicas as [Replica]
  await fleetReplica.manager.startSession()
  const single = replica(t, new MemoryFleet(clock), new FakeThingSpace(), clock, 'single', { single: true })
  clock.advance(DAY_MS + 5_000)
  for (const r of [fleetReplica, single]) {
    const metrics = new ProxyMetrics({
      session: r.manager,
      passwordAgeSeconds: () => r.operations.passwordStatus().ageSeconds ?? undefined
    })
    const text = await metrics.registry.metrics()
    t.match(text, /# TYPE m2m_proxy_password_age_seconds gauge/)
    t.match(text, /\nm2m_proxy_password_age_seconds 86405\n/, r.name)
  }
})

t.test(
  'the schedule: hourly, or at the due time if sooner, never within a minute of start; a failed check waits an hour',
  async (t) => {
    const clock = new FakeClock()
    const api = new FakeThingSpace()
    const single = replica(t, new MemoryFleet(clock), api, clock, 'single', { single: true, rotationDays: 1 })
    await single.manager.startSession()
    const timers: Array<{ run: () => void; ms: number }> = []
    const timerClock: Clock = {
      now: clock.now,
      setTimer: (run, ms) => {
        timers.push({ run, ms })
        return { cancel: () => {} }
      }
    }
    const schedule = new RotationScheduler({
      days: 1,
      clock: timerClock,
      operations: single.operations,
      publish: (event) => {
        if (event.type === 'warning') single.messages.push(event.message)
      }
    })
    t.teardown(() => schedule.stop())
    /** Runs the last timer and waits for the one its check schedules. */
    const fire = async (): Promise<number> => {
      const count = timers.length
      clock.advance((timers.at(-1) as { ms: number }).ms)
      timers.at(-1)?.run()
      for (let i = 0; i < 500 && timers.length === count; i++) await new Promise((resolve) => setImmediate(resolve))
      return (timers.at(-1) as { ms: number }).ms
    }
    schedule.start()
    t.equal(timers.at(-1)?.ms, ROTATION_CHECK_INTERVAL_MS, 'not due: the first check in an hour')
    t.equal(await fire(), ROTATION_CHECK_INTERVAL_MS, 'not due: checked again in an hour')
    clock.advance(DAY_MS - 2 * ROTATION_CHECK_INTERVAL_MS - 60_000)
    t.equal(await fire(), 60_000, 'due in a minute: checked then, sooner than an hour')
    t.equal(api.resets, 0)
    t.equal(await fire(), ROTATION_CHECK_INTERVAL_MS, 'rotated; the next one is a day away: hourly checks')
    t.equal(api.resets, 1, 'rotated at the due time')
    clock.advance(DAY_MS)
    api.refuseResetSession = 5 // every reset refused: the scheduled rotation fails
    t.equal(await fire(), ROTATION_CHECK_INTERVAL_MS, 'after a failure, an hour, not a loop of resets')
    t.equal(api.resets, 1)
    t.match(single.messages.join('\n'), /scheduled password rotation failed/)
    // Overdue at start (a proxy down past the due time): the first check waits a minute for the start-up login.
    const late = new RotationScheduler({ days: 1, clock: timerClock, operations: single.operations })
    t.teardown(() => late.stop())
    late.start()
    t.equal(timers.at(-1)?.ms, FIRST_CHECK_DELAY_MS)
  }
)

t.test(
  "the schedule follows the change time it learns after start-up (a fleet generation older than the file's first sight)",
  async (t) => {
    const clock = new FakeClock()
    const api = new FakeThingSpace()
    const single = replica(t, new MemoryFleet(clock), api, clock, 'single', { single: true, rotationDays: 1 })
    let changedAt = clock.now() // the file's password, first seen now
    const operations = {
      passwordChangedAt: () => changedAt,
      rotateIfDue: async () => await single.operations.rotateIfDue(DAY_MS)
    }
    const timers: number[] = []
    const timerClock: Clock = {
      now: clock.now,
      setTimer: (_run, ms) => {
        timers.push(ms)
        return { cancel: () => {} }
      }
    }
    const schedule = new RotationScheduler({ days: 1, clock: timerClock, operations })
    t.teardown(() => schedule.stop())
    schedule.changeTimeUpdated()
    t.same(timers, [], 'nothing before start')
    schedule.start()
    t.equal(timers.at(-1), ROTATION_CHECK_INTERVAL_MS, 'not due as far as it knows: an hour')
    clock.advance(2000)
    changedAt = clock.now() - 100 * DAY_MS // the fleet's generation arrives: long overdue
    schedule.changeTimeUpdated()
    t.equal(timers.at(-1), FIRST_CHECK_DELAY_MS - 2000, 'checked a minute after start, not an hour')
    clock.advance(FIRST_CHECK_DELAY_MS)
    changedAt = clock.now() - DAY_MS + 10 * 60_000
    schedule.changeTimeUpdated()
    t.equal(timers.at(-1), 10 * 60_000, 'or at its due time when that is later')
  }
)

// Issue 17, items 1 and 2: someone who can write the store but has no fleet key can only replay records that were once
// valid (the Redis adapter refuses changed fields: fleet-redis-store.test.ts). Here the replays, on the memory store.

/**
 * Puts `record` in the store as a replay would (no compare-and-set) and tells the replicas a new generation is there.
 */
function replayPassword (
  fleet: MemoryFleet,
  record: { generation: number; password: string; changedAt: number },
  announced: number
): void {
  const account = fleet.account(PREFIX, CREDENTIALS.username)
  account.password = { ...record }
  for (const listener of [...account.listeners]) listener({ kind: 'password', generation: announced })
}

t.test(
  'a replayed older generation, or another password under the same number, is refused: the password in force stays, no failed login',
  async (t) => {
    const { fleet, api, clock, replicas, raw } = fleetOf(t)
    for (const { manager } of replicas) await manager.startSession()
    const generation1 = await raw.readPassword()
    await (replicas[0] as Replica).operations.rotatePassword()
    await settle()
    const current = api.password
    t.same(
      replicas.map((r) => r.filePassword()),
      [current, current, current]
    )

    replayPassword(fleet, generation1 as { generation: number; password: string; changedAt: number }, 3)
    await settle()
    t.same(
      replicas.map((r) => r.manager.currentCredentials.password),
      [current, current, current],
      'no replica took the old password'
    )
    t.same(
      replicas.map((r) => r.filePassword()),
      [current, current, current],
      'no file lost the working password'
    )
    t.match(
      replicas.flatMap((r) => r.messages).join('\n'),
      /holds password generation 1, older than generation 2 which this replica verified before: refused/
    )
    t.match(
      await raw.readPassword(),
      { generation: 2, password: current },
      're-seeded with the generation the replicas verified'
    )

    replayPassword(fleet, { generation: 2, password: ORIGINAL, changedAt: 0 }, 3)
    await settle()
    t.same(
      replicas.map((r) => r.manager.currentCredentials.password),
      [current, current, current]
    )
    t.match(
      replicas.flatMap((r) => r.messages).join('\n'),
      /another password under generation 2 than this replica verified: refused/
    )

    // A restart keeps what the replica verified (its state directory): the replayed generation 1 is still refused.
    const [first] = replicas as [Replica]
    first.manager.close()
    first.sync.stop()
    replayPassword(fleet, generation1 as { generation: number; password: string; changedAt: number }, 1)
    await settle()
    const restarted = replica(t, fleet, api, clock, 'restarted', { dir: first.dir })
    await restarted.sync.catchUp()
    t.equal(
      restarted.manager.currentCredentials.password,
      current,
      'the restarted replica keeps generation 2 from its file'
    )
    t.equal(restarted.sync.status().generation, 2)
    await raw.clearSession()
    for (const r of [restarted, replicas[1] as Replica, replicas[2] as Replica]) await r.manager.restartSession('admin')
    t.equal(api.failedLogins, 0, 'no failed login at ThingSpace')
    assertNoSecretIn(t, [...replicas, restarted], api)
  }
)

t.test(
  'scheduled rotation reads the change time of a generation it verified: a replayed old one triggers no reset',
  async (t) => {
    const { fleet, api, clock, replicas, raw } = fleetOf(t, 2, { rotationDays: 90 })
    for (const { manager } of replicas) await manager.startSession()
    const generation1 = await raw.readPassword()
    await (replicas[0] as Replica).operations.rotatePassword()
    await settle()
    t.equal(api.resets, 1)
    replayPassword(
      fleet,
      { ...(generation1 as { generation: number; password: string; changedAt: number }), changedAt: 0 },
      3
    )
    await settle()
    for (const r of replicas) {
      t.equal(
        await r.operations.rotateIfDue(90 * DAY_MS),
        undefined,
        'not due: the verified generation is a few seconds old'
      )
    }
    clock.advance(1000)
    t.equal(api.resets, 1, 'no reset at ThingSpace')
  }
)

t.test(
  'a password ThingSpace rejected from a replica is never sent again by it, whatever the store says',
  async (t) => {
    const { fleet, api, clock, replicas, raw } = fleetOf(t, 1)
    const [only] = replicas as [Replica]
    await only.manager.startSession()
    api.password = 'Pw-changed-outside-the-fleet'
    await raw.clearSession()
    await t.rejects(only.manager.restartSession('admin'), {
      name: 'AuthUnavailableError',
      message: /ThingSpace rejected the login/
    })
    t.equal(api.failedLogins, 1)
    // The writer resets the count and the lock, and announces the same generation again.
    await raw.resetLoginFailures()
    replayPassword(fleet, { generation: 1, password: ORIGINAL, changedAt: 1 }, 2)
    await settle()
    clock.advance(10 * 60_000) // past the local backoff
    await t.rejects(only.manager.restartSession('admin'), {
      name: 'AuthUnavailableError',
      message: /rejected the password in force from this replica before: it is never sent again/
    })
    t.equal(api.failedLogins, 1, 'not sent again')
  }
)

t.test(
  'the fleet failure count set back from outside buys no attempt: each replica keeps the count it saw',
  async (t) => {
    const { api, replicas, raw } = fleetOf(t)
    for (const { manager } of replicas) await manager.startSession()
    api.password = 'Pw-changed-outside-the-fleet'
    await raw.clearSession()
    for (const r of replicas) await r.manager.restartSession('admin').catch(() => undefined)
    t.equal(api.failedLogins, 2, 'M2M_PROXY_MAX_LOGIN_FAILURES 2 fleet-wide')
    t.equal(await raw.readLoginFailures(), 2)
    for (let round = 0; round < 3; round++) {
      await raw.resetLoginFailures()
      await raw.clearSession()
      for (const r of replicas) {
        await t.rejects(r.manager.restartSession('admin'), { name: 'AuthUnavailableError', message: /rejected/ })
      }
    }
    t.equal(api.failedLogins, 2, 'no failed login caused by the resets')
    t.equal(await raw.readLoginFailures(), 2, 'the count is put back')
    t.match(
      replicas.flatMap((r) => r.messages).join('\n'),
      /login failure count in the store is 0, lower than the 2 this replica saw with no login success since/
    )
  }
)

t.test(
  'a negative fleet failure count written before any failure: no replica logs in on it (5 replicas, the lockout at 5)',
  async (t) => {
    const { api, replicas, raw, fleet } = fleetOf(t, 5)
    for (const { manager } of replicas) await manager.startSession()
    api.password = 'Pw-changed-outside-the-fleet'
    fleet.account(PREFIX, CREDENTIALS.username).failures = -10
    await raw.clearSession()
    for (const r of replicas) await t.rejects(r.manager.restartSession('admin'), { name: 'AuthUnavailableError' })
    t.equal(api.failedLogins, 0, 'not one failed login: the count is taken as at the limit')
    t.equal(await raw.readLoginFailures(), 2)
  }
)

t.test(
  'a fleet failure count written from outside as no count (negative, huge, not a number) buys no attempt, is put back',
  async (t) => {
    const { api, replicas, raw, fleet } = fleetOf(t)
    for (const { manager } of replicas) await manager.startSession()
    api.password = 'Pw-changed-outside-the-fleet'
    await raw.clearSession()
    for (const r of replicas) await r.manager.restartSession('admin').catch(() => undefined)
    t.equal(api.failedLogins, 2, 'M2M_PROXY_MAX_LOGIN_FAILURES 2 fleet-wide')
    for (const written of [-10, 1_000_000, Number.NaN]) {
      fleet.account(PREFIX, CREDENTIALS.username).failures = written
      await raw.clearSession()
      for (const r of replicas) {
        await t.rejects(r.manager.restartSession('admin'), { name: 'AuthUnavailableError' }, String(written))
      }
      t.equal(api.failedLogins, 2, `${written}: no failed login caused`)
      t.equal(await raw.readLoginFailures(), 2, `${written}: the count is put back`)
    }
    t.match(
      replicas.flatMap((r) => r.messages).join('\n'),
      /login failure count in the store \(its failures key\) is not a count from 0 to 4: written from outside; it is put back at 2/
    )
    for (const r of replicas) {
      const ledger = JSON.parse(fs.readFileSync(path.join(r.dir, 'fleet-ledger.json'), 'utf8')) as { failuresSeen: number }
      t.ok(
        Number.isSafeInteger(ledger.failuresSeen) && ledger.failuresSeen >= 1 && ledger.failuresSeen <= 2,
        `each replica's own record holds what it saw or the limit, never what was written (${ledger.failuresSeen})`
      )
    }
  }
)

t.test("POST /admin/session/end on one replica: every replica drops the fleet's session at once", async (t) => {
  const { api, replicas } = fleetOf(t)
  for (const { manager } of replicas) await manager.startSession()
  t.same(
    replicas.map((r) => r.manager.snapshot().state),
    ['active', 'active', 'active']
  )
  t.equal(await (replicas[0] as Replica).manager.endSession(), true)
  await settle()
  t.same(
    replicas.map((r) => r.manager.snapshot().state),
    ['none', 'none', 'none'],
    'none still reports the dead session as active'
  )
  const tokens = await (replicas[2] as Replica).manager.acquireTokens()
  t.equal(tokens.sessionToken.startsWith('session-2-'), true, 'the next request logs in once')
  t.equal(api.logins, 2)
})

// Issue 17, item 3: an operator's edit in fleet mode. A changed file is checked with one guarded login before it is
// published.

function writeFile (r: Replica, password: string): void {
  fs.writeFileSync(path.join(r.dir, 'credentials.json'), JSON.stringify({ ...CREDENTIALS, password }), { mode: 0o600 })
}

t.test(
  "a typo in one replica's file: one checked login, rejected, stays local; restoring the file and one reload bring the whole fleet back",
  async (t) => {
    const { api, replicas, raw } = fleetOf(t)
    for (const { manager } of replicas) await manager.startSession()
    const [edited, second, third] = replicas as [Replica, Replica, Replica]

    writeFile(edited, 'Pw-typo-1')
    t.equal(
      await kindOf(edited.operations.reload({ login: false })),
      'credentials-rejected',
      "the watcher's reload checks it"
    )
    t.equal(api.failedLogins, 1, 'one checked login')
    t.equal((await raw.readPassword())?.generation, 1, 'nothing published')
    t.same([second.filePassword(), third.filePassword()], [ORIGINAL, ORIGINAL], "no other replica's file changed")
    t.equal(
      edited.manager.currentCredentials.password,
      ORIGINAL,
      "the fleet's password stays in force on the edited replica"
    )
    t.equal(edited.manager.notReadyReason(), 'credentials-rejected', 'its readiness says so')
    t.match(
      edited.messages.join('\n'),
      new RegExp(`ThingSpace rejected the credentials in ${edited.file.path}: they stay local to this replica`)
    )
    t.equal(second.manager.notReadyReason(), undefined, 'the others serve')

    // The same typo again is never sent; a second one is checked (the fleet's count reaches
    // M2M_PROXY_MAX_LOGIN_FAILURES).
    t.equal(await kindOf(edited.operations.reload({ login: true })), 'unchanged-while-rejected')
    t.equal(api.failedLogins, 1, 'a rejected password is not sent again')
    writeFile(edited, 'Pw-typo-2')
    t.equal(await kindOf(edited.operations.reload({ login: false })), 'credentials-rejected')
    t.equal(api.failedLogins, 2)
    // The session ends: with the fleet's count at 2 no replica may log in any more.
    await raw.clearSession()
    for (const r of [second, third]) {
      await t.rejects(r.manager.restartSession('admin'), { name: 'AuthUnavailableError', message: /across the fleet/ })
    }
    t.equal(api.failedLogins, 2, 'the guard holds fleet-wide')

    // The way back: the known-good password into the edited replica's file (the watcher), then one explicit reload
    // there.
    writeFile(edited, ORIGINAL)
    await edited.operations.reload({ login: false })
    t.match(
      edited.messages.join('\n'),
      /holds the password in force again/,
      'the edit back ends the rejected state of the check'
    )
    await edited.operations.reload({ login: true })
    t.equal(edited.manager.notReadyReason(), undefined, 'ready again')
    t.equal(await raw.readLoginFailures(), 0, "one login with the fleet's password reset the fleet's count")
    for (const r of [second, third]) {
      await r.manager.restartSession('admin')
      t.equal(r.manager.notReadyReason(), undefined, `${r.name} serves again`)
    }
    t.equal(api.failedLogins, 2, 'no further failed login')
    t.same(
      replicas.map((r) => r.filePassword()),
      [ORIGINAL, ORIGINAL, ORIGINAL]
    )
    t.equal((await raw.readPassword())?.generation, 1, 'no typo was ever a generation')
    assertNoSecretIn(t, replicas, api)
  }
)

t.test('a changed file ThingSpace accepts is checked once, then published; the others take it up', async (t) => {
  const { api, replicas, raw } = fleetOf(t)
  for (const { manager } of replicas) await manager.startSession()
  const [edited, other] = replicas as [Replica, Replica]
  api.password = 'Pw-changed-in-thingspace-9a'
  writeFile(edited, api.password)
  const loginsBefore = api.logins
  await edited.operations.reload({ login: false })
  t.equal(api.logins - loginsBefore, 1, 'one checked login, even though a shared session was alive')
  await settle()

  t.match(await raw.readPassword(), { generation: 2, password: api.password })
  t.equal(other.filePassword(), api.password)
  t.match(edited.messages.join('\n'), /checking the new credentials with one login before the fleet uses them/)
  t.equal(api.failedLogins, 0)
})

t.test('the pauses between attempts to publish run on the injected clock', async (t) => {
  const clock = new TimerClock()
  const store = new MemoryFleetStore({
    fleet: new MemoryFleet(clock),
    username: CREDENTIALS.username,
    keyPrefix: PREFIX
  })
  let attempts = 0
  store.readPassword = async () => {
    attempts += 1
    throw new Error('cannot reach Redis: ECONNREFUSED')
  }
  const dir = t.testdir({ 'credentials.json': JSON.stringify(CREDENTIALS) })
  const warnings: string[] = []
  const sync = new PasswordSync({
    store,
    ledger: FleetLedger.open(dir, CREDENTIALS.username),
    password: ORIGINAL,
    file: new CredentialsFile(path.join(dir, 'credentials.json')),
    localChangedAt: () => clock.now(),
    publishRetryDelaysMs: [60_000, 120_000],
    clock,
    publish: (event) => {
      if (event.type === 'warning') warnings.push(event.message)
    }
  })
  const published = sync.publishNew('Pw-next-1', clock.now(), ORIGINAL, true)
  await settle()
  t.equal(attempts, 1, 'the first attempt at once')
  t.same(clock.pending, [60_000], 'the next one a minute away on the clock')
  clock.advance(59_999)
  await settle()
  t.equal(attempts, 1, 'not before')
  clock.advance(1)
  await settle()
  t.equal(attempts, 2)
  t.same(clock.pending, [120_000])
  clock.advance(120_000)
  t.match(await published, { published: false, generation: 1 }, 'held, unpublished, after the last attempt')
  t.equal(attempts, 3)
  t.equal(warnings.length, 3)
})
