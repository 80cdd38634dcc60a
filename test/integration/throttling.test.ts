// ThingSpace's throttling absorbed (issue 18, items 5 and 6): the simulator answers 429 with Retry-After above a rate;
// the proxy pauses every request for the Retry-After, sends the throttled ones again, and with a contracted rate never
// passes the limit.
import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { ECHO_PATH, startStack, type Stack } from '../helpers/stack.js'
import { metricValue } from '../helpers/metrics.js'
import { DEMO_CREDENTIALS } from '../../src/simulator/app.js'

/**
 * `count` calls of the echo route, `concurrency` at a time; their statuses. Every other one is a POST with a JSON body,
 * as the SDK sends nearly every call: a request whose body was read must wait and be sent like any other.
 */
async function burst (stack: Stack, count: number, concurrency: number): Promise<number[]> {
  const statuses: number[] = []
  let next = 0
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        next++
        const answer =
          next % 2 === 0
            ? await stack.call('GET', ECHO_PATH)
            : await stack.call('POST', ECHO_PATH, {
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify({ request: next })
            })
        statuses.push(answer.status)
      }
    })
  )
  return statuses
}

/** The most requests the simulator received in any one-second window (its arrivals log). */
function peakPerSecond (arrivals: readonly number[]): number {
  let peak = 0
  let start = 0
  for (let end = 0; end < arrivals.length; end++) {
    while ((arrivals[end] as number) - (arrivals[start] as number) >= 1000) start++
    peak = Math.max(peak, end - start + 1)
  }
  return peak
}

function countsBy (statuses: number[]): Record<number, number> {
  const counts: Record<number, number> = {}
  for (const status of statuses) counts[status] = (counts[status] ?? 0) + 1
  return counts
}

t.test(
  'the simulator throttling at 40 req/s: a burst of 200 requests through the proxy, every one answered 200',
  async (t) => {
    const stack = await startStack(t, { simulator: { throttleRate: 40 } })
    const statuses = await burst(stack, 200, 50)
    t.same(countsBy(statuses), { 200: 200 }, "the clients never see ThingSpace's 429")
    t.ok(
      stack.sim.stats.throttledRequests > 0,
      `ThingSpace throttled ${stack.sim.stats.throttledRequests} sends, which were sent again after the pause`
    )
    const metrics = (await stack.adminCall('GET', '/metrics')).text
    t.equal(
      metricValue(metrics, 'm2m_proxy_upstream_throttled_total', { outcome: 'retried' }),
      stack.sim.stats.throttledRequests,
      'each counted'
    )
  }
)

t.test(
  'the simulator throttling at 40 req/s, a burst of 500 at once: all 200, and after the first pause ThingSpace sees at most 40 a second (+10%)',
  async (t) => {
    const stack = await startStack(t, { simulator: { throttleRate: 40 } })
    await stack.call('GET', ECHO_PATH) // logged in
    const arrivalsBefore = stack.sim.stats.apiRequestArrivals.length
    const statuses = await burst(stack, 500, 500)
    t.same(countsBy(statuses), { 200: 500 }, 'every client request answered 200')
    const arrivals = stack.sim.stats.apiRequestArrivals.slice(arrivalsBefore)
    const firstThrottled = stack.sim.stats.throttledArrivals[0] as number
    t.ok(firstThrottled !== undefined, 'the burst was throttled')
    // Before the first 429 the proxy cannot know the limit: the requests already in flight then (at most
    // M2M_PROXY_MAX_IN_FLIGHT) arrive together. From the end of that first pause on, it sends at the rate it learned.
    const afterFirstPause = arrivals.filter((at) => at >= firstThrottled + 1000)
    const peak = peakPerSecond(afterFirstPause)
    t.ok(peak <= 44, `at most ${peak} arrivals in any second after the first pause (limit 40)`)
    // How many go before the first 429 depends on how fast this machine sends them; during the pause only those
    // already on their way arrive (M2M_PROXY_MAX_IN_FLIGHT, 128), whatever the machine's speed.
    const duringFirstPause = arrivals.filter((at) => at >= firstThrottled && at < firstThrottled + 1000).length
    t.ok(duringFirstPause <= 128, `${duringFirstPause} arrivals during the first pause: only those already sent`)
    t.ok(afterFirstPause.length > 0, `the rest sent after it (${afterFirstPause.length})`)
    t.ok(
      stack.sim.stats.throttledRequests <= 128,
      `${stack.sim.stats.throttledRequests} throttled arrivals in all: the first flight, not a retry storm`
    )
    const learned = metricValue((await stack.adminCall('GET', '/metrics')).text, 'm2m_proxy_upstream_learned_rate')
    t.ok(learned >= 30 && learned <= 40, `the rate learned: ${learned} req/s`)
  }
)

