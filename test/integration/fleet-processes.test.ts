// Fleet mode with real processes: three `node dist/main.js` replicas sharing one Redis and one simulated ThingSpace account.
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { DEMO_CREDENTIALS } from '../../src/simulator/app.js'
import { startProxyProcess, type ProxyProcess } from '../helpers/process.js'
import { deleteKeys, haveTestRedis, rawValues, TEST_REDIS_URL } from '../helpers/redis.js'
import { ADMIN_TOKEN, ECHO_PATH, sha256, startSimulator, type Echo } from '../helpers/stack.js'

const MAX_LOGIN_FAILURES = 2

function prefix (): string {
  return `m2m-session-proxy-test:${randomBytes(6).toString('hex')}:`
}

/** One replica: its own state directory and credentials file, the fleet's Redis, key prefix and key; stopped in teardown. */
async function startReplica (t: Test, simUrl: string, keyPrefix: string, fleetKey: string, env: Record<string, string> = {}): Promise<ProxyProcess> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-fleet-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  fs.writeFileSync(path.join(dir, 'credentials.json'), JSON.stringify(DEMO_CREDENTIALS), { mode: 0o600 })
  const replica = await startProxyProcess({
    M2M_PROXY_UPSTREAM: simUrl,
    M2M_PROXY_CREDENTIALS_FILE: path.join(dir, 'credentials.json'),
    M2M_PROXY_ADMIN_TOKEN: ADMIN_TOKEN,
    M2M_PROXY_MAX_LOGIN_FAILURES: String(MAX_LOGIN_FAILURES),
    M2M_PROXY_REDIS_URL: TEST_REDIS_URL,
    M2M_PROXY_FLEET_KEY: fleetKey,
    M2M_PROXY_REDIS_KEY_PREFIX: keyPrefix,
    ...env
  }, dir)
  t.teardown(async () => {
    if (replica.child.exitCode !== null || replica.child.signalCode !== null) return
    replica.child.kill('SIGKILL')
    await replica.exit
  })
  return replica
}

