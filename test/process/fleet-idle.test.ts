// Fleet mode with real processes: the fleet's idle clock and a Redis that lost its state, with `node dist/main.js`
// replicas sharing one Redis and one simulated ThingSpace account.
import { randomBytes } from 'node:crypto'
import t from 'tap'
import { fleetKeyPrefix as prefix, metricValue, startFleetReplica, waitReady } from '../helpers/fleet.js'
import type { ProxyProcess } from '../helpers/process.js'
import { deleteKeys, haveTestRedis, rawValues, TEST_REDIS_URL } from '../helpers/redis.js'
import { ECHO_PATH, startSimulator } from '../helpers/simulator.js'

async function startReplica (
  t: Parameters<typeof startFleetReplica>[0],
  simUrl: string,
  keyPrefix: string,
  fleetKey: string,
  env: Record<string, string> = {}
): Promise<ProxyProcess> {
  return await startFleetReplica(t, { simUrl, keyPrefix, fleetKey, env })
}

// The two tests mostly wait (idle time, the share interval): side by side.
t.jobs = 2

if (await haveTestRedis(t)) {
  t.test(
    "the idle clock is the fleet's: replicas left quiet past their own idle time take up the session one replica kept in use, no login",
    async (t) => {
      const keyPrefix = prefix()
      t.teardown(async () => await deleteKeys(TEST_REDIS_URL, keyPrefix))
      // 20 s of idleness instead of 20 minutes: each replica stops using a session 18 s after its own last use.
      const { sim, simUrl } = await startSimulator(t, { sessionIdleSeconds: 20 })
      const fleetKey = randomBytes(32).toString('hex')
      const replicas = await Promise.all(
        [0, 1, 2].map(
          async () => await startReplica(t, simUrl, keyPrefix, fleetKey, { M2M_PROXY_SESSION_IDLE_SECONDS: '20' })
        )
      )
      await Promise.all(replicas.map(async (replica) => await waitReady(replica)))
      const [busy, ...quiet] = replicas as [ProxyProcess, ProxyProcess, ProxyProcess]
      const call = async (replica: ProxyProcess): Promise<number> => {
        const response = await fetch(`${replica.proxyUrl}${ECHO_PATH}`)
        await response.arrayBuffer()
        return response.status
      }
      for (const replica of replicas) t.equal(await call(replica), 200)
      const avoidedBy = async (targets: ProxyProcess[]): Promise<number> => {
        let sum = 0
        for (const replica of targets) sum += await metricValue(replica, 'm2m_proxy_fleet_logins_avoided_total')
        return sum
      }
      const avoidedBefore = await avoidedBy(quiet)
      const started = Date.now()
      const busyStatuses: number[] = []
      while (Date.now() - started < 26_000) {
        busyStatuses.push(await call(busy))
        await new Promise((resolve) => setTimeout(resolve, 1000))
      }
      t.ok(
        busyStatuses.every((status) => status === 200),
        'the busy replica was served throughout'
      )
      t.equal(sim.stats.logins, 1, 'the session the busy replica uses is never renewed')
      for (const replica of quiet) t.equal(await call(replica), 200, 'a replica quiet for 26 s is served')
      t.equal(sim.stats.logins, 1, 'by the session the fleet kept alive: no login')
      t.equal(
        (await avoidedBy(quiet)) - avoidedBefore,
        2,
        'each quiet replica took the session up again after its own idle time'
      )
    }
  )

  t.test(
    "a Redis that lost the fleet's state (flushed) gets the session back from the replicas: a replica started then takes it up, no login",
    async (t) => {
      const keyPrefix = prefix()
      t.teardown(async () => await deleteKeys(TEST_REDIS_URL, keyPrefix))
      const { sim, simUrl } = await startSimulator(t)
      const fleetKey = randomBytes(32).toString('hex')
      const replicas = await Promise.all([0, 1].map(async () => await startReplica(t, simUrl, keyPrefix, fleetKey)))
      await Promise.all(replicas.map(async (replica) => await waitReady(replica)))
      const sessionKeyStored = async (): Promise<boolean> =>
        (await rawValues(TEST_REDIS_URL, keyPrefix)).some((value) => value.endsWith(':session'))
      t.ok(await sessionKeyStored(), "the fleet's session is in Redis")
      await deleteKeys(TEST_REDIS_URL, keyPrefix) // as FLUSHALL: no reconnection tells the replicas
      t.notOk(await sessionKeyStored())
      const deadline = Date.now() + 15_000
      while (!(await sessionKeyStored()) && Date.now() < deadline) {
        // a use, which the replica shares every 5 s
        const response = await fetch(`${(replicas[0] as ProxyProcess).proxyUrl}${ECHO_PATH}`)
        await response.arrayBuffer()
        await new Promise((resolve) => setTimeout(resolve, 500))
      }
      t.ok(await sessionKeyStored(), 're-seeded by a replica holding the session')
      const late = await startReplica(t, simUrl, keyPrefix, fleetKey)
      await waitReady(late)
      const response = await fetch(`${late.proxyUrl}${ECHO_PATH}`)
      await response.arrayBuffer()
      t.equal(response.status, 200)
      t.equal(sim.stats.logins, 1, 'the replica started after the flush took up the re-seeded session')
      // Log lines reach the test asynchronously (in production in batches, at least every second): waited for, not
      // looked up once.
      const reseedLine = await Promise.any(
        replicas.map(async (replica) => await replica.waitFor((line) => String(line.msg).includes('re-seeded'), 5000))
      )
      t.equal(reseedLine.level, 40, 'a replica logged the re-seed, as a warning')
    }
  )
}
