// The upstream gate on a hand-moved clock (issue 18, item 5): a throttled answer pauses every request for its
// Retry-After (capped, 1 s without one), the contracted rate spaces requests, and a wait past the deadline is refused.
import t from 'tap'
import { isThrottledAnswer, LEARNED_RATE_MEMORY_MS, UpstreamGate } from '../../src/proxy/upstream-gate.js'

t.test('not paused and no rate: no wait, no clock read', async (t) => {
  let reads = 0
  const gate = new UpstreamGate({
    maxPauseMs: 60_000,
    ratePerSecond: 0,
    now: () => {
      reads++
      return 0
    }
  })
  for (let i = 0; i < 100; i++) t.equal(gate.delayFor(0), 0)
  t.equal(reads, 0, 'the hot path reads no clock')
  t.equal(gate.paused, false)
})

t.test(
  'a throttled answer pauses every request for its Retry-After, capped; 1 s without one; 100 ms at least',
  async (t) => {
    let now = 1_000_000
    const gate = new UpstreamGate({ maxPauseMs: 10_000, ratePerSecond: 0, now: () => now })
    t.equal(gate.throttled('3'), 3000)
    t.equal(gate.paused, true)
    t.equal(gate.delayFor(now + 30_000), 3000, 'waits for the pause')
    t.equal(gate.delayFor(now + 2000), -1, 'refused when the pause outlasts the deadline')
    t.equal(gate.pauseLeftMs(), 3000)
    now += 3000
    t.equal(gate.delayFor(now + 1), 0, 'free again')
    t.equal(gate.throttled(undefined), 1000, 'no Retry-After: 1 s')
    t.equal(gate.throttled('3600'), 10_000, 'capped by M2M_PROXY_THROTTLE_MAX_PAUSE_MS')
    t.equal(gate.throttled('0'), 100, 'never 0: the throttled requests must not come straight back')
    t.equal(gate.throttled(new Date(now + 5000).toUTCString()), 5000, 'an HTTP date')
    t.equal(gate.throttledAnswers, 5)
  }
)

t.test('the contracted rate spaces requests 1/rate apart, and a slot past the deadline is not taken', async (t) => {
  let now = 0
  const gate = new UpstreamGate({ maxPauseMs: 60_000, ratePerSecond: 4, now: () => now })
  t.same(
    [gate.delayFor(10_000), gate.delayFor(10_000), gate.delayFor(10_000), gate.delayFor(10_000)],
    [0, 250, 500, 750]
  )
  t.equal(gate.delayFor(900), -1, 'the next slot (1000 ms) is past this deadline')
  t.equal(gate.delayFor(10_000), 1000, 'and was not taken by the refused request')
  now = 5000
  t.equal(gate.delayFor(10_000), 0, 'idle for a while: sent at once (no burst credit kept beyond one slot)')
  t.equal(gate.waitedRequests, 4)
})

t.test('slot timers that fire late together are sent one interval apart, not in a burst', async (t) => {
  let now = 0
  const gate = new UpstreamGate({ maxPauseMs: 60_000, ratePerSecond: 4, now: () => now })
  const waits = [1, 2, 3, 4, 5].map(() => gate.delayFor(10_000))
  t.same(waits, [0, 250, 500, 750, 1000])
  t.equal(gate.spacingLeftMs(), 0, 'the first request goes at once')
  // On time: each timer fires at its slot, or up to 1 ms early, and goes.
  now = 250
  t.equal(gate.spacingLeftMs(), 0)
  now = 499.5
  t.equal(gate.spacingLeftMs(), 0, 'within 1 ms of its slot')
  // The event loop is held up for 400 ms: the timers of 750 and 1000 fire together at 1150.
  now = 1150
  const sent: number[] = []
  const pending = [750, 1000]
  while (pending.length > 0) {
    const leftMs = gate.spacingLeftMs()
    if (leftMs === 0) {
      sent.push(now)
      pending.shift()
    } else now += leftMs
  }
  t.same(sent, [1150, 1400], 'one interval apart')
  now = 1650
  t.equal(gate.spacingLeftMs(), 0, 'and on from there')
  const unspaced = new UpstreamGate({ maxPauseMs: 60_000, ratePerSecond: 0, now: () => 0 })
  t.same([unspaced.spacingLeftMs(), unspaced.spacingLeftMs()], [0, 0], 'without a rate nothing is spaced')
})

