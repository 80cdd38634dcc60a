// Password rotation in fleet mode with real processes (issue 13, item 4): three `node dist/main.js` replicas sharing
// one Redis and one simulated ThingSpace account. One rotation fleet-wide, every replica's file rewritten, a replica
// restarted with its old file logs in with the newest password.
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { DEMO_CREDENTIALS } from '../../src/simulator/app.js'
import { startFleetReplica, stopReplica, until, waitReady as waitReadyProcess } from '../helpers/fleet.js'
import type { ProxyProcess } from '../helpers/process.js'
import { deleteKeys, haveTestRedis, startRedisServer, TEST_REDIS_URL } from '../helpers/redis.js'
import { freePort } from '../helpers/ports.js'
import { RedisFleetStore } from '../../src/fleet/redis-store.js'
import { parseFleetKey } from '../../src/fleet/crypto.js'
import { ADMIN_TOKEN, ECHO_PATH, startSimulator } from '../helpers/simulator.js'

const AUTH = { authorization: `Bearer ${ADMIN_TOKEN}` }

interface Replica {
  process: ProxyProcess
  dir: string
  credentialsFile: string
}

/**
 * One replica in `dir` (made when not given): its own credentials file and state, the fleet's Redis, prefix and key;
 * killed in teardown.
 */
async function startReplica (
  t: Test,
  simUrl: string,
  keyPrefix: string,
  fleetKey: string,
  dir?: string,
  redisUrl = TEST_REDIS_URL
): Promise<Replica> {
  const process = await startFleetReplica(t, {
    simUrl,
    keyPrefix,
    fleetKey,
    dir,
    redisUrl,
    env: { M2M_PROXY_CREDENTIALS_WATCH_INTERVAL_MS: '200' }
  })
  return { process, dir: process.dir, credentialsFile: process.credentialsFile }
}

async function waitReady (replica: Replica): Promise<void> {
  await waitReadyProcess(replica.process)
}

async function waitUntil (test: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  await until(test, timeoutMs, what)
}

function filePassword (replica: Replica): string {
  return (JSON.parse(fs.readFileSync(replica.credentialsFile, 'utf8')) as { password: string }).password
}

async function rotate (replica: Replica): Promise<{ status: number; text: string }> {
  const response = await fetch(`${replica.process.adminUrl}/admin/password/rotate`, { method: 'POST', headers: AUTH })
  return { status: response.status, text: await response.text() }
}

async function passwordStatus (replica: Replica): Promise<Record<string, unknown>> {
  const response = await fetch(`${replica.process.adminUrl}/admin/session`, { headers: AUTH })
  return ((await response.json()) as { password: Record<string, unknown> }).password
}

