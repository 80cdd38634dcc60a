// Fleet mode with real processes: three `node dist/main.js` replicas sharing one Redis and one simulated ThingSpace
// account.
import { randomBytes } from 'node:crypto'
import t from 'tap'
import { fleetKeyPrefix as prefix, metricValue, startFleetReplica, waitReady } from '../helpers/fleet.js'
import type { ProxyProcess } from '../helpers/process.js'
import { deleteKeys, haveTestRedis, TEST_REDIS_URL } from '../helpers/redis.js'
import { ADMIN_TOKEN, ECHO_PATH, sha256, startSimulator, type Echo } from '../helpers/simulator.js'

const MAX_LOGIN_FAILURES = 2

async function startReplica (
  t: Parameters<typeof startFleetReplica>[0],
  simUrl: string,
  keyPrefix: string,
  fleetKey: string,
  env: Record<string, string> = {}
): Promise<ProxyProcess> {
  return await startFleetReplica(t, {
    simUrl,
    keyPrefix,
    fleetKey,
    env: { M2M_PROXY_MAX_LOGIN_FAILURES: String(MAX_LOGIN_FAILURES), ...env }
  })
}

async function adminJson (replica: ProxyProcess, urlPath: string): Promise<Record<string, unknown>> {
  const response = await fetch(`${replica.adminUrl}${urlPath}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
  return (await response.json()) as Record<string, unknown>
}

if (await haveTestRedis(t)) {
  t.test(
    'three replicas, one session expiry, 30 concurrent requests over the three: every one answered with its own body, exactly one new login',
    async (t) => {
      const keyPrefix = prefix()
      t.teardown(async () => await deleteKeys(TEST_REDIS_URL, keyPrefix))
      // A login takes a while, as at the real platform: the replicas' renewals overlap.
      const { sim, simUrl } = await startSimulator(t, { loginDelayMs: 300 })
      const fleetKey = randomBytes(32).toString('hex')
      const replicas = await Promise.all([0, 1, 2].map(async () => await startReplica(t, simUrl, keyPrefix, fleetKey)))
      await Promise.all(replicas.map(async (replica) => await waitReady(replica)))
      t.equal(sim.stats.logins, 1, 'one start-up login for the three')

      const snapshot = await adminJson(replicas[0] as ProxyProcess, '/admin/session')
      t.equal(snapshot.fleetMode, true, 'GET /admin/session says fleet mode is on')
      t.match(snapshot.fleet, { storeConnected: true })
      t.equal(await metricValue(replicas[0] as ProxyProcess, 'm2m_proxy_fleet_store_up'), 1)

      sim.expireSessions()
      const before = sim.stats.logins
      const answers = await Promise.all(
        Array.from({ length: 30 }, async (_, i) => {
          const body = `request ${i} ${randomBytes(8).toString('hex')}`
          const replica = replicas[i % 3] as ProxyProcess
          const response = await fetch(`${replica.proxyUrl}${ECHO_PATH}`, {
            method: 'POST',
            headers: { 'content-type': 'text/plain' },
            body
          })
          const echo = (await response.json()) as Echo
          return { status: response.status, ownBody: echo.bodySha256 === sha256(body) }
        })
      )
      t.same(
        answers.filter((answer) => answer.status !== 200 || !answer.ownBody),
        [],
        'every request 200 with its own body'
      )
      t.equal(sim.stats.logins - before, 1, 'exactly one login for the expiry, fleet-wide')
      let avoided = 0
      for (const replica of replicas) avoided += await metricValue(replica, 'm2m_proxy_fleet_logins_avoided_total')
      t.equal(avoided, 2 + 2, 'the other two replicas took up the session, at start-up and after the expiry')
    }
  )

  t.test(
    'wrong password: the three replicas send at most M2M_PROXY_MAX_LOGIN_FAILURES failed logins in all, restarts included',
    async (t) => {
      const keyPrefix = prefix()
      t.teardown(async () => await deleteKeys(TEST_REDIS_URL, keyPrefix))
      const { sim, simUrl } = await startSimulator(t, { password: 'another-password-entirely' })
      const fleetKey = randomBytes(32).toString('hex')
      const replicas = await Promise.all([0, 1, 2].map(async () => await startReplica(t, simUrl, keyPrefix, fleetKey)))
      const hammer = async (targets: ProxyProcess[]): Promise<number[]> => {
        const statuses: number[] = []
        for (let round = 0; round < 4; round++) {
          statuses.push(
            ...(await Promise.all(
              targets.flatMap((replica) =>
                [0, 1, 2].map(async () => {
                  const response = await fetch(`${replica.proxyUrl}${ECHO_PATH}`)
                  await response.arrayBuffer()
                  return response.status
                })
              )
            ))
          )
          await new Promise((resolve) => setTimeout(resolve, 1100)) // past the first backoff
        }
        return statuses
      }
      const statuses = await hammer(replicas)
      t.ok(
        statuses.every((status) => status === 503),
        'clients get 503'
      )
      t.ok(sim.stats.failedLogins >= 1, 'the wrong password was tried')
      t.ok(
        sim.stats.failedLogins <= MAX_LOGIN_FAILURES,
        `at most ${MAX_LOGIN_FAILURES} failed logins from the fleet (got ${sim.stats.failedLogins})`
      )
      // Restarted replicas with fresh state directories: only the fleet's count holds them back.
      for (const replica of replicas) {
        replica.child.kill('SIGKILL')
        await replica.exit
      }
      const restarted = await Promise.all([0, 1, 2].map(async () => await startReplica(t, simUrl, keyPrefix, fleetKey)))
      await hammer(restarted)
      t.ok(
        sim.stats.failedLogins <= MAX_LOGIN_FAILURES,
        `still at most ${MAX_LOGIN_FAILURES} after the restarts (got ${sim.stats.failedLogins})`
      )
      t.equal(sim.stats.logins, 0)
      const ready = await fetch(`${(restarted[0] as ProxyProcess).adminUrl}/readyz`)
      t.match(await ready.json(), { ready: false, reason: 'credentials-rejected' })
    }
  )
}
