// The FleetStore contract, run against both adapters (test/unit/fleet-memory-store.test.ts,
// test/integration/fleet-redis-store.test.ts).

import { randomBytes } from 'node:crypto'
import type { Test } from 'tap'
import type { FleetChange, FleetStore } from '../../src/fleet/store.js'
import { lockTag, type ReplicaBeat } from '../../src/fleet/replicas.js'

/** A heartbeat of replica `id`, written at `seenAt`. */
export function beat (id: string, seenAt: number, overrides: Partial<ReplicaBeat> = {}): ReplicaBeat {
  return {
    id,
    host: id.split('/')[0] ?? id,
    pid: Number(id.split('/')[1] ?? 1),
    version: '0.1.0',
    state: 'active',
    ready: true,
    notReadyReason: null,
    generation: 1,
    loggedInAt: new Date(seenAt).toISOString(),
    logins: 1,
    consecutiveLoginFailures: 0,
    maxLoginFailures: 2,
    seenAt,
    intervalMs: 5000,
    ...overrides
  }
}

export interface FleetStoreHarness {
  /** A new store (its own connection, as another replica) for `username` under `keyPrefix`, connected. */
  open: (keyPrefix: string, username: string) => Promise<FleetStore>
  /** Lets `ms` pass on the stores' clock (a fake clock moves; real time is waited for). */
  elapse: (ms: number) => Promise<void>
  /** The stores' clock. */
  now: () => number
  /**
   * Every value stored under `keyPrefix`, as the backing store holds it; absent for an adapter that keeps nothing
   * outside the process.
   */
  rawValues?: (keyPrefix: string) => Promise<string[]>
  /** Removes what the test stored under `keyPrefix`. */
  cleanup: (keyPrefix: string) => Promise<void>
}

/** Time a notification may take to arrive. */
const DELIVERY_MS = 2000

function waitForChange (changes: FleetChange[], test: (change: FleetChange) => boolean): Promise<void> {
  const started = Date.now()
  return new Promise((resolve, reject) => {
    const poll = (): void => {
      if (changes.some(test)) resolve()
      else if (Date.now() - started > DELIVERY_MS) { reject(new Error(`no such change within ${DELIVERY_MS} ms (got ${JSON.stringify(changes)})`)) } else setTimeout(poll, 5)
    }
    poll()
  })
}

