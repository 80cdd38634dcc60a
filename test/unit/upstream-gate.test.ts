// The upstream gate on a hand-moved clock (issue 18, item 5): a throttled answer pauses every request for its Retry-After
// (capped, 1 s without one), the contracted rate spaces requests, and a wait past the deadline is refused.
import t from 'tap'
import { isThrottledAnswer, UpstreamGate } from '../../src/proxy/upstream-gate.js'

t.test('not paused and no rate: no wait, no clock read', async (t) => {
  let reads = 0
  const gate = new UpstreamGate({ maxPauseMs: 60_000, ratePerSecond: 0, now: () => { reads++; return 0 } })
  for (let i = 0; i < 100; i++) t.equal(gate.delayFor(0), 0)
  t.equal(reads, 0, 'the hot path reads no clock')
  t.equal(gate.paused, false)
})

t.test('a throttled answer pauses every request for its Retry-After, capped; 1 s without one; 100 ms at least', async (t) => {
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
})

t.test('the contracted rate spaces requests 1/rate apart, and a slot past the deadline is not taken', async (t) => {
  let now = 0
  const gate = new UpstreamGate({ maxPauseMs: 60_000, ratePerSecond: 4, now: () => now })
  t.same([gate.delayFor(10_000), gate.delayFor(10_000), gate.delayFor(10_000), gate.delayFor(10_000)], [0, 250, 500, 750])
  t.equal(gate.delayFor(900), -1, 'the next slot (1000 ms) is past this deadline')
  t.equal(gate.delayFor(10_000), 1000, 'and was not taken by the refused request')
  now = 5000
  t.equal(gate.delayFor(10_000), 0, 'idle for a while: sent at once (no burst credit kept beyond one slot)')
  t.equal(gate.waitedRequests, 4)
})

t.test('throttled answers: 429, and 503 only with Retry-After', async (t) => {
  t.ok(isThrottledAnswer(429, undefined))
  t.ok(isThrottledAnswer(503, '2'))
  t.notOk(isThrottledAnswer(503, undefined), 'a plain 503 is an outage, not a limit')
  t.notOk(isThrottledAnswer(400, '2'))
})
