// The Redis fleet store against the FleetStore contract on a real Redis, plus what only Redis can do: be down, refuse a
// password, hold state sealed with another key.
import { randomBytes } from 'node:crypto'
import t, { type Test } from 'tap'
import { createClient } from '@redis/client'
import { RedisFleetStore, redactor, type RedisFleetStoreOptions } from '../../src/fleet/redis-store.js'
import { beat, fleetStoreContract } from '../helpers/fleet-store-contract.js'
import { lockTag } from '../../src/fleet/replicas.js'
import type { FleetLock } from '../../src/session/shared-session.js'
import { freePort } from '../helpers/ports.js'
import { deleteKeys, haveTestRedis, rawValues, startRedisServer, TEST_REDIS_URL, waitUntil } from '../helpers/redis.js'

const FLEET_KEY = randomBytes(32)

function prefix (): string {
  return `m2m-session-proxy-test:${randomBytes(6).toString('hex')}:`
}

/**
 * A store on the test Redis (unless `options` says otherwise) whose log lines are kept in `logs`; closed in teardown.
 */
function openStore (
  t: Test,
  options: Partial<RedisFleetStoreOptions> & { keyPrefix: string },
  logs: string[] = []
): RedisFleetStore {
  const store = new RedisFleetStore({
    url: TEST_REDIS_URL,
    fleetKey: FLEET_KEY,
    username: 'fleet-user',
    reconnectMaxDelayMs: 200,
    log: (level, message) => logs.push(`${level} ${message}`),
    ...options
  })
  t.teardown(async () => await store.close())
  return store
}

