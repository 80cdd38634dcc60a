// The fleet's callback inbox on a real Redis (fleet/redis-inbox.ts): what one replica stores another reads, by cursor
// and by request, and is woken for; retention by count, bytes and age in the appending script; entries written from
// outside (without the fleet key) are skipped; Redis down refuses the append, so the sender tries again.

import { randomBytes } from 'node:crypto'
import t, { type Test } from 'tap'
import { createClient } from '@redis/client'
import { RedisFleetStore } from '../../src/fleet/redis-store.js'
import type { RedisCallbackInbox } from '../../src/fleet/redis-inbox.js'
import { maxRecordBytes, waitForCallbacks, type CallbackMessage } from '../../src/callbacks/inbox.js'
import { deleteKeys, haveTestRedis, TEST_REDIS_URL, waitUntil } from '../helpers/redis.js'

const FLEET_KEY = randomBytes(32)
const RETENTION = { count: 1000, bytes: 16 * 1024 * 1024, ageMs: 3_600_000 }
/** M2M_PROXY_CALLBACK_BODY_LIMIT_BYTES's default. */
const BODY_LIMIT_BYTES = 262_144

const idOfSeq = (seq: number): string => `${Math.floor(seq / 1000)}-${seq % 1000}`

const message = (requestId: string | null, extra: Record<string, unknown> = {}): CallbackMessage => ({
  service: 'CarrierService',
  requestId,
  deviceIds: [{ id: '35000000000001', kind: 'imei' }],
  body: { requestId, status: 'Success', ...extra }
})

/** Two replicas' inboxes on one account's keys (or `fleetKey` for the second). */
async function twoReplicas (
  t: Test,
  retention = RETENTION,
  fleetKey = FLEET_KEY
): Promise<{ a: RedisCallbackInbox; b: RedisCallbackInbox; keyPrefix: string; logs: string[] }> {
  const keyPrefix = `m2m-session-proxy-test:${randomBytes(6).toString('hex')}:`
  t.teardown(async () => await deleteKeys(TEST_REDIS_URL, keyPrefix))
  const logs: string[] = []
  const open = async (key: Buffer): Promise<RedisCallbackInbox> => {
    const store = new RedisFleetStore({
      url: TEST_REDIS_URL,
      fleetKey: key,
      keyPrefix,
      username: 'fleet-user',
      log: (level, line) => logs.push(`${level} ${line}`)
    })
    await waitUntil(() => store.connected, 5000, 'the store connects')
    const inbox = store.openCallbackInbox(retention, maxRecordBytes(BODY_LIMIT_BYTES))
    t.teardown(async () => {
      await inbox.close()
      await store.close()
    })
    return inbox
  }
  return { a: await open(FLEET_KEY), b: await open(fleetKey), keyPrefix, logs }
}