if (await haveTestRedis(t)) {
  t.test(
    'three replicas: one rotation fleet-wide (409 elsewhere), every file rewritten; a replica restarted with its old file logs in with the newest password',
    async (t) => {
      const keyPrefix = `m2m-session-proxy-test:${randomBytes(6).toString('hex')}:`
      t.teardown(async () => await deleteKeys(TEST_REDIS_URL, keyPrefix))
      // Logins take a while, as at the real platform: the rotation (reset, then the login that verifies it) is still
      // running when the second call comes.
      const { sim, simUrl } = await startSimulator(t, { loginDelayMs: 400 })
      const fleetKey = randomBytes(32).toString('hex')
      // One after the other: three Node start-ups at once on a busy machine can take longer than the helper waits.
      const replicas: Replica[] = []
      for (let i = 0; i < 3; i++) replicas.push(await startReplica(t, simUrl, keyPrefix, fleetKey))
      await Promise.all(replicas.map(async (replica) => await waitReady(replica)))
      t.equal(sim.stats.logins, 1, 'one start-up login for the three')
      const [first, second, third] = replicas as [Replica, Replica, Replica]
      await waitUntil(
        async () => (await passwordStatus(third)).generation === 1,
        "the file's password published as generation 1"
      )

      const answers = await Promise.all([
        rotate(first),
        new Promise((resolve) => setTimeout(resolve, 100)).then(async () => await rotate(second))
      ])
      // The first call normally wins; on a loaded machine the second may take the lock first: either way one 200 and
      // one 409.
      t.same(
        answers.map((answer) => answer.status).sort(),
        [200, 409],
        answers.map((answer) => answer.text).join(' | ')
      )
      const rotated = answers.find((answer) => answer.status === 200) ?? { text: '{}' }
      const refused = answers.find((answer) => answer.status === 409) ?? { text: '{}' }
      t.match(JSON.parse(rotated.text), { rotated: true, verified: true, generation: 2 })
      t.match(
        JSON.parse(refused.text),
        { errorCode: 'Proxy.Conflict', errorMessage: /in progress on another replica/ },
        'the concurrent rotation on the other replica is refused'
      )
      t.equal(sim.stats.passwordResets, 1, "the simulator's password changed once")
      const newPassword = sim.password
      t.not(newPassword, DEMO_CREDENTIALS.password)
      await waitUntil(
        () => replicas.every((replica) => filePassword(replica) === newPassword),
        "every replica's credentials file holds the new password"
      )
      for (const replica of replicas) {
        t.match(await passwordStatus(replica), { generation: 2, savedToFile: true, published: true })
      }
      t.equal(sim.stats.failedLogins, 0)

      // The third replica goes away and comes back with its old credentials file (a stale copy, such as an old Secret).
      await stopReplica(third.process)
      fs.writeFileSync(third.credentialsFile, JSON.stringify(DEMO_CREDENTIALS), { mode: 0o600 })
      const restarted = await startReplica(t, simUrl, keyPrefix, fleetKey, third.dir)
      await waitReady(restarted)
      sim.expireSessions()
      const loginsBefore = sim.stats.logins
      const answer = await fetch(`${restarted.process.proxyUrl}${ECHO_PATH}`)
      await answer.arrayBuffer()
      t.equal(answer.status, 200, 'its request is answered after a renewal')
      t.equal(sim.stats.logins - loginsBefore, 1, 'one login for the expiry')
      t.equal(sim.stats.failedLogins, 0, 'no failed login at the simulator: it used the newest password')
      t.equal(filePassword(restarted), newPassword, 'its file was rewritten from the fleet store')
      t.match(await passwordStatus(restarted), { generation: 2, savedToFile: true })
      await restarted.process.waitFor((line) => typeof line.msg === 'string' && line.msg.includes('the store wins'))

      for (const replica of [first, second, restarted]) {
        const text = replica.process.lines.map((line) => JSON.stringify(line)).join('\n') + replica.process.stderr
        t.notOk(text.includes(newPassword), 'the new password is in no log line')
        t.notOk(text.includes(DEMO_CREDENTIALS.password), 'nor the old one')
      }
    }
  )

  t.test(
    'a Redis restarted without persistence after a rotation is re-seeded with generation 2; a replica started with its old file then logs in with the new password',
    async (t) => {
      const port = await freePort()
      const redisUrl = `redis://127.0.0.1:${port}`
      let redis = await startRedisServer(t, port)
      const keyPrefix = 'm2m-session-proxy-test:reseed:'
      const { sim, simUrl } = await startSimulator(t)
      const fleetKey = randomBytes(32).toString('hex')
      const replicas: Replica[] = []
      for (let i = 0; i < 2; i++) replicas.push(await startReplica(t, simUrl, keyPrefix, fleetKey, undefined, redisUrl))
      for (const replica of replicas) await waitReady(replica)
      const [first, second] = replicas as [Replica, Replica]
      await waitUntil(async () => (await passwordStatus(second)).generation === 1, 'generation 1 published')
      const rotated = await rotate(first)
      t.equal(rotated.status, 200, rotated.text)
      const newPassword = sim.password
      await waitUntil(() => filePassword(second) === newPassword, 'the other replica has the new password')

      // Redis loses everything (killed, started again without persistence on the same port).
      redis.kill('SIGKILL')
      await new Promise((resolve) => redis.once('exit', resolve))
      redis = await startRedisServer(t, port)
      const store = new RedisFleetStore({
        url: redisUrl,
        fleetKey: parseFleetKey(fleetKey),
        keyPrefix,
        username: DEMO_CREDENTIALS.username
      })
      t.teardown(async () => await store.close())
      await waitUntil(() => store.connected, "the test's own store connects")
      await waitUntil(
        async () => (await store.readPassword())?.generation === 2,
        'the replicas re-seeded the password generation',
        20_000
      )
      t.equal((await store.readPassword())?.password, newPassword, "with the rotated password, not a file's old one")

      // A replica started now with the old credentials file takes the re-seeded generation.
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-fleet-rotation-'))
      t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
      fs.writeFileSync(path.join(dir, 'credentials.json'), JSON.stringify(DEMO_CREDENTIALS), { mode: 0o600 })
      const late = await startReplica(t, simUrl, keyPrefix, fleetKey, dir, redisUrl)
      await waitReady(late)
      sim.expireSessions()
      const answer = await fetch(`${late.process.proxyUrl}${ECHO_PATH}`)
      await answer.arrayBuffer()
      t.equal(answer.status, 200)
      t.equal(sim.stats.failedLogins, 0, 'no failed login: the old password was never sent')
      t.equal(filePassword(late), newPassword)
    }
  )
}
