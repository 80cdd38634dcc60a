// Login and token answers across a fleet of real processes (issue 17, items 4 and 7): a 4xx to a login counts toward
// the fleet's budget whatever its errorCode (a 400 with a ".SessionToken." errorCode was taken for a refused session
// and not counted: three replicas sent six such logins with the fleet's count at 0), and an OAuth token refused on
// every replica at once costs the fleet one fetch (2 of 4 trials fetched twice).
import { randomBytes } from 'node:crypto'
import t from 'tap'
import { createClient } from '@redis/client'
import { echoStatus, fleetKeyPrefix, startFleetReplica, waitReady, type FleetReplica } from '../helpers/fleet.js'
import { deleteKeys, haveTestRedis, TEST_REDIS_URL } from '../helpers/redis.js'
import { startSimulator } from '../helpers/simulator.js'

if (await haveTestRedis(t)) {
  t.test(
    'logins answered 400 with a .SessionToken. errorCode count: at most M2M_PROXY_MAX_LOGIN_FAILURES for three replicas',
    async (t) => {
      const keyPrefix = fleetKeyPrefix()
      t.teardown(async () => await deleteKeys(TEST_REDIS_URL, keyPrefix))
      const { sim, simUrl } = await startSimulator(t)
      const pendingFaults = async (): Promise<number> =>
        ((await (await fetch(`${simUrl}/simulator/control/stats`)).json()) as { pendingLoginFaults: number })
          .pendingLoginFaults
      const fleetKey = randomBytes(32).toString('hex')
      const replicas: FleetReplica[] = []
      for (let i = 0; i < 3; i++) replicas.push(await startFleetReplica(t, { simUrl, keyPrefix, fleetKey }))
      for (const replica of replicas) await waitReady(replica)

      const queued = 12
      sim.failNextLogins(queued, { status: 400, errorCode: 'UnifiedWebService.INPUT_INVALID.SessionToken.Invalid' })
      sim.expireSessions()
      for (let round = 0; round < 4; round++) {
        for (const status of await Promise.all(replicas.map(echoStatus))) {
          t.not(status, 200, `round ${round + 1}: no session to be had`)
        }
        await new Promise((resolve) => setTimeout(resolve, 1200)) // past the backoff of a rejected login
      }
      const sent = queued - (await pendingFaults())
      t.ok(sent >= 1 && sent <= 2, `${sent} such logins reached ThingSpace: counted, at most 2 for the fleet`)
      const raw = createClient({ url: TEST_REDIS_URL })
      await raw.connect()
      t.teardown(() => raw.destroy())
      const [failuresKey] = await raw.keys(`${keyPrefix}*failures`)
      t.equal(Number(await raw.get(failuresKey as string)), sent, 'the fleet counted every one')
    }
  )

  t.test(
    'an OAuth token refused on three replicas at once: one token fetch for the fleet, in every trial',
    async (t) => {
      const keyPrefix = fleetKeyPrefix()
      t.teardown(async () => await deleteKeys(TEST_REDIS_URL, keyPrefix))
      const { sim, simUrl } = await startSimulator(t)
      const fleetKey = randomBytes(32).toString('hex')
      const replicas: FleetReplica[] = []
      for (let i = 0; i < 3; i++) replicas.push(await startFleetReplica(t, { simUrl, keyPrefix, fleetKey }))
      for (const replica of replicas) await waitReady(replica)
      t.same(await Promise.all(replicas.map(echoStatus)), [200, 200, 200])
      for (let trial = 1; trial <= 4; trial++) {
        const before = sim.stats.tokenRequests
        sim.expireOAuthToken()
        t.same(
          await Promise.all(replicas.flatMap((replica) => [replica, replica]).map(echoStatus)),
          [200, 200, 200, 200, 200, 200],
          `trial ${trial}: every request answered`
        )
        t.equal(sim.stats.tokenRequests - before, 1, `trial ${trial}: one token fetch for the three replicas`)
      }
    }
  )
}
