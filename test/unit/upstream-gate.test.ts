// The upstream gate on a hand-moved clock (issue 18, item 5): a throttled answer pauses every request for its
// Retry-After (capped, 1 s without one), the contracted rate spaces requests, and a wait past the deadline is refused.
import t from 'tap'
import {
  isThrottledAnswer,
  LEARNED_RATE_MEMORY_MS,
  LEARNED_RATE_RISE_MS,
  UpstreamGate
} from '../../src/proxy/upstream-gate.js'

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

/** `count` requests asking to be sent at once, each allowed to wait `budgetMs`: their waits (-1: refused). */
function askAll (gate: UpstreamGate, now: number, count: number, budgetMs: number): number[] {
  return Array.from({ length: count }, () => gate.delayFor(now + budgetMs) as number)
}

t.test(
  "low demand meets a 429 (another application used up the account's limit): the clients' demand is not kept as ThingSpace's rate",
  async (t) => {
    // The reviewer's case: clients send 2 req/s, ThingSpace takes 20; one request meets a 429 meant for the other
    // application, is sent again after the pause, and a burst of 100 follows 1.5 s later.
    let now = 1_000_000
    const gate = new UpstreamGate({ maxPauseMs: 60_000, ratePerSecond: 0, now: () => now })
    for (let i = 0; i < 6; i++) {
      gate.accepted()
      now += 500
    }
    gate.throttled('1')
    now += 1000
    t.same(askAll(gate, now, 1, 30_000), [0], 'the throttled request, sent again at once after the pause')
    t.equal(gate.learnedRate, 1, 'two answers in the window: sent at one a second meanwhile')
    gate.accepted()
    now += 1500
    const waits = askAll(gate, now, 100, 30_000)
    t.same(waits, new Array(100).fill(0), 'the burst goes at full speed: the rate was the clients\' demand')
    t.equal(gate.learnedRate, 0, 'm2m_proxy_upstream_learned_rate 0')
  }
)

t.test('the first request after a quiet spell meets a 429: one a second only while more than that waits', async (t) => {
  let now = 5_000_000
  const gate = new UpstreamGate({ maxPauseMs: 60_000, ratePerSecond: 0, now: () => now })
  gate.throttled('2')
  now += 2000
  t.same(askAll(gate, now, 1, 30_000), [0])
  now += 500
  t.equal(gate.learnedRate, 1)
  now += 500
  t.same(askAll(gate, now, 50, 30_000), new Array(50).fill(0), 'demand never filled it: full speed')
  t.equal(gate.learnedRate, 0)
})

t.test(
  'a sustained limit is still learned and kept after the first second; it rises by one a second each 5 s without a 429',
  async (t) => {
    let now = 1_000_000
    const gate = new UpstreamGate({ maxPauseMs: 60_000, ratePerSecond: 0, now: () => now })
    for (let i = 0; i < 40; i++) {
      now += 20
      gate.accepted()
    }
    gate.throttled('1')
    now += 1000
    const backlog = askAll(gate, now, 100, 30_000)
    t.equal(gate.learnedRate, 36, '40 a second seen, 90% of it')
    t.same(
      backlog.slice(0, 3).map((ms) => Math.round(ms)),
      [0, 28, 56],
      'the requests that waited for the pause go 1/36 s apart'
    )
    now += 2000 // past the first second: the demand filled the rate, which is kept
    t.equal(Math.round(gate.delayFor(now + 30_000) as number), 778, 'after the backlog: 100/36 s from the pause')
    t.equal(gate.learnedRate, 36, 'kept')
    now += LEARNED_RATE_RISE_MS - 2000
    gate.delayFor(now + 30_000)
    t.equal(gate.learnedRate, 37, 'one more a second after 5 s without a 429')
    now += 3 * LEARNED_RATE_RISE_MS
    gate.delayFor(now + 30_000)
    t.equal(gate.learnedRate, 40, 'and so on: ThingSpace may accept more than when it throttled')
    for (let i = 0; i < 40; i++) {
      now += 25
      gate.accepted()
    }
    gate.throttled('1')
    now += 1000
    askAll(gate, now, 100, 30_000)
    t.equal(gate.learnedRate, 36, 'a 429 again: back to 90% of what it accepted')
  }
)

t.test('a rate learned while the limit was shared rises to what ThingSpace accepts, at the option\'s pace', async (t) => {
  // ThingSpace takes 20 a second, but another application had half of it when the proxy was throttled.
  let now = 0
  const gate = new UpstreamGate({ maxPauseMs: 60_000, ratePerSecond: 0, now: () => now, learnedRateRiseMs: 1000 })
  for (let i = 0; i < 10; i++) {
    now += 90
    gate.accepted()
  }
  gate.throttled('1')
  now += 1000
  askAll(gate, now, 30, 60_000)
  t.equal(gate.learnedRate, 9)
  for (let second = 0; second < 11; second++) {
    now += 1000
    gate.delayFor(now + 60_000) // the clients keep asking; ThingSpace accepts
  }
  t.equal(gate.learnedRate, 20, 'one more a second each second without a 429: no longer below what ThingSpace takes')
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
