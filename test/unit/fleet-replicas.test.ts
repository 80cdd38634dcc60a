// The fleet view (fleet/replicas.ts): heartbeats on a hand-moved clock over the memory store; stale after 3 missed
// beats, dropped after 12, the login lock's holder named, a stopped replica gone at once.

import t from 'tap'
import { MemoryFleet, MemoryFleetStore } from '../helpers/memory-store.js'
import { TimerClock } from '../helpers/fake-clock.js'
import {
  DROP_AFTER_BEATS,
  FleetViewUnavailableError,
  ReplicaHeartbeat,
  STALE_AFTER_BEATS,
  singleProcessView,
  type ReplicaBeat
} from '../../src/fleet/replicas.js'

const INTERVAL = 1000

function replicaOn (fleet: MemoryFleet, clock: TimerClock, id: string, generation = 1) {
  const store = new MemoryFleetStore({ fleet, keyPrefix: 'replicas-test:', username: 'u', replicaId: id })
  const describe = (): Omit<ReplicaBeat, 'seenAt' | 'intervalMs'> => ({
    id,
    host: id.split('/')[0] as string,
    pid: Number(id.split('/')[1]),
    version: '0.1.0',
    state: 'active',
    ready: true,
    notReadyReason: null,
    generation,
    loggedInAt: null,
    logins: 1,
    consecutiveLoginFailures: 0,
    maxLoginFailures: 2
  })
  const heartbeat = new ReplicaHeartbeat({ directory: store, describe, intervalMs: INTERVAL, clock })
  return { store, heartbeat }
}

/** Lets the beats' promises settle (the memory store answers in microtasks). */
const settle = async (): Promise<void> => { await new Promise((resolve) => setImmediate(resolve)) }

async function advance (clock: TimerClock, ms: number): Promise<void> {
  for (let moved = 0; moved < ms; moved += 100) {
    clock.advance(Math.min(100, ms - moved))
    await settle()
  }
}

t.test('three replicas: one stops beating, is stale after 3 intervals, then dropped after 12', async (t) => {
  const clock = new TimerClock()
  const fleet = new MemoryFleet(clock)
  const a = replicaOn(fleet, clock, 'host-a/1', 1)
  const b = replicaOn(fleet, clock, 'host-b/2', 2)
  // c's clock never moves: after its first beat it is as if it had crashed (no timer of it ever falls due).
  const c = replicaOn(fleet, new TimerClock(clock.ms), 'host-c/3', 3)
  for (const replica of [a, b, c]) replica.heartbeat.start()
  await settle()
  let view = await a.heartbeat.view()
  t.same(view.replicas.map((replica) => [replica.id, replica.stale, replica.self]), [
    ['host-a/1', false, true],
    ['host-b/2', false, false],
    ['host-c/3', false, false]
  ])
  t.equal(view.generation, 3, 'the newest generation a live replica holds')
  t.equal(view.lockHolder, null)

  await advance(clock, STALE_AFTER_BEATS * INTERVAL - 100)
  view = await b.heartbeat.view()
  t.equal(view.replicas.find((replica) => replica.id === 'host-c/3')?.stale, false, 'not yet stale')
  await advance(clock, 200)
  view = await b.heartbeat.view()
  t.equal(view.replicas.find((replica) => replica.id === 'host-c/3')?.stale, true, 'stale after 3 missed beats')
  t.equal(view.generation, 2, 'a stale replica no longer counts for the generation')
  t.same(
    view.replicas.filter((replica) => replica.stale).map((replica) => replica.id),
    ['host-c/3'],
    'the others beat on'
  )

  await advance(clock, (DROP_AFTER_BEATS - STALE_AFTER_BEATS) * INTERVAL)
  view = await a.heartbeat.view()
  t.same(view.replicas.map((replica) => replica.id), ['host-a/1', 'host-b/2'], 'dropped after 12')
  t.same((await a.store.readHeartbeats()).beats.map((beat) => beat.id).sort(), ['host-a/1', 'host-b/2'], 'and removed')

  await b.heartbeat.stop()
  view = await a.heartbeat.view()
  t.same(view.replicas.map((replica) => replica.id), ['host-a/1'], 'a replica shut down is gone at once')
  await a.heartbeat.stop()
  t.same(clock.pending, [], 'no timer left behind')
})

t.test('the login lock holder is named; a lock no beat matches is "unknown"', async (t) => {
  const clock = new TimerClock()
  const fleet = new MemoryFleet(clock)
  const a = replicaOn(fleet, clock, 'host-a/1')
  const b = replicaOn(fleet, clock, 'host-b/2')
  await a.heartbeat.beat()
  await b.heartbeat.beat()
  const lock = await b.store.takeLock('login', 5000)
  t.equal((await a.heartbeat.view()).lockHolder, 'host-b/2')
  await b.store.releaseLock(lock as NonNullable<typeof lock>)
  const stranger = new MemoryFleetStore({ fleet, keyPrefix: 'replicas-test:', username: 'u', replicaId: 'ghost/0' })
  await stranger.takeLock('login', 5000)
  t.equal((await a.heartbeat.view()).lockHolder, 'unknown', 'held by nobody the view knows')
})

t.test('the view shows this replica as of now, even before its first beat is stored', async (t) => {
  const clock = new TimerClock()
  const fleet = new MemoryFleet(clock)
  const a = replicaOn(fleet, clock, 'host-a/1')
  const view = await a.heartbeat.view()
  t.same(view.replicas.map((replica) => [replica.id, replica.self, replica.stale]), [['host-a/1', true, false]])
  t.equal(view.self, 'host-a/1')
  t.equal(view.heartbeatIntervalMs, INTERVAL)
})

t.test('a store that does not answer: the view says so; a failed beat is reported, the beating goes on', async (t) => {
  const clock = new TimerClock()
  const fleet = new MemoryFleet(clock)
  const errors: unknown[] = []
  const store = new MemoryFleetStore({ fleet, keyPrefix: 'replicas-test:', username: 'u', replicaId: 'h/1' })
  const heartbeat = new ReplicaHeartbeat({
    directory: store,
    describe: () => beatOf('h/1'),
    intervalMs: INTERVAL,
    clock,
    onError: (error) => errors.push(error)
  })
  await store.close()
  heartbeat.start()
  await settle()
  t.equal(errors.length, 1, 'the failed beat reported')
  t.same(clock.pending, [INTERVAL], 'the next beat is scheduled anyway')
  await t.rejects(heartbeat.view(), FleetViewUnavailableError)
  await heartbeat.stop()
})

t.test('single-process mode: the one replica, no lock, no interval', async (t) => {
  const view = singleProcessView(beatOf('solo/7'), Date.UTC(2026, 0, 1))
  t.equal(view.mode, 'single')
  t.same(view.replicas.map((replica) => [replica.id, replica.self, replica.stale]), [['solo/7', true, false]])
  t.equal(view.replicas[0]?.lastSeenAt, '2026-01-01T00:00:00.000Z')
})

function beatOf (id: string): Omit<ReplicaBeat, 'seenAt' | 'intervalMs'> {
  return {
    id,
    host: 'solo',
    pid: 7,
    version: '0.1.0',
    state: 'active',
    ready: true,
    notReadyReason: null,
    generation: null,
    loggedInAt: null,
    logins: 0,
    consecutiveLoginFailures: 0,
    maxLoginFailures: 2
  }
}