if (await haveTestRedis(t)) {
  fleetStoreContract(t, {
    open: async (keyPrefix, username) => {
      const store = new RedisFleetStore({ url: TEST_REDIS_URL, fleetKey: FLEET_KEY, keyPrefix, username })
      await waitUntil(() => store.connected, 5000, 'the store connects')
      return store
    },
    elapse: async (ms) => await new Promise((resolve) => setTimeout(resolve, ms)),
    now: () => Date.now(),
    rawValues: async (keyPrefix) => await rawValues(TEST_REDIS_URL, keyPrefix),
    cleanup: async (keyPrefix) => await deleteKeys(TEST_REDIS_URL, keyPrefix)
  })

  t.test('a replica with another fleet key cannot read the state, and says so', async (t) => {
    const keyPrefix = prefix()
    t.teardown(async () => await deleteKeys(TEST_REDIS_URL, keyPrefix))
    const writer = openStore(t, { keyPrefix })
    const stranger = openStore(t, { keyPrefix, fleetKey: randomBytes(32) })
    await waitUntil(() => writer.connected && stranger.connected, 5000, 'both connect')
    await writer.writeSession({ token: 'tok', loggedInAt: 1, lastUsedAt: 1 })
    await writer.publishPassword({ generation: 1, password: 'pw', changedAt: 1 })
    await writer.writeOAuthToken({ token: 'oauth', expiresAt: Date.now() + 60_000 })
    for (const read of [
      async () => await stranger.readSession(),
      async () => await stranger.readPassword(),
      async () => await stranger.readOAuthToken()
    ] as Array<() => Promise<unknown>>) {
      await t.rejects(read(), {
        name: 'FleetKeyMismatchError',
        message: /the fleet key differs from the one that wrote this state/
      })
    }
    t.equal((await writer.readSession())?.token, 'tok', 'the right key still reads it')
  })

  t.test('heartbeats: another fleet key, a forged or a moved beat is counted unreadable, never shown', async (t) => {
    const keyPrefix = prefix()
    t.teardown(async () => await deleteKeys(TEST_REDIS_URL, keyPrefix))
    const store = openStore(t, { keyPrefix })
    const stranger = openStore(t, { keyPrefix, fleetKey: randomBytes(32) })
    await waitUntil(() => store.connected && stranger.connected, 5000, 'both connect')
    await store.writeHeartbeat(beat('host-a/1', Date.now()), 60_000)
    await stranger.writeHeartbeat(beat('host-x/9', Date.now()), 60_000)
    const seen = await store.readHeartbeats()
    t.same(seen.beats.map((one) => one.id), ['host-a/1'], 'only the beat sealed with this key')
    t.equal(seen.unreadable, 1, "the other key's beat is counted")
    t.equal((await stranger.readHeartbeats()).unreadable, 1, 'and the other way round')

    const raw = createClient({ url: TEST_REDIS_URL })
    await raw.connect()
    t.teardown(() => raw.destroy())
    const [replicasKey] = await raw.keys(`${keyPrefix}*replicas`)
    const fields = await raw.hGetAll(replicasKey as string)
    const own = fields[lockTag('host-a/1')] as string
    // A valid sealed beat copied under another replica's field: the place is authenticated.
    await raw.hSet(replicasKey as string, lockTag('host-z/3'), own)
    await raw.hSet(replicasKey as string, 'deadbeef0000', 'v1:not-sealed')
    const after = await store.readHeartbeats()
    t.same(after.beats.map((one) => one.id), ['host-a/1'])
    t.equal(after.unreadable, 3, 'the stranger, the moved and the forged beats')
    t.ok((await raw.pTTL(replicasKey as string)) > 50_000, 'the directory expires unless a replica keeps beating')
  })

  t.test('a sealed value moved to another key does not open there', async (t) => {
    const keyPrefix = prefix()
    t.teardown(async () => await deleteKeys(TEST_REDIS_URL, keyPrefix))
    const store = openStore(t, { keyPrefix })
    await waitUntil(() => store.connected, 5000, 'connects')
    await store.writeSession({ token: 'tok', loggedInAt: 1, lastUsedAt: 1 })
    const raw = createClient({ url: TEST_REDIS_URL })
    await raw.connect()
    t.teardown(() => raw.destroy())
    const [sessionKey] = await raw.keys(`${keyPrefix}*session`)
    const sealed = await raw.hGet(sessionKey as string, 'record')
    t.type(sealed, 'string', 'the session is one sealed record')
    await raw.hSet((sessionKey as string).replace(/session$/, 'password'), {
      generation: '1',
      record: sealed as string
    })
    await t.rejects(store.readPassword(), { name: 'FleetKeyMismatchError' })
    await raw.hSet(sessionKey as string, 'record', 'not-sealed')
    await t.rejects(store.readSession(), { name: 'SealedFormatError' })
  })

  // Someone who can write Redis but has no fleet key (issue 17, items 1 and 2): every field a replica acts on is sealed
  // or checked against the sealed record, and an old sealed record copied back says its own, older generation.
  t.test(
    'a Redis writer without the fleet key: changed plain fields and replayed records are refused, never read as valid',
    async (t) => {
      const keyPrefix = prefix()
      t.teardown(async () => await deleteKeys(TEST_REDIS_URL, keyPrefix))
      const store = openStore(t, { keyPrefix, replicaId: 'replica-a' })
      await waitUntil(() => store.connected, 5000, 'connects')
      const raw = createClient({ url: TEST_REDIS_URL })
      await raw.connect()
      t.teardown(() => raw.destroy())

      await store.publishPassword({ generation: 1, password: 'Pw-gen-1', changedAt: 1000 })
      const [passwordKey] = await raw.keys(`${keyPrefix}*password`)
      const generation1 = await raw.hGetAll(passwordKey as string)
      t.same(Object.keys(generation1).sort(), ['generation', 'record'], 'no plain password, change time or publisher')
      t.match(
        await store.readPassword(),
        { generation: 1, password: 'Pw-gen-1', changedAt: 1000, publisher: 'replica-a' },
        'the publisher is sealed with it'
      )
      await store.publishPassword({ generation: 2, password: 'Pw-gen-2', changedAt: 2000 })

      // The attack of the issue: the old sealed value under the next generation number.
      await raw.hSet(passwordKey as string, { generation: '3', record: generation1.record as string })
      await t.rejects(store.readPassword(), {
        name: 'FleetRecordForgedError',
        message: /plain generation 3 differs from the sealed generation 1/
      })
      // Copied back whole, it reads as what it is: generation 1 (the replicas refuse it as older than what they
      // verified).
      await raw.hSet(passwordKey as string, { generation: '1', record: generation1.record as string })
      t.match(await store.readPassword(), { generation: 1, password: 'Pw-gen-1', changedAt: 1000 })
      // A forged change time has nowhere to go: there is no plain changedAt, and a field of that name is ignored.
      await raw.hSet(passwordKey as string, { changedAt: '0' })
      t.equal((await store.readPassword())?.changedAt, 1000)

      await store.writeSession({ token: 'session-1', loggedInAt: 5000, lastUsedAt: 5000 })
      t.equal(await store.touchSession(5000, 7000), true)
      t.same(await store.readSession(), { token: 'session-1', loggedInAt: 5000, lastUsedAt: 7000 })
      const [sessionKey] = await raw.keys(`${keyPrefix}*session`)
      const session1 = await raw.hGetAll(sessionKey as string)
      await raw.hSet(sessionKey as string, { lastUsedAt: '9999999999999' })
      t.same(
        await store.readSession(),
        { token: 'session-1', loggedInAt: 5000, lastUsedAt: 7000 },
        'a plain last use is never read'
      )
      await raw.hSet(sessionKey as string, { loggedInAt: '6000' })
      await t.rejects(store.readSession(), { name: 'FleetRecordForgedError', message: /plain login time differs/ })
      await store.writeSession({ token: 'session-2', loggedInAt: 8000, lastUsedAt: 8000 })
      await raw.hSet(sessionKey as string, { use: session1.use as string })
      await t.rejects(store.readSession(), {
        name: 'FleetRecordForgedError',
        message: /last use belongs to another session/
      })

      await store.writeOAuthToken({ token: 'oauth-1', expiresAt: Date.now() + 60_000 })
      const [oauthKey] = await raw.keys(`${keyPrefix}*oauth`)
      t.same(
        Object.keys(await raw.hGetAll(oauthKey as string)),
        ['record'],
        'the OAuth token and its expiry in one sealed record'
      )
    }
  )

  t.test('forged notifications: only known shapes pass, and never a local "connected"', async (t) => {
    const keyPrefix = prefix()
    t.teardown(async () => await deleteKeys(TEST_REDIS_URL, keyPrefix))
    const store = openStore(t, { keyPrefix })
    await waitUntil(() => store.connected, 5000, 'connects')
    const seen: unknown[] = []
    store.subscribe((change) => seen.push(change))
    const raw = createClient({ url: TEST_REDIS_URL })
    await raw.connect()
    t.teardown(() => raw.destroy())
    const [channel] = (await raw.pubSubChannels(`${keyPrefix}*`)) as string[]
    for (const forged of [
      '{"kind":"connected"}',
      '{"kind":"password","generation":"99"}',
      '{"kind":"password"}',
      '[1]',
      'null',
      '{"kind":"session","ended":"yes","token":"x"}',
      '{"kind":"throttle"}',
      '{"kind":"throttle","pauseMs":"9"}',
      '{"kind":"throttle","pauseMs":-5}'
    ]) {
      await raw.publish(channel as string, forged)
    }
    await store.clearSession()
    await waitUntil(() => seen.length >= 2, 2000, 'the changes arrive')
    await new Promise((resolve) => setTimeout(resolve, 100))
    t.same(
      seen,
      [{ kind: 'session' }, { kind: 'session', ended: true }],
      'a session change (re-read by the replicas) and the real end; nothing else'
    )
  })

  t.test("a Redis writer who moves the next send slot far ahead does not stop the fleet's sending", async (t) => {
    const keyPrefix = prefix()
    t.teardown(async () => await deleteKeys(TEST_REDIS_URL, keyPrefix))
    const store = openStore(t, { keyPrefix })
    await waitUntil(() => store.connected, 5000, 'connects')
    t.equal(await store.takeSendSlot(100, 0, 5000), 0)
    const raw = createClient({ url: TEST_REDIS_URL })
    await raw.connect()
    t.teardown(() => raw.destroy())
    const [slotKey] = await raw.keys(`${keyPrefix}*send-slots`)
    t.ok(slotKey, 'the slot key')
    await raw.set(slotKey as string, String((Date.now() + 3_600_000) * 1000))
    t.equal(await store.takeSendSlot(100, 0, 5000), 0, 'a slot no taker could have set is ignored')
    t.ok((await store.takeSendSlot(100, 0, 5000)) > 50, 'and spacing goes on from now')
  })

  t.test('a lock no replica could have set (no expiry, an hour left) is taken over, saying so; a real one is not', async (t) => {
    const keyPrefix = prefix()
    t.teardown(async () => await deleteKeys(TEST_REDIS_URL, keyPrefix))
    const logs: string[] = []
    const store = openStore(t, { keyPrefix }, logs)
    const other = openStore(t, { keyPrefix })
    await waitUntil(() => store.connected && other.connected, 5000, 'connects')
    const held = await other.takeLock('login', 60_000)
    t.ok(held, "another replica's lock")
    t.equal(await store.takeLock('login', 60_000), undefined, 'waited for')
    t.same(logs, [])
    const raw = createClient({ url: TEST_REDIS_URL })
    await raw.connect()
    t.teardown(() => raw.destroy())
    const [loginKey] = await raw.keys(`${keyPrefix}*lock`)
    for (const [forge, left] of [[{ PX: 3_600_000 }, /3600 s left/], [{}, /no expiry/]] as const) {
      await raw.set(loginKey as string, 'evil.x', forge)
      const taken = await store.takeLock('login', 60_000)
      t.ok(taken, 'taken over')
      t.match(logs.at(-1), left)
      t.match(logs.at(-1), /the login lock \(.*\) had .* more than any replica gives it \(written from outside\?\): taken over/)
      t.ok((await raw.pTTL(loginKey as string)) <= 60_000, 'with the time a replica gives it')
      t.equal(await store.releaseLock(taken as FleetLock), true)
    }
  })

  t.test('a failure count written from outside: read as no count, and put back whatever it holds', async (t) => {
    const keyPrefix = prefix()
    t.teardown(async () => await deleteKeys(TEST_REDIS_URL, keyPrefix))
    const store = openStore(t, { keyPrefix })
    await waitUntil(() => store.connected, 5000, 'connects')
    t.equal(await store.countLoginAttempt(), 1)
    const raw = createClient({ url: TEST_REDIS_URL })
    await raw.connect()
    t.teardown(() => raw.destroy())
    const [failuresKey] = await raw.keys(`${keyPrefix}*failures`)
    for (const [written, read] of [['-10', Number.NaN], ['1e1', Number.NaN], ['abc', Number.NaN], ['1000000', 1_000_000]]) {
      await raw.set(failuresKey as string, written as string)
      t.same(await store.readLoginFailures(), read, `${String(written)} read`)
      t.equal(await store.raiseLoginFailures(2, 4), 2, `${String(written)} put back at 2`)
      t.equal(await raw.get(failuresKey as string), '2')
    }
    t.equal(await store.raiseLoginFailures(1, 4), 2, 'a count lower than the one stored is not written')
    t.equal(await store.raiseLoginFailures(3, 4), 3, 'a higher one is')
  })

  t.test('garbage on the channel and a failing listener do not stop the notifications', async (t) => {
    const keyPrefix = prefix()
    t.teardown(async () => await deleteKeys(TEST_REDIS_URL, keyPrefix))
    const logs: string[] = []
    const store = openStore(t, { keyPrefix }, logs)
    await waitUntil(() => store.connected, 5000, 'connects')
    const seen: string[] = []
    store.subscribe(() => {
      throw new Error('listener bug')
    })
    store.subscribe((change) => seen.push(change.kind))
    const raw = createClient({ url: TEST_REDIS_URL })
    await raw.connect()
    t.teardown(() => raw.destroy())
    const [channel] = (await raw.pubSubChannels(`${keyPrefix}*`)) as string[]
    await raw.publish(channel as string, 'not json')
    await store.clearSession()
    await waitUntil(() => seen.length === 1, 2000, 'the change arrives')
    t.same(seen, ['session'])
    t.match(logs.join('\n'), /a change listener failed: listener bug/)
  })

  t.test(
    'Redis unreachable: not connected, calls fail with a clear error, no crash; connects once Redis starts',
    async (t) => {
      const port = await freePort()
      const logs: string[] = []
      const keyPrefix = prefix()
      const store = openStore(t, { keyPrefix, url: `redis://127.0.0.1:${port}` }, logs)
      await new Promise((resolve) => setTimeout(resolve, 500))
      t.equal(store.connected, false)
      await t.rejects(store.countLoginAttempt(), {
        name: 'FleetStoreUnavailableError',
        message: /^cannot count a login attempt in Redis: /
      })
      await t.rejects(store.takeLock('login', 1000), { name: 'FleetStoreUnavailableError' })
      t.equal(logs.filter((line) => /ECONNREFUSED/.test(line)).length, 1, 'one line while down, not one per retry')
      await startRedisServer(t, port)
      await waitUntil(() => store.connected, 5000, 'the store connects once Redis is up')
      t.equal(await store.countLoginAttempt(), 1)
      t.match(logs.join('\n'), /connection restored/)
    }
  )

  t.test(
    'Redis stops answering with its connections open: commands fail at the deadline, then at once; it is back when it answers',
    async (t) => {
      const port = await freePort()
      const redis = await startRedisServer(t, port)
      const logs: string[] = []
      const keyPrefix = prefix()
      const store = openStore(t, { keyPrefix, url: `redis://127.0.0.1:${port}`, commandTimeoutMs: 300 }, logs)
      const inbox = store.openCallbackInbox({ count: 100, bytes: 1 << 20, ageMs: 60_000 }, 1 << 20)
      t.teardown(async () => await inbox.close())
      const changes: string[] = []
      store.subscribe((change) => changes.push(change.kind))
      await waitUntil(() => store.connected, 5000, 'the store connects')
      t.equal(await store.countLoginAttempt(), 1)
      changes.length = 0

      redis.kill('SIGSTOP')
      t.teardown(() => { redis.kill('SIGCONT') })
      const startedAt = Date.now()
      await t.rejects(store.countLoginAttempt(), {
        name: 'FleetStoreUnavailableError',
        message: 'cannot count a login attempt in Redis: RedisNotAnsweringError: Redis has not answered within 300 ms'
      })
      t.comment(`failed after ${Date.now() - startedAt} ms`)
      t.equal(store.connected, false, 'counts as not connected')
      const failFastAt = Date.now()
      await t.rejects(store.takeLock('login', 1000), { name: 'FleetStoreUnavailableError' }, 'the next fails too')
      await t.rejects(
        inbox.append({ service: 'CarrierService', requestId: 'r1', deviceIds: [], body: {} }),
        { name: 'InboxUnavailableError', message: /not answered/ },
        'a callback is not stored, with an error the listener answers 503'
      )
      await t.rejects(inbox.after(0, 10), { name: 'InboxUnavailableError' }, 'nor read')
      t.comment(`the next three failed in ${Date.now() - failFastAt} ms, unsent`)
      t.match(logs.join('\n'), /Redis has not answered within 300 ms \(M2M_PROXY_REDIS_TIMEOUT_MS\)/)
      t.same(changes, [], 'no notification while it hangs')

      redis.kill('SIGCONT')
      await waitUntil(() => store.connected, 5000, 'connected again once Redis answers the commands still out')
      t.same(changes, ['connected'], 'announced as a reconnection: the replicas re-seed what Redis may have lost')
      t.match(logs.join('\n'), /Redis answers again/)
      // The count that failed at its deadline was run by Redis when it woke: one attempt too many is counted, which
      // errs on the side of the lockout budget.
      t.equal(await store.countLoginAttempt(), 3, 'the count that failed at its deadline ran late; the lock was not sent')
      t.same(await inbox.after(0, 10), [], 'nothing was stored of the refused callback')
    }
  )

  t.test("the Redis URL's password is in no error and no log line", async (t) => {
    const port = await freePort()
    const password = 's3cr%40t-Pa55' // percent-encoded: s3cr@t-Pa55
    const decoded = decodeURIComponent(password)
    await startRedisServer(t, port, ['--requirepass', 'the-right-one'])
    const logs: string[] = []
    const errors: string[] = []
    const wrongPassword = openStore(
      t,
      { keyPrefix: prefix(), url: `redis://default:${password}@127.0.0.1:${port}` },
      logs
    )
    const nothingThere = openStore(
      t,
      { keyPrefix: prefix(), url: `redis://default:${password}@127.0.0.1:${await freePort()}` },
      logs
    )
    await waitUntil(() => logs.length >= 2, 5000, 'both log their problem')
    for (const store of [wrongPassword, nothingThere]) {
      t.equal(store.connected, false)
      try {
        await store.readSession()
        t.fail('must not read')
      } catch (error) {
        errors.push(`${String(error)} ${(error as Error).stack ?? ''}`)
      }
    }
    const everything = [...logs, ...errors].join('\n')
    t.match(everything, /WRONGPASS|invalid username-password/i, 'the refused password is reported')
    t.match(everything, /ECONNREFUSED/, 'the refused connection is reported')
    t.notOk(
      everything.includes(password) || everything.includes(decoded) || everything.includes('s3cr'),
      'no form of the password'
    )
    // The redactor itself, for messages that would quote the URL.
    t.equal(
      redactor(`redis://u:${password}@h:1`)(`failed at redis://u:${password}@h:1 with ${decoded}`),
      'failed at *** with ***'
    )
    t.equal(
      redactor('redis://u:pw@h:1')('WRONGPASS invalid username-password pair or user is disabled (u)'),
      'WRONGPASS invalid username-password pair or user is disabled (***)',
      "a short user name as a word of its own only: Redis's message stays readable"
    )
    t.equal(redactor('redis://s3cret@h:1')('AUTH as s3cret-ish failed'), 'AUTH as ***-ish failed', 'no password: the user name is')
  })
}