t.test('throttled answers: 429, and 503 only with Retry-After', async (t) => {
  t.ok(isThrottledAnswer(429, undefined))
  t.ok(isThrottledAnswer(503, '2'))
  t.notOk(isThrottledAnswer(503, undefined), 'a plain 503 is an outage, not a limit')
  t.notOk(isThrottledAnswer(400, '2'))
})

t.test(
  'after a pause, sending resumes at the rate ThingSpace accepted, not all at once; the rate is forgotten later',
  async (t) => {
    let now = 1_000_000
    const gate = new UpstreamGate({ maxPauseMs: 60_000, ratePerSecond: 0, now: () => now })
    for (let i = 0; i < 40; i++) {
      now += 20 // 40 accepted answers in the 800 ms before the throttled one
      gate.accepted()
    }
    now = 1_000_900
    gate.throttled('1')
    now += 500
    gate.accepted() // sent before the pause, answered during it: counts too
    now = 1_001_900
    const waits = [gate.delayFor(now + 10_000), gate.delayFor(now + 10_000), gate.delayFor(now + 10_000)] as number[]
    t.same(
      waits.map((ms) => Math.round(ms * 1000)),
      [0, 27_778, 55_556],
      '41 a second seen, 90% of it sent: 36'
    )
    t.equal(gate.learnedRate, 36)
    t.equal(gate.delayFor(now + 10), -1, 'a slot past the deadline is not taken')
    now += LEARNED_RATE_MEMORY_MS + 1000
    t.equal(gate.delayFor(now + 10_000), 0)
    t.equal(gate.learnedRate, 0, 'a minute without throttling: full speed again')
    t.same([gate.delayFor(now), gate.delayFor(now)], [0, 0])
  }
)

t.test('a throttled answer after a quiet spell: one a second until ThingSpace has shown more', async (t) => {
  let now = 5_000_000
  const gate = new UpstreamGate({ maxPauseMs: 60_000, ratePerSecond: 0, now: () => now })
  gate.throttled('2')
  now += 2000
  t.same([gate.delayFor(now + 5000), gate.delayFor(now + 5000)], [0, 1000])
  t.equal(gate.learnedRate, 1)
})

t.test(
  'fleet mode: pauses are told to the fleet, slots of the contracted rate come from it, and it down the rate is kept locally',
  async (t) => {
    let now = 0
    const told: number[] = []
    const asked: Array<[number, number, number]> = []
    let storeDown = false
    const gate = new UpstreamGate({ maxPauseMs: 60_000, ratePerSecond: 10, now: () => now })
    gate.share({
      pause: (pauseMs) => {
        told.push(pauseMs)
      },
      takeSlot: async (intervalMs, notBeforeMs, maxWaitMs) => {
        if (storeDown) throw new Error('Redis down')
        asked.push([intervalMs, notBeforeMs, maxWaitMs])
        return notBeforeMs + 7
      }
    })
    t.equal(await gate.delayFor(5000), 7, "the fleet's answer")
    t.same(asked, [[100, 0, 5000]], 'interval 1/rate, no earlier wait, the whole budget')
    t.equal(await gate.delayFor(5000), 7, "no local spacing on top of the fleet's")
    gate.throttled('2')
    t.same(told, [2000], 'the fleet is told')
    gate.pauseFor(3000)
    t.same(told, [2000], 'a pause heard from the fleet is not told again')
    t.equal(await gate.delayFor(10_000), 3007, 'the fleet slot is taken after the pause')
    t.same(asked[2], [100, 3000, 10_000])
    now = 3000 + LEARNED_RATE_MEMORY_MS // past the rate learned from that pause (no accepted answers: one a second)
    storeDown = true
    t.same(
      [await gate.delayFor(now + 10_000), await gate.delayFor(now + 10_000), await gate.delayFor(now + 10_000)],
      [0, 100, 200],
      'store down: the contracted rate spaced here'
    )
  }
)

t.test('fleet mode without a contracted rate: the hot path still reads no clock', async (t) => {
  let reads = 0
  const gate = new UpstreamGate({
    maxPauseMs: 60_000,
    ratePerSecond: 0,
    now: () => {
      reads++
      return 0
    }
  })
  gate.share({
    pause: () => {},
    takeSlot: async () => {
      throw new Error('not to be asked')
    }
  })
  for (let i = 0; i < 10; i++) t.equal(gate.delayFor(0), 0)
  t.equal(reads, 0)
})