export function fleetStoreContract (t: Test, harness: FleetStoreHarness): void {
  /** A test with its own key prefix and account, its stores closed and its keys removed at the end. */
  function storeTest (
    name: string,
    body: (t: Test, open: () => Promise<FleetStore>, context: { keyPrefix: string; username: string }) => Promise<void>
  ): void {
    t.test(name, async (t) => {
      const keyPrefix = `m2m-session-proxy-test:${randomBytes(6).toString('hex')}:`
      const username = `user-${randomBytes(4).toString('hex')}`
      const stores: FleetStore[] = []
      t.teardown(async () => {
        await Promise.all(stores.map(async (store) => await store.close()))
        await harness.cleanup(keyPrefix)
      })
      await body(
        t,
        async () => {
          const store = await harness.open(keyPrefix, username)
          stores.push(store)
          return store
        },
        { keyPrefix, username }
      )
    })
  }

  storeTest('only one of many concurrent takers gets the login lock', async (t, open) => {
    const stores = await Promise.all([open(), open(), open()])
    const takes = await Promise.all(
      Array.from({ length: 12 }, async (_, i) => await (stores[i % 3] as FleetStore).takeLock('login', 5000))
    )
    const winners = takes.filter((lock) => lock !== undefined)
    t.equal(winners.length, 1, 'exactly one lock')
    t.match(winners[0]?.owner, /^[0-9a-f]{12}\.[0-9a-f]{32}$/, "the taker's lock tag and a random owner id")
  })

  storeTest('the lock is released only by its owner; a stale holder releasing is a no-op', async (t, open) => {
    const [a, b] = await Promise.all([open(), open()])
    const lock = await a.takeLock('login', 5000)
    if (lock === undefined) throw new Error('the first take must succeed')
    t.equal(await b.releaseLock({ name: 'login', owner: 'someone-else' }), false, 'another owner id releases nothing')
    t.equal(
      await b.releaseLock({ name: 'rotation', owner: lock.owner }),
      false,
      'the same owner id releases nothing under another lock name'
    )
    t.equal(await b.takeLock('login', 5000), undefined, 'still held')
    t.equal(await a.releaseLock(lock), true, 'the owner releases it')
    t.equal(await a.releaseLock(lock), false, 'twice is a no-op')
    const next = await b.takeLock('login', 200)
    t.ok(next, 'free again after release')
    await harness.elapse(300)
    const third = await a.takeLock('login', 5000)
    t.ok(third, 'expiry frees a lock whose holder never released it')
    t.equal(
      await b.releaseLock(next as NonNullable<typeof next>),
      false,
      "the expired holder cannot release the new holder's lock"
    )
    t.equal(await b.takeLock('login', 5000), undefined, 'the new holder still holds it')
  })

  storeTest('the login and rotation locks are independent', async (t, open) => {
    const [a, b] = await Promise.all([open(), open()])
    const rotation = await a.takeLock('rotation', 5000)
    t.equal(rotation?.name, 'rotation')
    t.equal(await b.takeLock('rotation', 5000), undefined, 'one rotation at a time')
    const login = await b.takeLock('login', 5000)
    t.equal(login?.name, 'login', 'the login lock is free while a rotation runs')
    t.equal(await a.releaseLock(rotation as NonNullable<typeof rotation>), true)
    t.ok(await b.takeLock('rotation', 5000), 'free after release')
  })

  storeTest('login attempts are counted atomically by several replicas at once', async (t, open) => {
    const stores = await Promise.all([open(), open(), open()])
    const counts = await Promise.all(
      stores.flatMap((store) => Array.from({ length: 20 }, async () => await store.countLoginAttempt()))
    )
    t.same(
      [...counts].sort((x, y) => x - y),
      Array.from({ length: 60 }, (_, i) => i + 1),
      'each attempt saw its own count, 1 to 60'
    )
    t.equal(await (stores[0] as FleetStore).readLoginFailures(), 60)
    t.equal(await (stores[1] as FleetStore).readLoginFailures(), 60)
  })

  storeTest(
    'a success resets the count; an attempt that did not count is taken back, never below 0',
    async (t, open) => {
      const [a, b] = await Promise.all([open(), open()])
      t.equal(await a.readLoginFailures(), 0, 'none at first')
      t.equal(await a.countLoginAttempt(), 1)
      t.equal(await b.countLoginAttempt(), 2)
      t.equal(await b.uncountLoginAttempt(), 1)
      await a.resetLoginFailures()
      t.equal(await b.readLoginFailures(), 0, 'reset for every replica')
      t.equal(await b.uncountLoginAttempt(), 0, 'never below 0')
      t.equal(await a.countLoginAttempt(), 1, 'counting starts again from 0')
      await harness.elapse(300)
      t.equal(await b.readLoginFailures(), 1, 'the count does not expire')
    }
  )

  storeTest(
    'the shared session is written whole, read by another replica, touched forward only, cleared',
    async (t, open) => {
      const [a, b] = await Promise.all([open(), open()])
      t.equal(await b.readSession(), undefined, 'none at first')
      t.equal(await b.touchSession(1000, 5000), false, 'no session to touch')
      t.equal(await b.readSession(), undefined, 'touching no session creates none')
      await a.writeSession({ token: 'bcce3ea6-session-token', loggedInAt: 1000, lastUsedAt: 1000 })
      t.same(await b.readSession(), { token: 'bcce3ea6-session-token', loggedInAt: 1000, lastUsedAt: 1000 })
      t.equal(await b.touchSession(1000, 4000), true)
      t.equal(await a.touchSession(1000, 3000), true, 'an older use still finds the session')
      t.same(
        await a.readSession(),
        { token: 'bcce3ea6-session-token', loggedInAt: 1000, lastUsedAt: 4000 },
        'lastUsedAt only moves forward'
      )
      await b.writeSession({ token: 'second-token', loggedInAt: 5000, lastUsedAt: 5000 })
      t.same(
        await a.readSession(),
        { token: 'second-token', loggedInAt: 5000, lastUsedAt: 5000 },
        'a new session replaces the old one whole'
      )
      t.equal(
        await a.touchSession(1000, 9000),
        false,
        'a replica still on the replaced session does not keep the new one alive'
      )
      t.equal((await a.readSession())?.lastUsedAt, 5000)
      await a.clearSession()
      t.equal(await b.readSession(), undefined, 'cleared for every replica')
    }
  )

  storeTest(
    're-seeding writes a session or a password only where the store has none or an older one',
    async (t, open) => {
      const [a, b] = await Promise.all([open(), open()])
      t.equal(
        await a.seedSession({ token: 'held-by-a', loggedInAt: 100, lastUsedAt: 150 }),
        true,
        'an empty store takes the held session'
      )
      t.equal(
        await b.seedSession({ token: 'held-by-b', loggedInAt: 90, lastUsedAt: 160 }),
        false,
        'never over a stored session'
      )
      t.same(await b.readSession(), { token: 'held-by-a', loggedInAt: 100, lastUsedAt: 150 })
      t.equal(
        await a.seedPassword({ generation: 3, password: 'Held-gen-3', changedAt: 30 }),
        true,
        'an empty store takes the held generation'
      )
      t.equal(
        await b.seedPassword({ generation: 2, password: 'Held-gen-2', changedAt: 20 }),
        false,
        'never an older generation'
      )
      t.equal(
        await b.seedPassword({ generation: 3, password: 'Other-gen-3', changedAt: 31 }),
        false,
        'nor the same one again'
      )
      t.match(await a.readPassword(), { generation: 3, password: 'Held-gen-3', changedAt: 30 })
      t.equal(
        await a.publishPassword({ generation: 4, password: 'Rotated-gen-4', changedAt: 40 }),
        true,
        'rotation goes on from the seeded generation'
      )
    }
  )

  storeTest('the shared OAuth token is read until its expiry', async (t, open) => {
    const [a, b] = await Promise.all([open(), open()])
    t.equal(await b.readOAuthToken(), undefined, 'none at first')
    const now = harness.now()
    await a.writeOAuthToken({ token: 'oauth-expired', expiresAt: -1 })
    t.equal(await b.readOAuthToken(), undefined, 'an expired token is not shared')
    await a.writeOAuthToken({ token: 'oauth-access-token', expiresAt: now + 250 })
    t.same(await b.readOAuthToken(), { token: 'oauth-access-token', expiresAt: now + 250 })
    await harness.elapse(400)
    t.equal(await b.readOAuthToken(), undefined, 'gone after expiresAt')
  })

  storeTest('password generations are published one at a time, each exactly one more', async (t, open) => {
    const [a, b] = await Promise.all([open(), open()])
    t.equal(await a.readPassword(), undefined, 'none at first')
    t.equal(await a.publishPassword({ generation: 2, password: 'Skipped-1', changedAt: 1 }), false, 'not a skip')
    t.equal(await a.publishPassword({ generation: 1, password: 'Wh0a1545a84d', changedAt: 10 }), true)
    t.match(await b.readPassword(), { generation: 1, password: 'Wh0a1545a84d', changedAt: 10 })
    const race = await Promise.all([
      a.publishPassword({ generation: 2, password: 'Rotated-by-a', changedAt: 20 }),
      b.publishPassword({ generation: 2, password: 'Rotated-by-b', changedAt: 21 })
    ])
    t.same([...race].sort(), [false, true], 'of two rotations racing, one wins')
    const stored = await a.readPassword()
    t.equal(stored?.generation, 2)
    t.equal(stored?.password, race[0] === true ? 'Rotated-by-a' : 'Rotated-by-b', "the winner's password")
    t.equal(await b.publishPassword({ generation: 1, password: 'Old', changedAt: 30 }), false, 'never back')
  })

  storeTest(
    'changes are told to every subscribed replica, the writer included, until unsubscribed',
    async (t, open) => {
      const [a, b] = await Promise.all([open(), open()])
      const seenByA: FleetChange[] = []
      const seenByB: FleetChange[] = []
      const stillSeenByA: FleetChange[] = []
      const unsubscribeA = a.subscribe((change) => seenByA.push(change))
      a.subscribe((change) => stillSeenByA.push(change))
      b.subscribe((change) => seenByB.push(change))
      await b.writeSession({ token: 'notified-token', loggedInAt: 1, lastUsedAt: 1 })
      await waitForChange(seenByA, (change) => change.kind === 'session')
      await waitForChange(seenByB, (change) => change.kind === 'session')
      await b.publishPassword({ generation: 1, password: 'Notified-pw', changedAt: 2 })
      await waitForChange(seenByA, (change) => change.kind === 'password' && change.generation === 1)
      t.notMatch(JSON.stringify(seenByA), /notified-token|Notified-pw/, 'a notification carries no secret')
      unsubscribeA()
      const before = seenByA.length
      await b.clearSession()
      await waitForChange(
        stillSeenByA,
        (change) => change.kind === 'session' && stillSeenByA.filter((c) => c.kind === 'session').length === 2
      )
      t.equal(seenByA.length, before, 'nothing after unsubscribe')
      // B's subscription is another connection: its copy of the last notification may arrive a little after A's.
      await waitForChange(seenByB, () => seenByB.filter((c) => c.kind === 'session').length === 2)
      t.same(
        seenByB.map((change) => change.kind),
        ['session', 'password', 'session']
      )
    }
  )

  storeTest(
    'a throttled replica pauses the fleet: every replica is told, one connecting later reads what is left',
    async (t, open) => {
      const [a, b] = await Promise.all([open(), open()])
      const seenByB: FleetChange[] = []
      b.subscribe((change) => seenByB.push(change))
      t.equal(await b.readSendingPause(), 0, 'no pause yet')
      await a.pauseSending(1500)
      await waitForChange(seenByB, (change) => change.kind === 'throttle' && change.pauseMs === 1500)
      const c = await open()
      const left = await c.readSendingPause()
      t.ok(left > 1000 && left <= 1500, `a replica connecting now pauses for what is left (${left} ms)`)
      await a.pauseSending(200)
      t.ok((await c.readSendingPause()) > 1000, "a shorter pause never shortens the fleet's")
      await harness.elapse(1600)
      t.equal(await c.readSendingPause(), 0, 'over')
    }
  )

  storeTest(
    "the contracted rate's send slots are spaced across replicas; a slot past the budget is not taken",
    async (t, open) => {
      const [a, b] = await Promise.all([open(), open()])
      // On a real clock time passes between the calls, more on a busy machine: each wait is at most its slot, and short
      // of it by no more than the time since the first slot was asked for.
      const started = performance.now()
      const since = (): number => performance.now() - started
      const waits = [
        await a.takeSendSlot(100, 0, 10_000),
        await b.takeSendSlot(100, 0, 10_000),
        await a.takeSendSlot(100, 0, 10_000)
      ]
      const elapsed = since()
      waits.forEach((wait, i) => t.ok(wait <= i * 100 && wait >= i * 100 - elapsed, `slot ${i}: wait ${wait} ms`))
      const budget = 300 - since() - 1 // the next slot (300 ms from the first) is further away than this
      t.equal(await b.takeSendSlot(100, 0, budget), -1, `the next slot is past a ${budget.toFixed(0)} ms budget`)
      const next = await b.takeSendSlot(100, 0, 10_000)
      t.ok(next <= 300 && next >= 300 - since(), `and was not taken by the refused one (${next} ms)`)
      const late = await a.takeSendSlot(100, 2000, 10_000)
      t.ok(late <= 2000 && late > 1950, `not before the given wait (${late} ms)`)
    }
  )

  storeTest('key prefixes and accounts do not see each other', async (t, open, { keyPrefix, username }) => {
    const a = await open()
    const otherPrefix = `${keyPrefix}other:`
    const others = [await harness.open(otherPrefix, username), await harness.open(keyPrefix, `${username}-other`)]
    try {
      await a.writeSession({ token: 'isolated-token', loggedInAt: 1, lastUsedAt: 1 })
      await a.countLoginAttempt()
      await a.publishPassword({ generation: 1, password: 'Isolated-pw', changedAt: 1 })
      await a.writeOAuthToken({ token: 'isolated-oauth', expiresAt: harness.now() + 60_000 })
      t.ok(await a.takeLock('login', 5000))
      for (const other of others) {
        t.equal(await other.readSession(), undefined)
        t.equal(await other.readLoginFailures(), 0)
        t.equal(await other.readPassword(), undefined)
        t.equal(await other.readOAuthToken(), undefined)
        t.ok(await other.takeLock('login', 5000), 'its own lock')
      }
    } finally {
      await Promise.all(others.map(async (other) => await other.close()))
      await harness.cleanup(otherPrefix)
    }
  })

  if (harness.rawValues !== undefined) {
    const rawValues = harness.rawValues
    storeTest('no secret is stored in clear', async (t, open, { keyPrefix, username }) => {
      const store = await open()
      const secrets = ['session-secret-9f2c', 'oauth-secret-41d7', 'Password-secret-77ab']
      await store.writeSession({ token: secrets[0] as string, loggedInAt: 1, lastUsedAt: 1 })
      await store.writeOAuthToken({ token: secrets[1] as string, expiresAt: harness.now() + 60_000 })
      await store.publishPassword({ generation: 1, password: secrets[2] as string, changedAt: 1 })
      await store.countLoginAttempt()
      t.ok(await store.takeLock('login', 5000))
      await store.writeHeartbeat(beat('secret-host-5e1a/77', harness.now()), 60_000)
      const values = await rawValues(keyPrefix)
      t.ok(values.length >= 5, `the stored values were read (${values.length})`)
      const everything = values.join('\n')
      for (const secret of [...secrets, username, 'secret-host-5e1a']) {
        t.notOk(everything.includes(secret), `${secret.slice(0, 8)}… is not in the stored values`)
      }
      t.ok(
        values.some((value) => value.startsWith('v1:')),
        'the secrets are sealed values'
      )
    })
  }

  storeTest('heartbeats: each replica reads every beat; a removed one is gone; the lock tag names the holder', async (t, open) => {
    const [a, b] = await Promise.all([open(), open()])
    t.same(await a.readHeartbeats(), { beats: [], unreadable: 0 }, 'none at first')
    await a.writeHeartbeat(beat('host-a/1', 1000), 60_000)
    await b.writeHeartbeat(beat('host-b/2', 2000), 60_000)
    await b.writeHeartbeat(beat('host-b/2', 3000), 60_000)
    const { beats, unreadable } = await b.readHeartbeats()
    t.same(
      beats.map((one) => [one.id, one.seenAt]).sort(),
      [['host-a/1', 1000], ['host-b/2', 3000]],
      'one beat per replica, the newest'
    )
    t.equal(unreadable, 0)
    t.same(beats.find((one) => one.id === 'host-a/1'), beat('host-a/1', 1000), 'every field as written')
    await b.removeHeartbeat('host-a/1')
    t.same((await a.readHeartbeats()).beats.map((one) => one.id), ['host-b/2'])

    t.equal(await a.readLoginLockTag(), undefined, 'the lock is free')
    const lock = await b.takeLock('login', 5000)
    t.equal(await a.readLoginLockTag(), lockTag(b.replicaId), "the holder's tag")
    await b.releaseLock(lock as NonNullable<typeof lock>)
    t.equal(await a.readLoginLockTag(), undefined, 'free again')
  })

  storeTest('a closed store is not connected and refuses calls', async (t, open) => {
    const store = await open()
    t.equal(store.connected, true)
    await store.close()
    await store.close()
    t.equal(store.connected, false)
    await t.rejects(store.readSession(), { name: 'FleetStoreClosedError' })
    await t.rejects(store.countLoginAttempt(), { name: 'FleetStoreClosedError' })
  })
}
