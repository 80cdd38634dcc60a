// Someone who can write the fleet's Redis but has no fleet key (issue 17, items 1 and 2), against three real replicas:
// the attack of the issue (an old sealed password under the next generation number, a forged change time, deleted
// failure counts, a dead session written back, forged notifications) costs ThingSpace no failed login and no password
// reset, and no replica's file loses the working password. The worst such a writer gets is refusals that say why.
import { randomBytes } from 'node:crypto'
import t from 'tap'
import { createClient } from '@redis/client'
import { DEMO_CREDENTIALS } from '../../src/simulator/app.js'
import {
  adminSession,
  echoStatus,
  filePassword,
  fleetKeyPrefix,
  startFleetReplica,
  until,
  waitReady,
  type FleetReplica
} from '../helpers/fleet.js'
import { deleteKeys, haveTestRedis, TEST_REDIS_URL } from '../helpers/redis.js'
import { ADMIN_TOKEN, startSimulator } from '../helpers/simulator.js'

const AUTH = { authorization: `Bearer ${ADMIN_TOKEN}` }

const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

if (await haveTestRedis(t)) {
  t.test(
    'replayed sealed values, changed plain fields, deleted counts and forged notifications: 0 failed logins, 0 resets, every file keeps the working password',
    async (t) => {
      const keyPrefix = fleetKeyPrefix()
      t.teardown(async () => await deleteKeys(TEST_REDIS_URL, keyPrefix))
      const { sim, simUrl } = await startSimulator(t)
      const fleetKey = randomBytes(32).toString('hex')
      const replicas: FleetReplica[] = []
      for (let i = 0; i < 3; i++) {
        // Scheduled rotation on: a forged change time must not make any replica reset the password (item 2).
        replicas.push(
          await startFleetReplica(t, {
            simUrl,
            keyPrefix,
            fleetKey,
            env: { M2M_PROXY_PASSWORD_ROTATION_DAYS: '90', M2M_PROXY_CREDENTIALS_WATCH_INTERVAL_MS: '200' }
          })
        )
      }
      for (const replica of replicas) await waitReady(replica)
      await until(
        async () => (await adminSession(replicas[2] as FleetReplica)).password.generation === 1,
        10_000,
        'generation 1 published'
      )

      const raw = createClient({ url: TEST_REDIS_URL })
      await raw.connect()
      t.teardown(() => raw.destroy())
      const [passwordKey] = await raw.keys(`${keyPrefix}*password`)
      const [sessionKey] = await raw.keys(`${keyPrefix}*session`)
      const base = (passwordKey as string).replace(/password$/, '')
      const channel = `${base}changes`
      // What the writer kept from an earlier read (or an old RDB/AOF file).
      const oldPassword = await raw.hGetAll(passwordKey as string)
      const oldSession = await raw.hGetAll(sessionKey as string)

      const rotated = await fetch(`${(replicas[0] as FleetReplica).adminUrl}/admin/password/rotate`, {
        method: 'POST',
        headers: AUTH
      })
      t.equal(rotated.status, 200, await rotated.text())
      const working = sim.password
      await until(
        () => replicas.every((replica) => filePassword(replica) === working),
        10_000,
        'every file holds the rotated password'
      )
      const failedBefore = sim.stats.failedLogins
      const resetsBefore = sim.stats.passwordResets
      t.equal(resetsBefore, 1)

      // 1. The attack: the old sealed password under the next generation number, with a fresh change time.
      await raw.hSet(passwordKey as string, {
        generation: '3',
        record: oldPassword.record as string,
        changedAt: String(Date.now())
      })
      await raw.publish(channel, JSON.stringify({ kind: 'password', generation: 3 }))
      // 2. The old record whole, announced as new, and a change time of 0 (item 2: it used to trigger a reset within 4
      // s).
      await sleep(1500)
      await raw.hSet(passwordKey as string, { generation: '1', record: oldPassword.record as string, changedAt: '0' })
      await raw.publish(channel, JSON.stringify({ kind: 'password', generation: 4 }))
      await sleep(4000)
      t.same(replicas.map(filePassword), [working, working, working], "no replica's file lost the working password")
      for (const replica of replicas) {
        t.match((await adminSession(replica)).password, { generation: 2 }, 'every replica still holds generation 2')
      }
      const warnings = replicas
        .flatMap((replica) => replica.lines)
        .filter((line) => line.level === 40)
        .map((line) => String(line.msg))
        .join('\n')
      t.match(
        warnings,
        new RegExp(`shared state at ${passwordKey as string} was altered outside the fleet`),
        'the forged record is refused, naming the key'
      )
      t.match(
        warnings,
        /older than generation 2 which this replica verified before: refused/,
        'the replayed record is refused'
      )

      // 3. Rounds of: failure count deleted, a dead session written back, the session expired at ThingSpace; clients
      // keep calling.
      for (let round = 0; round < 3; round++) {
        await raw.del(`${base}failures`)
        await raw.hSet(sessionKey as string, oldSession)
        await raw.publish(channel, JSON.stringify({ kind: 'session' }))
        sim.expireSessions()
        const statuses = await Promise.all(replicas.map(echoStatus))
        t.same(statuses, [200, 200, 200], `round ${round + 1}: every client request answered`)
      }
      // 4. A changed plain field in the session record: refused, the record is replaced by the next login instead of
      // blocking it.
      await raw.hSet(sessionKey as string, { loggedInAt: '1' })
      sim.expireSessions()
      t.same(
        await Promise.all(replicas.map(echoStatus)),
        [200, 200, 200],
        'an altered session record costs a login, not the service'
      )
      await until(
        () =>
          replicas.some((replica) =>
            replica.lines.some(
              (line) =>
                typeof line.msg === 'string' && line.msg.includes('treated as absent and replaced at the next login')
            )
          ),
        5000,
        'the altered session record is named in a warning'
      )
      t.equal(sim.stats.failedLogins - failedBefore, 0, 'ThingSpace saw no failed login caused by the writes')
      t.equal(sim.stats.passwordResets, resetsBefore, 'and no password reset')
      t.equal(sim.password, working)

      for (const replica of replicas) {
        const text = replica.lines.map((line) => JSON.stringify(line)).join('\n') + replica.stderr
        t.notOk(text.includes(working) || text.includes(DEMO_CREDENTIALS.password), 'no password in any log line')
      }
    }
  )
}