async function waitReady (replica: ProxyProcess, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const response = await fetch(`${replica.adminUrl}/readyz`)
    await response.arrayBuffer()
    if (response.status === 200) return
    if (Date.now() > deadline) throw new Error(`replica not ready: ${response.status}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

async function adminJson (replica: ProxyProcess, urlPath: string): Promise<Record<string, unknown>> {
  const response = await fetch(`${replica.adminUrl}${urlPath}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
  return await response.json() as Record<string, unknown>
}

async function metricValue (replica: ProxyProcess, name: string): Promise<number> {
  const text = await (await fetch(`${replica.adminUrl}/metrics`)).text()
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${name} `))
  return line === undefined ? NaN : Number(line.split(' ')[1])
}

if (await haveTestRedis(t)) {
  t.test('three replicas, one session expiry, 30 concurrent requests over the three: every one answered with its own body, exactly one new login', async (t) => {
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
    const answers = await Promise.all(Array.from({ length: 30 }, async (_, i) => {
      const body = `request ${i} ${randomBytes(8).toString('hex')}`
      const replica = replicas[i % 3] as ProxyProcess
      const response = await fetch(`${replica.proxyUrl}${ECHO_PATH}`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body })
      const echo = await response.json() as Echo
      return { status: response.status, ownBody: echo.bodySha256 === sha256(body) }
    }))
    t.same(answers.filter((answer) => answer.status !== 200 || !answer.ownBody), [], 'every request 200 with its own body')
    t.equal(sim.stats.logins - before, 1, 'exactly one login for the expiry, fleet-wide')
    let avoided = 0
    for (const replica of replicas) avoided += await metricValue(replica, 'm2m_proxy_fleet_logins_avoided_total')
    t.equal(avoided, 2 + 2, 'the other two replicas took up the session, at start-up and after the expiry')
  })

  t.test('wrong password: the three replicas send at most M2M_PROXY_MAX_LOGIN_FAILURES failed logins in all, restarts included', async (t) => {
    const keyPrefix = prefix()
    t.teardown(async () => await deleteKeys(TEST_REDIS_URL, keyPrefix))
    const { sim, simUrl } = await startSimulator(t, { password: 'another-password-entirely' })
    const fleetKey = randomBytes(32).toString('hex')
    const replicas = await Promise.all([0, 1, 2].map(async () => await startReplica(t, simUrl, keyPrefix, fleetKey)))
    const hammer = async (targets: ProxyProcess[]): Promise<number[]> => {
      const statuses: number[] = []
      for (let round = 0; round < 4; round++) {
        statuses.push(...await Promise.all(targets.flatMap((replica) => [0, 1, 2].map(async () => {
          const response = await fetch(`${replica.proxyUrl}${ECHO_PATH}`)
          await response.arrayBuffer()
          return response.status
        }))))
        await new Promise((resolve) => setTimeout(resolve, 1100)) // past the first backoff
      }
      return statuses
    }
    const statuses = await hammer(replicas)
    t.ok(statuses.every((status) => status === 503), 'clients get 503')
    t.ok(sim.stats.failedLogins >= 1, 'the wrong password was tried')
    t.ok(sim.stats.failedLogins <= MAX_LOGIN_FAILURES, `at most ${MAX_LOGIN_FAILURES} failed logins from the fleet (got ${sim.stats.failedLogins})`)
    // Restarted replicas with fresh state directories: only the fleet's count holds them back.
    for (const replica of replicas) {
      replica.child.kill('SIGKILL')
      await replica.exit
    }
    const restarted = await Promise.all([0, 1, 2].map(async () => await startReplica(t, simUrl, keyPrefix, fleetKey)))
    await hammer(restarted)
    t.ok(sim.stats.failedLogins <= MAX_LOGIN_FAILURES, `still at most ${MAX_LOGIN_FAILURES} after the restarts (got ${sim.stats.failedLogins})`)
    t.equal(sim.stats.logins, 0)
    const ready = await fetch(`${(restarted[0] as ProxyProcess).adminUrl}/readyz`)
    t.match(await ready.json(), { ready: false, reason: 'credentials-rejected' })
  })

  t.test('the idle clock is the fleet\'s: replicas left quiet past their own idle time take up the session one replica kept in use, no login', async (t) => {
    const keyPrefix = prefix()
    t.teardown(async () => await deleteKeys(TEST_REDIS_URL, keyPrefix))
    // 20 s of idleness instead of 20 minutes: each replica stops using a session 18 s after its own last use.
    const { sim, simUrl } = await startSimulator(t, { sessionIdleSeconds: 20 })
    const fleetKey = randomBytes(32).toString('hex')
    const replicas = await Promise.all([0, 1, 2].map(async () => await startReplica(t, simUrl, keyPrefix, fleetKey, { M2M_PROXY_SESSION_IDLE_SECONDS: '20' })))
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
    t.ok(busyStatuses.every((status) => status === 200), 'the busy replica was served throughout')
    t.equal(sim.stats.logins, 1, 'the session the busy replica uses is never renewed')
    for (const replica of quiet) t.equal(await call(replica), 200, 'a replica quiet for 26 s is served')
    t.equal(sim.stats.logins, 1, 'by the session the fleet kept alive: no login')
    t.equal(await avoidedBy(quiet) - avoidedBefore, 2, 'each quiet replica took the session up again after its own idle time')
  })

  t.test('a Redis that lost the fleet\'s state (flushed) gets the session back from the replicas: a replica started then takes it up, no login', async (t) => {
    const keyPrefix = prefix()
    t.teardown(async () => await deleteKeys(TEST_REDIS_URL, keyPrefix))
    const { sim, simUrl } = await startSimulator(t)
    const fleetKey = randomBytes(32).toString('hex')
    const replicas = await Promise.all([0, 1].map(async () => await startReplica(t, simUrl, keyPrefix, fleetKey)))
    await Promise.all(replicas.map(async (replica) => await waitReady(replica)))
    const sessionKeyStored = async (): Promise<boolean> => (await rawValues(TEST_REDIS_URL, keyPrefix)).some((value) => value.endsWith(':session'))
    t.ok(await sessionKeyStored(), 'the fleet\'s session is in Redis')
    await deleteKeys(TEST_REDIS_URL, keyPrefix) // as FLUSHALL: no reconnection tells the replicas
    t.notOk(await sessionKeyStored())
    const deadline = Date.now() + 15_000
    while (!await sessionKeyStored() && Date.now() < deadline) {
      const response = await fetch(`${(replicas[0] as ProxyProcess).proxyUrl}${ECHO_PATH}`) // a use, which the replica shares every 5 s
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
    t.ok(replicas.some((replica) => replica.lines.some((line) => String(line.msg).includes('re-seeded'))), 'a replica logged the re-seed')
  })
}