if (await haveTestRedis(t)) {
  t.test('the Device Location keys: sealed, shared by the replicas, unreadable under another fleet key', async (t) => {
    const keyPrefix = `m2m-session-proxy-test:${randomBytes(6).toString('hex')}:`
    t.teardown(async () => await deleteKeys(TEST_REDIS_URL, keyPrefix))
    const open = async (fleetKey: Buffer): Promise<RedisFleetStore> => {
      const store = new RedisFleetStore({ url: TEST_REDIS_URL, fleetKey, keyPrefix, username: 'fleet-user' })
      await waitUntil(() => store.connected, 5000, 'the store connects')
      t.teardown(async () => { await store.close() })
      return store
    }
    const a = (await open(FLEET_KEY)).openLocationKeys()
    const b = (await open(FLEET_KEY)).openLocationKeys()
    const secret = randomBytes(32).toString('hex')
    await a.remember('DeviceLocation', 'older-key')
    await a.remember('DeviceLocation', secret)
    t.same(await b.keys('DeviceLocation'), [secret, 'older-key'], 'what one replica keeps, another checks with')
    t.same(await b.keys('Location'), [])

    const redis = createClient({ url: TEST_REDIS_URL })
    await redis.connect()
    t.teardown(async () => { await redis.quit() })
    const [hashKey] = await redis.keys(`${keyPrefix}*location-keys`)
    const raw = JSON.stringify(await redis.hGetAll(hashKey ?? ''))
    t.match(raw, /DeviceLocation/, 'one field per service')
    t.notMatch(raw, secret, 'the key is not in Redis in clear')
    await t.rejects((await open(randomBytes(32))).openLocationKeys().keys('DeviceLocation'), { name: 'FleetKeyMismatchError' },
      'another fleet key cannot open it')
    const sealed = await redis.hGet(hashKey ?? '', 'DeviceLocation')
    await redis.hSet(hashKey ?? '', 'Location', sealed ?? '')
    await t.rejects(b.keys('Location'), { name: 'FleetKeyMismatchError' }, 'a sealed value moved to another service does not open')

    await b.forget('DeviceLocation')
    t.same(await a.keys('DeviceLocation'), [], 'removed for every replica')
  })
  t.test('stored by one replica, read by another, by cursor and by request', async (t) => {
    const { a, b } = await twoReplicas(t)
    const first = await a.append(message('req-1'))
    const second = await b.append(message('req-2'))
    const third = await a.append(message('req-1', { step: 2 }))
    t.ok(first.seq < second.seq && second.seq < third.seq, 'seqs increase across replicas')
    t.ok(Number.isSafeInteger(third.seq), 'a cursor is a safe integer')
    t.same((await b.after(0, 10)).map((record) => record.seq), [first.seq, second.seq, third.seq])
    t.same((await b.after(first.seq, 1)).map((record) => record.seq), [second.seq], 'after a cursor, limited')
    t.same((await b.forRequest('req-1')).map((record) => record.body), [first.body, third.body])
    t.same(await a.forRequest('req-none'), [])
    t.match((await b.after(0, 1))[0], { service: 'CarrierService', requestId: 'req-1', receivedAt: first.receivedAt })
    await waitUntil(() => { a.stats(); return a.stats().count === 3 }, 5000, 'the stats learn the count')
    t.ok(a.stats().bytes > 3 * 100, 'and the bytes')
  })

  t.test('a long poll on one replica is woken by a callback stored on another', async (t) => {
    const { a, b } = await twoReplicas(t)
    const startedAt = Date.now()
    const waiting = waitForCallbacks(b, async () => await b.forRequest('req-7'), 10_000, new AbortController().signal)
    await new Promise((resolve) => setTimeout(resolve, 50))
    await a.append(message('req-other'))
    await a.append(message('req-7'))
    const found = await waiting
    t.same(found.map((record) => record.requestId), ['req-7'])
    t.ok(Date.now() - startedAt < 5000, 'woken, not timed out')
  })

  t.test('retention: count and bytes trimmed as it appends; older than the age not read', async (t) => {
    const { a, b } = await twoReplicas(t, { count: 5, bytes: 16 * 1024 * 1024, ageMs: 3_600_000 })
    for (let i = 1; i <= 12; i++) await a.append(message(`req-${i}`))
    t.same((await b.after(0, 100)).map((record) => record.requestId), ['req-8', 'req-9', 'req-10', 'req-11', 'req-12'])
    t.same(await b.forRequest('req-1'), [], 'trimmed from the request index too')

    const small = await twoReplicas(t, { count: 1000, bytes: 2000, ageMs: 3_600_000 })
    for (let i = 1; i <= 20; i++) await small.a.append(message(`big-${i}`, { padding: 'x'.repeat(300) }))
    const kept = await small.b.after(0, 100)
    t.ok(kept.length > 0 && kept.length < 20, `bytes bound what is kept (${kept.length} of 20)`)
    t.equal(kept.at(-1)?.requestId, 'big-20', 'the newest kept')

    const aged = await twoReplicas(t, { count: 1000, bytes: 16 * 1024 * 1024, ageMs: 1 })
    await aged.a.append(message('old'))
    await new Promise((resolve) => setTimeout(resolve, 20))
    t.same(await aged.b.after(0, 10), [], 'older than the age: not read, and trimmed at the next append')
  })

  t.test('an entry written without the fleet key is skipped and reported; another key reads nothing', async (t) => {
    const { a, b, keyPrefix, logs } = await twoReplicas(t, RETENTION, randomBytes(32))
    const stored = await a.append(message('req-1'))
    t.same(await b.after(0, 10), [], 'a replica with another fleet key reads nothing')
    t.same(await b.forRequest('req-1'), [])
    const raw = createClient({ url: TEST_REDIS_URL })
    await raw.connect()
    t.teardown(() => raw.destroy())
    const [stream] = await raw.keys(`${keyPrefix}*callbacks`)
    await raw.xAdd(stream ?? '', `${Math.floor(stored.seq / 1000) + 1}-0`, { record: 'forged', at: String(Date.now()), bytes: '6' })
    t.same((await a.after(0, 10)).map((record) => record.requestId), ['req-1'], 'the forged entry is skipped')
    t.match(logs.join('\n'), /callback \d+-0 does not open with this fleet key/)
  })

  t.test('an entry too large for any callback, written from outside: skipped and reported, never read', async (t) => {
    const { a, b, keyPrefix, logs } = await twoReplicas(t)
    const raw = createClient({ url: TEST_REDIS_URL })
    await raw.connect()
    t.teardown(() => raw.destroy())
    const first = await a.append(message('req-1'))
    const [stream] = await raw.keys(`${keyPrefix}*callbacks`)
    // Its plain fields forged too: no size, a time in the future (so that retention never drops it).
    const forgedId = `${Math.floor(first.seq / 1000) + 1}-0`
    await raw.xAdd(stream ?? '', forgedId, { record: 'x'.repeat(maxRecordBytes(BODY_LIMIT_BYTES) + 1), at: '99999999999999', bytes: '0' })
    const last = await a.append(message('req-2'))
    // What reaches this process from Redis, entry by entry.
    type Entries = Array<{ id: string; record?: string; message?: { record?: string } }>
    const inbox = b as unknown as { opened: (entries: Entries) => unknown }
    const opened = inbox.opened.bind(b)
    let largest = 0
    inbox.opened = (entries) => {
      for (const entry of entries) largest = Math.max(largest, (entry.record ?? entry.message?.record ?? '').length)
      return opened(entries)
    }
    t.same((await b.after(0, 10)).map((record) => record.seq), [first.seq, last.seq], 'read around it')
    t.ok(largest <= maxRecordBytes(BODY_LIMIT_BYTES), `its record never came into this process (${largest} bytes at most)`)
    t.match(logs.join('\n'), new RegExp(`callback ${forgedId} does not open with this fleet key`))
    t.same((await b.forRequest('req-2')).map((record) => record.seq), [last.seq])
    b.stats()
    await waitUntil(() => b.stats().count === 3, 5000, 'the stats')
    t.ok(b.stats().oldestAgeSeconds >= 0, 'the oldest age, from its time alone')
  })

  t.test('a last seq someone else wrote far ahead of the Redis clock: callbacks refused, saying why, until repaired', async (t) => {
    const { a, keyPrefix, logs } = await twoReplicas(t)
    const first = await a.append(message('req-1'))
    const raw = createClient({ url: TEST_REDIS_URL })
    await raw.connect()
    t.teardown(() => raw.destroy())
    const [seqKey] = await raw.keys(`${keyPrefix}*callbacks:seq`)
    for (const written of ['99999999999999999', '9007199254740993000', 'not a number']) {
      await raw.set(seqKey ?? '', written)
      await t.rejects(
        a.append(message('req-2')),
        { name: 'InboxUnavailableError', message: /callbacks:seq is more than a day ahead of the Redis clock/ },
        written
      )
    }
    t.same((await a.after(0, 10)).map((record) => record.seq), [first.seq], 'nothing stored meanwhile')
    t.equal(
      logs.filter((line) => /^warn fleet store: cannot store a callback in Redis: .*more than a day ahead/.test(line)).length,
      1,
      "Redis's refusal is logged, once a minute"
    )
    await raw.set(seqKey ?? '', String(first.seq)) // the repair: back to the last seq given
    const next = await a.append(message('req-3'))
    t.ok(next.seq > first.seq && Number.isSafeInteger(next.seq), 'stored again after the repair')

    // An entry added to the stream far ahead: the next seq would have to follow it.
    const [stream] = await raw.keys(`${keyPrefix}*callbacks`)
    await raw.xAdd(stream ?? '', '9999999999999999-0', { record: 'forged', at: '0', bytes: '6' })
    await t.rejects(a.append(message('req-4')), { message: /more than a day ahead of the Redis clock/ }, 'an entry ahead')
    t.equal(await raw.get(seqKey ?? ''), String(next.seq), 'the last seq is not moved by a refused append')
    await raw.xDel(stream ?? '', '9999999999999999-0')
    await t.rejects(a.append(message('req-5')), { message: /more than a day ahead/ }, 'deleted, its id is still the last')
    await raw.sendCommand(['XSETID', stream ?? '', idOfSeq(next.seq)]) // the repair: the stream's last id set back
    t.ok((await a.append(message('req-6'))).seq > next.seq, 'stored again after the repair')
  })
}
