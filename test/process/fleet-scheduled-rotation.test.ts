// Scheduled rotation in fleet mode with real processes (issue 13, item 5): three `node dist/main.js` replicas with
// M2M_PROXY_PASSWORD_ROTATION_DAYS, whose fleet password is older than that: exactly one of them rotates it.
import { randomBytes } from 'node:crypto'
import t from 'tap'
import { parseFleetKey } from '../../src/fleet/crypto.js'
import { RedisFleetStore } from '../../src/fleet/redis-store.js'
import { DAY_MS } from '../../src/credentials/rotation-schedule.js'
import { DEMO_CREDENTIALS } from '../../src/simulator/app.js'
import {
  adminSession,
  filePassword,
  fleetKeyPrefix,
  metricValue,
  startFleetReplica,
  until,
  waitReady,
  type FleetReplica
} from '../helpers/fleet.js'
import { deleteKeys, haveTestRedis, TEST_REDIS_URL } from '../helpers/redis.js'
import { startSimulator } from '../helpers/simulator.js'

const ROTATION_DAYS = 90
/**
 * M2M_PROXY_PASSWORD_ROTATION_FIRST_CHECK_MS: a few seconds instead of the default minute, so that the test does not
 * wait for it.
 */
const FIRST_CHECK_MS = 6000

if (await haveTestRedis(t)) {
  t.test(
    'a fleet password older than M2M_PROXY_PASSWORD_ROTATION_DAYS is rotated once, by one replica, and every replica takes it up',
    async (t) => {
      const keyPrefix = fleetKeyPrefix()
      t.teardown(async () => await deleteKeys(TEST_REDIS_URL, keyPrefix))
      const { sim, simUrl } = await startSimulator(t)
      const fleetKey = randomBytes(32).toString('hex')
      // The fleet's generation 1 was set 100 days ago: the demo password, as the replicas' files hold it.
      const store = new RedisFleetStore({
        url: TEST_REDIS_URL,
        fleetKey: parseFleetKey(fleetKey),
        keyPrefix,
        username: DEMO_CREDENTIALS.username
      })
      t.teardown(async () => await store.close())
      await until(() => store.connected, 10_000, "the test's store connects")
      t.ok(
        await store.publishPassword({
          generation: 1,
          password: DEMO_CREDENTIALS.password,
          changedAt: Date.now() - 100 * DAY_MS
        })
      )

      // Until the rotation (FIRST_CHECK_MS after the first start), the gauge shows generation 1's age. Each replica is
      // read once it is ready, before the next starts: the first one well within FIRST_CHECK_MS however slowly the
      // machine starts processes; a later one may come after the rotation, and then its gauge starts again (below).
      const replicas: FleetReplica[] = []
      const firstStartedAt = Date.now()
      let sawOldAge = 0
      for (let i = 0; i < 3; i++) {
        const replica = await startFleetReplica(t, {
          simUrl,
          keyPrefix,
          fleetKey,
          env: {
            M2M_PROXY_PASSWORD_ROTATION_DAYS: String(ROTATION_DAYS),
            M2M_PROXY_PASSWORD_ROTATION_FIRST_CHECK_MS: String(FIRST_CHECK_MS)
          }
        })
        replicas.push(replica)
        await waitReady(replica)
        const oldAge = async (): Promise<boolean> =>
          (await metricValue(replica, 'm2m_proxy_password_age_seconds')) >= 99 * 86_400
        await until(
          async () => sim.stats.passwordResets > 0 || (await oldAge()),
          10_000,
          "the gauge shows the fleet generation's age"
        )
        if (sim.stats.passwordResets === 0 && (await oldAge())) sawOldAge++
      }
      t.ok(sawOldAge >= 1, `the gauge showed generation 1's age (${sawOldAge} replica(s) read before the rotation)`)

      // The first check comes FIRST_CHECK_MS after each start; all three are due, one rotates.
      await until(() => sim.stats.passwordResets >= 1, FIRST_CHECK_MS + 30_000, 'a scheduled rotation', 200).catch(
        (error: unknown) => {
          const said = replicas.flatMap((replica) =>
            replica.lines.filter((line) => /rotat|password/i.test(String(line.msg))).map((line) => String(line.msg))
          )
          throw new Error(`${String(error)}; the replicas said: ${said.join(' | ')}`)
        }
      )
      t.ok(
        Date.now() - firstStartedAt >= FIRST_CHECK_MS,
        'not rotated before the first check, FIRST_CHECK_MS after start'
      )
      const newPassword = sim.password
      await until(
        () => replicas.every((replica) => filePassword(replica) === newPassword),
        15_000,
        "every replica's file holds the new password"
      )
      // The other two replicas' checks have come by now, too (they started within seconds of each other).
      await new Promise((resolve) => setTimeout(resolve, 5000))
      t.equal(sim.stats.passwordResets, 1, 'exactly one replica rotated')
      t.equal(sim.stats.failedLogins, 0, 'no login with the old password')
      for (const replica of replicas) {
        t.match(
          (await adminSession(replica)).password,
          { generation: 2, savedToFile: true },
          'every replica holds generation 2'
        )
        t.ok((await metricValue(replica, 'm2m_proxy_password_age_seconds')) < 600, 'and its age starts again')
      }
      const rotatedBy = replicas.filter((replica) =>
        replica.lines.some((line) => String(line.msg).startsWith('scheduled password rotation done'))
      )
      t.equal(rotatedBy.length, 1, 'one replica logged the scheduled rotation')
      for (const replica of replicas) {
        t.notOk(
          replica.lines.some((line) => JSON.stringify(line).includes(newPassword)),
          'no password in a log line'
        )
      }
    }
  )
}
