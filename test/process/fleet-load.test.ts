// Fleet mode under load (issue 18), with real processes: three replicas taking a burst each across a session and an
// OAuth expiry, a throttled replica pausing the fleet, and the contracted rate kept by the fleet as a whole.
import { randomBytes } from 'node:crypto'
import t from 'tap'
import { fleetKeyPrefix as prefix, metricValue, startFleetReplica, until, waitReady } from '../helpers/fleet.js'
import type { ProxyProcess } from '../helpers/process.js'
import { rawExchange } from '../helpers/raw-http.js'
import { deleteKeys, haveTestRedis, TEST_REDIS_URL } from '../helpers/redis.js'
import { ECHO_PATH, startSimulator } from '../helpers/simulator.js'

type TapTest = Parameters<typeof startFleetReplica>[0]

async function startReplicas (
  t: TapTest,
  count: number,
  simUrl: string,
  env: Record<string, string> = {}
): Promise<ProxyProcess[]> {
  const keyPrefix = prefix()
  t.teardown(async () => await deleteKeys(TEST_REDIS_URL, keyPrefix))
  const fleetKey = randomBytes(32).toString('hex')
  // Without tap's hook (uninstrumented.ts): a replica is stopped with SIGKILL, so it would never write its coverage.
  const replicas = await Promise.all(
    Array.from({ length: count }, async () => await startFleetReplica(t, { simUrl, keyPrefix, fleetKey, env }))
  )
  await Promise.all(replicas.map(async (replica) => await waitReady(replica)))
  return replicas
}

/** `perReplica` requests to each replica at once, each on a connection of its own; the count of each status. */
async function burstOnEach (replicas: ProxyProcess[], perReplica: number): Promise<Record<number, number>> {
  const request = `GET ${ECHO_PATH} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`
  const answers = await Promise.all(
    replicas.flatMap((replica) =>
      Array.from({ length: perReplica }, async () => await rawExchange(replica.proxyUrl, request, 60_000))
    )
  )
  const counts: Record<number, number> = {}
  for (const answer of answers) {
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0) // 0: no answer (reset)
    counts[status] = (counts[status] ?? 0) + 1
  }
  return counts
}

if (await haveTestRedis(t)) {
  t.test(
    'three replicas × 300 concurrent connections, default settings: every request 200 across a session expiry, then an OAuth expiry; one login, one token fetch',
    async (t) => {
      const { sim, simUrl } = await startSimulator(t, { loginDelayMs: 300 })
      const replicas = await startReplicas(t, 3, simUrl)
      sim.expireSessions()
      const loginsBefore = sim.stats.logins
      t.same(await burstOnEach(replicas, 300), { 200: 900 }, 'no reset, no 503 across the session expiry')
      t.equal(sim.stats.logins - loginsBefore, 1, 'one login for the fleet')
      sim.expireOAuthToken()
      const tokensBefore = sim.stats.oauthTokensIssued
      t.same(await burstOnEach(replicas, 300), { 200: 900 }, 'none across the OAuth expiry either')
      t.equal(sim.stats.oauthTokensIssued - tokensBefore, 1, 'one OAuth token fetched for the fleet')
    }
  )

  t.test(
    'ThingSpace throttles one replica: the others pause too, and their requests are served after the pause',
    async (t) => {
      const { sim, simUrl } = await startSimulator(t)
      const [a, b] = (await startReplicas(t, 2, simUrl)) as [ProxyProcess, ProxyProcess]
      sim.throttle(1, 3) // one request a second, Retry-After 3 s
      const first = await fetch(`${a.proxyUrl}${ECHO_PATH}`)
      t.equal(first.status, 200)
      const throttled = fetch(`${a.proxyUrl}${ECHO_PATH}`) // 429 upstream: A pauses 3 s, then sends it again
      await until(() => sim.stats.throttledRequests === 1, 5000, 'A is throttled')
      await until(async () => (await metricValue(b, 'm2m_proxy_upstream_paused')) === 1, 2000, 'B is told to pause')
      sim.throttle(0)
      const startedAt = Date.now()
      const onB = await fetch(`${b.proxyUrl}${ECHO_PATH}`)
      const waitedMs = Date.now() - startedAt
      t.equal(onB.status, 200, "B's request is served")
      t.ok(waitedMs >= 1500, `after the fleet's pause (${waitedMs} ms)`)
      t.equal((await throttled).status, 200, "A's throttled request was sent again and served")
      t.equal(sim.stats.throttledRequests, 1, 'nothing else reached ThingSpace during the pause')
    }
  )

  t.test(
    "M2M_PROXY_UPSTREAM_RATE_LIMIT is the fleet's: three replicas under a 20 req/s contract, not one 429",
    async (t) => {
      const { sim, simUrl } = await startSimulator(t, { throttleRate: 20 })
      const replicas = await startReplicas(t, 3, simUrl, { M2M_PROXY_UPSTREAM_RATE_LIMIT: '18' })
      const arrivalsBefore = sim.stats.apiRequestArrivals.length
      t.same(await burstOnEach(replicas, 30), { 200: 90 }, 'every request 200')
      t.equal(sim.stats.throttledRequests, 0, 'no 429 at all: each replica alone would have sent 18 a second')
      const arrivals = sim.stats.apiRequestArrivals.slice(arrivalsBefore)
      const seconds = ((arrivals.at(-1) as number) - (arrivals[0] as number)) / 1000
      t.ok(seconds >= (89 / 18) * 0.9, `90 requests over ${seconds.toFixed(1)} s: the fleet's rate, not three times it`)
    }
  )
}
