// An operator's edits in fleet mode with real processes (issue 17, item 3): a typo in one replica's credentials file is
// checked with one login and stays local; the known-good password put back in that file, plus one POST
// /admin/credentials/reload, makes the whole fleet serve again without a restart or a hand-made change in Redis. POST
// /admin/session/end ends the fleet's session.
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import t from 'tap'
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

function writePassword (replica: FleetReplica, password: string): void {
  fs.writeFileSync(replica.credentialsFile, JSON.stringify({ ...DEMO_CREDENTIALS, password }), { mode: 0o600 })
}

async function readyz (replica: FleetReplica): Promise<{ status: number; text: string }> {
  const response = await fetch(`${replica.adminUrl}/readyz`)
  return { status: response.status, text: await response.text() }
}

if (await haveTestRedis(t)) {
  t.test(
    'a typo stays on its replica; the good password back in that file and one reload bring the fleet back; session/end ends it fleet-wide',
    async (t) => {
      const keyPrefix = fleetKeyPrefix()
      t.teardown(async () => await deleteKeys(TEST_REDIS_URL, keyPrefix))
      const { sim, simUrl } = await startSimulator(t)
      const fleetKey = randomBytes(32).toString('hex')
      const replicas: FleetReplica[] = []
      for (let i = 0; i < 3; i++) {
        replicas.push(
          await startFleetReplica(t, {
            simUrl,
            keyPrefix,
            fleetKey,
            env: { M2M_PROXY_CREDENTIALS_WATCH_INTERVAL_MS: '200' }
          })
        )
      }
      for (const replica of replicas) await waitReady(replica)
      const [edited, second, third] = replicas as [FleetReplica, FleetReplica, FleetReplica]
      await until(async () => (await adminSession(third)).password.generation === 1, 10_000, 'generation 1 published')

      // Two typos in a row in one replica's file, each found by its watcher: each checked with one login, neither
      // published.
      for (const [round, typo] of ['Pw-typo-one', 'Pw-typo-two'].entries()) {
        writePassword(edited, typo)
        await until(() => sim.stats.failedLogins === round + 1, 10_000, `the check of typo ${round + 1}`)
        const rejection = `ThingSpace rejected the credentials in ${edited.credentialsFile}`
        await until(
          () =>
            edited.lines.filter((line) => typeof line.msg === 'string' && line.msg.includes(rejection)).length ===
            round + 1,
          10_000,
          `typo ${round + 1} said rejected`
        )
      }
      const ready = await readyz(edited)
      t.equal(ready.status, 503)
      t.match(ready.text, /credentials-rejected/, 'the edited replica says why')
      t.same(
        [filePassword(second), filePassword(third)],
        [DEMO_CREDENTIALS.password, DEMO_CREDENTIALS.password],
        'no other file changed'
      )
      for (const replica of replicas) {
        t.equal((await adminSession(replica)).password.generation, 1, 'no typo became a generation')
      }
      t.same(await Promise.all([second, third].map(echoStatus)), [200, 200], 'the others serve')

      // The session expires: the fleet's count is at M2M_PROXY_MAX_LOGIN_FAILURES, so no replica may log in.
      sim.expireSessions()
      t.same(await Promise.all([second, third].map(echoStatus)), [503, 503], 'the guard holds fleet-wide')
      t.equal(sim.stats.failedLogins, 2)

      // The way back: the known-good password in that one file, and one admin call there.
      writePassword(edited, DEMO_CREDENTIALS.password)
      await edited.waitFor(
        (line) => typeof line.msg === 'string' && line.msg.includes('holds the password in force again')
      )
      const reload = await fetch(`${edited.adminUrl}/admin/credentials/reload`, { method: 'POST', headers: AUTH })
      t.equal(reload.status, 200, await reload.text())
      t.same(await Promise.all(replicas.map(echoStatus)), [200, 200, 200], 'the whole fleet serves again')
      for (const replica of replicas) t.equal((await readyz(replica)).status, 200)
      t.equal(sim.stats.failedLogins, 2, 'no further failed login')
      t.same(replicas.map(filePassword), [
        DEMO_CREDENTIALS.password,
        DEMO_CREDENTIALS.password,
        DEMO_CREDENTIALS.password
      ])

      // POST /admin/session/end on one replica ends the fleet's session: the others drop it at once.
      const ended = await fetch(`${second.adminUrl}/admin/session/end`, { method: 'POST', headers: AUTH })
      t.equal(ended.status, 200, await ended.text())
      await until(
        async () => (await Promise.all(replicas.map(adminSession))).every((status) => status.state === 'none'),
        2000,
        'every replica drops the ended session'
      )
      const loginsBefore = sim.stats.logins
      t.same(await Promise.all(replicas.map(echoStatus)), [200, 200, 200])
      t.equal(sim.stats.logins - loginsBefore, 1, 'one login for the fleet afterwards')

      for (const replica of replicas) {
        const text = replica.lines.map((line) => JSON.stringify(line)).join('\n') + replica.stderr
        t.notOk(
          /Pw-typo|"password":"/.test(text) || text.includes(DEMO_CREDENTIALS.password),
          'no password in any log line'
        )
      }
    }
  )
}