t.test(
  'with M2M_PROXY_UPSTREAM_RATE_LIMIT under the contract: not one 429 from the simulator, at most the contracted rate',
  async (t) => {
    const stack = await startStack(t, { simulator: { throttleRate: 40 }, env: { M2M_PROXY_UPSTREAM_RATE_LIMIT: '36' } })
    const arrivalsBefore = stack.sim.stats.apiRequestArrivals.length
    const statuses = await burst(stack, 150, 50)
    t.same(countsBy(statuses), { 200: 150 })
    t.equal(stack.sim.stats.throttledRequests, 0, 'no 429 at all')
    const peak = peakPerSecond(stack.sim.stats.apiRequestArrivals.slice(arrivalsBefore))
    t.ok(peak <= 40, `at most ${peak} requests reached the simulator in any second (contract 40, limit 36)`)
    const metrics = (await stack.adminCall('GET', '/metrics')).text
    const waitedForSlots = metricValue(metrics, 'm2m_proxy_wait_seconds_count', { stage: 'throttle' })
    t.ok(
      waitedForSlots >= 100,
      `${waitedForSlots} requests waited for a rate slot, observed in m2m_proxy_wait_seconds{stage="throttle"}`
    )
  }
)

t.test(
  "a pause longer than a request may wait: the throttled request gets ThingSpace's 429, later ones 503 Proxy.Overloaded with Retry-After",
  async (t) => {
    const stack = await startStack(t, { env: { M2M_PROXY_THROTTLE_MAX_WAIT_MS: '1000' } })
    stack.sim.throttle(1, 5) // one request a second; the others wait 5 s
    t.equal((await stack.call('GET', ECHO_PATH)).status, 200)
    const throttled = await stack.call('GET', ECHO_PATH)
    t.equal(throttled.status, 429, "ThingSpace's answer, as it came")
    t.equal(throttled.headers['retry-after'], '5')
    const waiting = await stack.call('GET', ECHO_PATH)
    t.equal(waiting.status, 503)
    t.match(waiting.json(), {
      errorCode: 'Proxy.Overloaded.UpstreamThrottled',
      errorMessage: /M2M_PROXY_THROTTLE_MAX_WAIT_MS/
    })
    t.ok(Number(waiting.headers['retry-after']) >= 1, `Retry-After ${String(waiting.headers['retry-after'])}`)
    const metrics = (await stack.adminCall('GET', '/metrics')).text
    t.equal(metricValue(metrics, 'm2m_proxy_upstream_paused'), 1, 'paused')
    t.equal(metricValue(metrics, 'm2m_proxy_upstream_throttled_total', { outcome: 'passed-on' }), 1)
    t.equal(metricValue(metrics, 'm2m_proxy_overloaded_total', { reason: 'upstream-throttled' }), 1)
    stack.sim.throttle(0)
    await sleep(5100)
    t.equal((await stack.call('GET', ECHO_PATH)).status, 200, 'served again once the pause is over')
  }
)

t.test("the simulator's throttle control route: rate and Retry-After, validated", async (t) => {
  const stack = await startStack(t)
  const post = async (body: string): Promise<{ status: number; text: string }> => {
    const response = await fetch(`${stack.simUrl}/simulator/control/throttle`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body
    })
    return { status: response.status, text: await response.text() }
  }
  t.equal((await post('{"rate":-1}')).status, 400)
  t.equal((await post('{"rate":5,"retryAfterSeconds":61}')).status, 400)
  t.same(JSON.parse((await post('{"rate":2,"retryAfterSeconds":3}')).text), { rate: 2, retryAfterSeconds: 3 })
  const basic = Buffer.from(`${DEMO_CREDENTIALS.clientId}:${DEMO_CREDENTIALS.clientSecret}`).toString('base64')
  const grant = await fetch(`${stack.simUrl}/api/ts/v1/oauth2/token`, {
    method: 'POST',
    headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: 'grant_type=client_credentials'
  })
  const { access_token: bearer } = (await grant.json()) as { access_token: string }
  const direct = async (): Promise<Response> =>
    await fetch(`${stack.simUrl}${ECHO_PATH}`, { headers: { authorization: `Bearer ${bearer}` } })
  const answers = [await direct(), await direct(), await direct()]
  t.equal(answers[2]?.status, 429, 'the third in a second is throttled, before any token check')
  t.equal(answers[2]?.headers.get('retry-after'), '3')
  t.match(await answers[2]?.json(), { errorCode: 'UnifiedWebService.REQUEST_FAILED.TooManyRequests' })
  t.same(JSON.parse((await post('{"rate":0}')).text), { rate: 0, retryAfterSeconds: 1 }, 'off')
})
