// Fleet mode under failure, with real processes: `node dist/main.js` replicas, one simulated ThingSpace account, and a
// Redis that a replica dies holding the login lock of, or that goes away and comes back.
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import type { IncomingMessage } from 'node:http'
import path from 'node:path'
import t, { type Test } from 'tap'
import { createClient } from '@redis/client'
import { accountKeyBase } from '../../src/fleet/redis-store.js'
import { DEMO_CREDENTIALS, type Simulator } from '../../src/simulator/app.js'
import { freePort } from '../helpers/ports.js'
import { fleetKeyPrefix as prefix, metricValue, startFleetReplica, until, waitReady } from '../helpers/fleet.js'
import type { ProxyProcess } from '../helpers/process.js'
import { deleteKeys, haveTestRedis, startRedisServer, TEST_REDIS_URL } from '../helpers/redis.js'
import { ADMIN_TOKEN, ECHO_PATH, sha256, startSimulator, type Echo } from '../helpers/simulator.js'

const LOGIN_PATH = '/api/m2m/v1/session/login'
/** Small, so that the login lock's TTL (2 x this + 5 s, src/app.ts) is 9 s. */
const UPSTREAM_TIMEOUT_MS = 2000
const LOCK_TTL_MS = 2 * UPSTREAM_TIMEOUT_MS + 5000

interface Fleet {
  simUrl: string
  redisUrl: string
  keyPrefix: string
  fleetKey: string
}

/** A fleet of its own on `redisUrl`: a fresh key prefix and fleet key. */
function newFleet (simUrl: string, redisUrl: string): Fleet {
  return { simUrl, redisUrl, keyPrefix: prefix(), fleetKey: randomBytes(32).toString('hex') }
}

/** `count` replicas of `fleet`, started one after the other. */
async function startReplicas (t: Test, fleet: Fleet, count: number): Promise<ProxyProcess[]> {
  const replicas: ProxyProcess[] = []
  for (let i = 0; i < count; i++) {
    replicas.push(
      await startFleetReplica(t, { ...fleet, env: { M2M_PROXY_UPSTREAM_TIMEOUT_MS: String(UPSTREAM_TIMEOUT_MS) } })
    )
  }
  return replicas
}

/**
 * Every login request that reaches the simulator (hung ones too: its stats count only answered ones), with its arrival
 * time.
 * `onLogin` is called as each arrives, before the simulator handles it.
 */
function countLoginRequests (sim: Simulator, onLogin: () => void = () => {}): number[] {
  const arrivals: number[] = []
  sim.app.server.on('request', (request: IncomingMessage) => {
    if (request.url?.split('?')[0] !== LOGIN_PATH) return
    arrivals.push(Date.now())
    onLogin()
  })
  return arrivals
}

const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

async function readyz (replica: ProxyProcess): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${replica.adminUrl}/readyz`)
  return { status: response.status, body: (await response.json()) as Record<string, unknown> }
}

async function adminSession (
  replica: ProxyProcess
): Promise<Record<string, unknown> & { fleet: Record<string, unknown> }> {
  const response = await fetch(`${replica.adminUrl}/admin/session`, {
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` }
  })
  return (await response.json()) as Record<string, unknown> & { fleet: Record<string, unknown> }
}

interface EchoResult {
  status: number
  ownBody: boolean
  text: string
  retryAfter: string | null
}

/** A POST through the replica to the simulator's echo route: 200 with its own body echoed when it went through. */
async function echo (replica: ProxyProcess): Promise<EchoResult> {
  const body = `request ${randomBytes(8).toString('hex')}`
  const response = await fetch(`${replica.proxyUrl}${ECHO_PATH}`, {
    method: 'POST',
    headers: { 'content-type': 'text/plain' },
    body
  })
  const text = await response.text()
  let ownBody = false
  if (response.status === 200) ownBody = (JSON.parse(text) as Echo).bodySha256 === sha256(body)
  return { status: response.status, ownBody, text, retryAfter: response.headers.get('retry-after') }
}

/** Logged when a login failed because the fleet store cannot be reached and is tried again in the background. */
const isBackgroundRetry = (line: Record<string, unknown>): boolean =>
  line.msg === 'not ready while the fleet store cannot be reached: logging in again in the background once it answers'

const served = (result: EchoResult): boolean => result.status === 200 && result.ownBody

/** Echoes through each replica every 500 ms until each has served once (at most 15 s). */
async function everyReplicaServes (replicas: ProxyProcess[]): Promise<void> {
  const pending = new Set(replicas)
  await until(
    async () => {
      const results = await Promise.all(
        [...pending].map(async (replica) => ({ replica, ok: served(await echo(replica)) }))
      )
      for (const result of results) if (result.ok) pending.delete(result.replica)
      return pending.size === 0
    },
    15_000,
    'every replica serves again',
    500
  )
}

/** A raw client on the fleet's Redis, for the lock and the failure count. */
const plainClient = (url: string) => createClient({ url, socket: { reconnectStrategy: false } })

async function rawClient (t: Test, url: string): Promise<ReturnType<typeof plainClient>> {
  const client = plainClient(url)
  client.on('error', () => {})
  await client.connect()
  t.teardown(() => {
    if (client.isOpen) client.destroy()
  })
  return client
}

/** Whether redis-server can be started for the outage tests; under CI=true its absence is a failure, not a skip. */
function haveRedisServer (t: Test): boolean {
  const found = (process.env.PATH ?? '')
    .split(path.delimiter)
    .some((dir) => dir !== '' && fs.existsSync(path.join(dir, 'redis-server')))
  if (found) return true
  const message =
    'no redis-server on PATH for the Redis outage tests; install redis-server (apt-get install redis-server)'
  if (process.env.CI === 'true') t.fail(`${message}: CI must run them`)
  else t.skip(`fleet Redis outage tests skipped: ${message}`, () => {})
  return false
}

// Two at a time: most of each test is waiting (a lock's TTL, a reconnect backoff), and the file stays well under tap's
// timeout.
t.jobs = 2

if (await haveTestRedis(t)) {
  t.test(
    'a dead lock holder does not stall the fleet: after the lock TTL another replica logs in, once, and the fleet count is back to 0',
    async (t) => {
      const keyPrefix = prefix()
      t.teardown(async () => await deleteKeys(TEST_REDIS_URL, keyPrefix))
      const { sim, simUrl } = await startSimulator(t)
      // Armed below: A is killed the moment its login arrives, well within its upstream timeout (after which it would
      // give up the lock).
      let killOnLogin: (() => void) | undefined
      const logins = countLoginRequests(sim, () => {
        killOnLogin?.()
        killOnLogin = undefined
      })
      const fleet: Fleet = { simUrl, redisUrl: TEST_REDIS_URL, keyPrefix, fleetKey: randomBytes(32).toString('hex') }
      const startedAt = Date.now()
      const [a, b, c] = (await startReplicas(t, fleet, 3)) as [ProxyProcess, ProxyProcess, ProxyProcess]
      await Promise.all([a, b, c].map(async (replica) => await waitReady(replica)))
      t.comment(`three replicas ready in ${Date.now() - startedAt} ms`)
      t.equal(sim.stats.logins, 1, 'one start-up login for the three')
      const avoidedBefore =
        (await metricValue(b, 'm2m_proxy_fleet_logins_avoided_total')) +
        (await metricValue(c, 'm2m_proxy_fleet_logins_avoided_total'))
      const base = accountKeyBase(keyPrefix, DEMO_CREDENTIALS.username)
      const redis = await rawClient(t, TEST_REDIS_URL)

      // A's renewal login hangs at the platform while A holds the lock; A dies there.
      sim.failNextLogins(1, 'hang')
      sim.expireSessions()
      const loginsBefore = logins.length
      const successesBefore = sim.stats.logins
      let killedAt = 0
      killOnLogin = () => {
        a.child.kill('SIGKILL')
        killedAt = Date.now()
      }
      const hungRequest = echo(a).catch((error: unknown) => error)
      t.match(await a.exit, { signal: 'SIGKILL' }, 'A was killed as its login arrived')
      t.equal(logins.length - loginsBefore, 1, "A's login reached the simulator")
      const hungAt = logins[loginsBefore] as number
      const lockReadAt = Date.now()
      const lockTtlAtKill = await redis.pTTL(`${base}lock`)
      const simStats = (await (await fetch(`${simUrl}/simulator/control/stats`)).json()) as {
        pendingLoginFaults: number
      }
      t.equal(simStats.pendingLoginFaults, 0, 'that login is the one that hangs')
      t.ok(
        lockTtlAtKill > 0 && lockTtlAtKill <= LOCK_TTL_MS,
        `A's login lock outlives A (${lockTtlAtKill} ms of ${LOCK_TTL_MS} left, ${lockReadAt - killedAt} ms after the kill)`
      )
      t.equal(
        await redis.get(`${base}failures`),
        '1',
        "A counted its login attempt in the fleet's count before sending it"
      )
      t.type(await hungRequest, Error, 'the client of the killed replica lost its connection')

      // B and C meet the expired session: they wait for the dead holder's lock, then one logs in and the other takes
      // that session up.
      const started = Date.now()
      const answers = await Promise.all([b, c, b, c].map(async (replica) => await echo(replica)))
      const answeredAt = Date.now()
      t.comment(
        `B and C answered in ${answeredAt - started} ms; the real login came ${(logins[loginsBefore + 1] as number) - hungAt} ms after the hung one`
      )
      t.same(
        answers.filter((answer) => !served(answer)).map((answer) => answer.status),
        [],
        "B and C answer 200 with each request's own body"
      )
      t.equal(sim.stats.logins - successesBefore, 1, 'one real login after the hung one')
      t.equal(
        logins.length - loginsBefore,
        2,
        'login requests at the simulator: the hung one and one real one, no more'
      )
      t.equal(sim.stats.failedLogins, 0)
      const realAt = logins[loginsBefore + 1] as number
      // Not before this: Redis answered the PTTL after lockReadAt.
      const lockExpiredAt = lockReadAt + lockTtlAtKill
      // Loose bounds; the lock was taken just before the hung login was sent.
      t.ok(
        realAt >= lockExpiredAt - 250,
        `the real login waited for the lock's TTL (${realAt - lockExpiredAt} ms after it ran out)`
      )
      t.ok(
        realAt - hungAt >= LOCK_TTL_MS - 1000,
        `the real login came ${realAt - hungAt} ms after the hung one (TTL ${LOCK_TTL_MS} ms)`
      )
      t.ok(
        answeredAt - started <= LOCK_TTL_MS + 6000,
        `B and C answered within the TTL and a few seconds (${answeredAt - started} ms)`
      )

      t.equal(
        await redis.get(`${base}failures`),
        null,
        "the fleet's failure count is back to 0 (deleted) after the success"
      )
      const snapshots = await Promise.all([b, c].map(async (replica) => await adminSession(replica)))
      t.ok(
        snapshots.some((snapshot) => snapshot.fleet.consecutiveLoginFailures === 0),
        'the replica that logged in reads the fleet count as 0'
      )
      const avoided =
        (await metricValue(b, 'm2m_proxy_fleet_logins_avoided_total')) +
        (await metricValue(c, 'm2m_proxy_fleet_logins_avoided_total'))
      t.equal(avoided - avoidedBefore, 1, 'of B and C, one logged in and the other took its session up')
      t.ok(
        (await metricValue(b, 'm2m_proxy_fleet_lock_waits_total')) +
          (await metricValue(c, 'm2m_proxy_fleet_lock_waits_total')) >=
          2,
        'both waited for the lock'
      )

      const again = await Promise.all([b, c].map(async (replica) => await echo(replica)))
      t.ok(again.every(served), 'and keep serving')
      t.equal(logins.length - loginsBefore, 2, 'with no further login')
    }
  )
}

if (haveRedisServer(t)) {
  t.test(
    'Redis down: held tokens keep serving, no login is sent until Redis is back, then exactly one for the fleet',
    async (t) => {
      const port = await freePort()
      const redisUrl = `redis://127.0.0.1:${port}`
      let redis = await startRedisServer(t, port)
      const { sim, simUrl } = await startSimulator(t)
      const logins = countLoginRequests(sim)
      const fleet = newFleet(simUrl, redisUrl)
      const startedAt = Date.now()
      const replicas = await startReplicas(t, fleet, 3)
      await Promise.all(replicas.map(async (replica) => await waitReady(replica)))
      t.comment(`three replicas ready in ${Date.now() - startedAt} ms`)
      t.equal(sim.stats.logins, 1, 'one start-up login for the three')
      for (const replica of replicas) {
        t.equal(await metricValue(replica, 'm2m_proxy_fleet_store_up'), 1, 'fleet store up')
      }

      redis.kill('SIGKILL')
      await new Promise((resolve) => redis.once('exit', resolve))
      for (const replica of replicas) {
        await until(
          async () => (await adminSession(replica)).fleet.storeConnected === false,
          5000,
          'the replica sees Redis gone'
        )
        t.equal(await metricValue(replica, 'm2m_proxy_fleet_store_up'), 0, 'm2m_proxy_fleet_store_up 0')
      }
      const loginsBefore = logins.length

      // With a session held, Redis is not needed.
      const held = await Promise.all(
        replicas.flatMap((replica) => [replica, replica].map(async (target) => await echo(target)))
      )
      t.ok(held.every(served), 'every replica serves with the tokens it holds')
      for (const replica of replicas) {
        t.match(await readyz(replica), { status: 200, body: { ready: true } }, '/readyz stays 200')
      }

      // The platform refuses the sessions: no login may be sent without the fleet's count.
      sim.expireSessions()
      const refused = await Promise.all(replicas.map(async (replica) => await echo(replica)))
      for (const answer of refused) {
        t.equal(answer.status, 503, 'the request that needs a login gets 503')
        t.match(JSON.parse(answer.text), { errorCode: 'Proxy.AuthenticationUnavailable.FleetStoreUnreachable' })
        t.ok(answer.retryAfter !== null && Number(answer.retryAfter) >= 1, 'with Retry-After')
      }
      for (const replica of replicas) {
        t.match(
          await readyz(replica),
          { status: 503, body: { ready: false, reason: 'fleet-store-unreachable' } },
          '/readyz 503 without a usable session'
        )
        t.match((await adminSession(replica)).fleet, { storeConnected: false })
      }
      // Each replica tries again in the background (after 5 s): that attempt fails without a login too, and is
      // scheduled again.
      await until(
        () => replicas.every((replica) => replica.lines.filter(isBackgroundRetry).length >= 2),
        12_000,
        'a background login attempt on every replica'
      )
      const whileDown = await Promise.all(replicas.map(async (replica) => await echo(replica)))
      t.same(
        whileDown.map((answer) => answer.status),
        [503, 503, 503],
        'still 503 while Redis is down'
      )
      t.equal(logins.length, loginsBefore, 'no login reached the simulator while Redis was down')

      // Redis back on the same port (empty: nothing saved). The replicas reconnect by themselves and log in once for
      // the fleet.
      redis = await startRedisServer(t, port)
      const restartedAt = Date.now()
      for (const replica of replicas) {
        await until(
          async () => (await metricValue(replica, 'm2m_proxy_fleet_store_up')) === 1,
          15_000,
          'the replica reconnects'
        )
      }
      await everyReplicaServes(replicas)
      t.comment(`recovered ${Date.now() - restartedAt} ms after Redis restarted`)
      for (const replica of replicas) {
        t.match(await readyz(replica), { status: 200, body: { ready: true } }, '/readyz 200 again')
        t.match((await adminSession(replica)).fleet, { storeConnected: true })
      }
      await sleep(300) // a straggling login would show now
      t.equal(logins.length - loginsBefore, 1, 'exactly one login fleet-wide after Redis came back')
      t.equal(sim.stats.logins, 2)
      t.equal(sim.stats.failedLogins, 0)
    }
  )

  t.test(
    'a replica started while Redis is unreachable does not log in and is unready; with Redis up it becomes ready, one login for two',
    async (t) => {
      const port = await freePort()
      const { sim, simUrl } = await startSimulator(t)
      const logins = countLoginRequests(sim)
      const fleet = newFleet(simUrl, `redis://127.0.0.1:${port}`)
      const replicas = await startReplicas(t, fleet, 2)
      for (const replica of replicas) {
        t.match(
          await readyz(replica),
          { status: 503, body: { ready: false, reason: 'fleet-store-unreachable' } },
          'unready: fleet-store-unreachable'
        )
        t.match((await adminSession(replica)).fleet, { storeConnected: false })
        t.equal(await metricValue(replica, 'm2m_proxy_fleet_store_up'), 0)
      }
      // The start-up login gives up waiting for the store after 5 s, fails without sending anything, and is retried in
      // the background.
      await Promise.all(replicas.map(async (replica) => await replica.waitFor(isBackgroundRetry, 12_000)))
      for (const replica of replicas) {
        t.match(
          await readyz(replica),
          { status: 503, body: { reason: 'fleet-store-unreachable' } },
          'still unready after the start-up login'
        )
        const answer = await echo(replica)
        t.equal(answer.status, 503, 'a client gets 503')
        t.match(JSON.parse(answer.text), { errorCode: 'Proxy.AuthenticationUnavailable.FleetStoreUnreachable' })
      }
      t.equal(logins.length, 0, 'no login reached the simulator')

      await startRedisServer(t, port)
      const upAt = Date.now()
      await Promise.all(replicas.map(async (replica) => await waitReady(replica, 15_000)))
      t.comment(`ready ${Date.now() - upAt} ms after Redis started`)
      const answers = await Promise.all(replicas.map(async (replica) => await echo(replica)))
      t.ok(answers.every(served), 'both serve')
      t.equal(logins.length, 1, 'one login for the two')
      t.equal(sim.stats.logins, 1)
      let avoided = 0
      for (const replica of replicas) avoided += await metricValue(replica, 'm2m_proxy_fleet_logins_avoided_total')
      t.equal(avoided, 1, "the other replica took up the fleet's session")
    }
  )

  t.test(
    'Redis stops answering, its connections open: a request that needs a login gets 503 within the deadline, not held; ' +
      'one login for the fleet once it answers',
    async (t) => {
      const port = await freePort()
      const redis = await startRedisServer(t, port)
      t.teardown(() => { redis.kill('SIGCONT') })
      const { sim, simUrl } = await startSimulator(t)
      const logins = countLoginRequests(sim)
      const fleet = newFleet(simUrl, `redis://127.0.0.1:${port}`)
      // With the callback inbox on: a callback and a read meet the same stalled Redis.
      const callbackDir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-fleet-callbacks-'))
      t.teardown(() => { fs.rmSync(callbackDir, { recursive: true, force: true }) })
      const callbackCredentials = { username: 'thingspace-callbacks', password: 'callback-password-0123456789' }
      fs.writeFileSync(path.join(callbackDir, 'callback.json'), JSON.stringify(callbackCredentials), { mode: 0o600 })
      const replicas: ProxyProcess[] = []
      for (let i = 0; i < 2; i++) {
        replicas.push(await startFleetReplica(t, {
          ...fleet,
          env: {
            M2M_PROXY_CALLBACK_PORT: '0',
            M2M_PROXY_CALLBACK_CREDENTIALS_FILE: path.join(callbackDir, 'callback.json')
          }
        }))
      }
      await Promise.all(replicas.map(async (replica) => await waitReady(replica)))
      t.equal(logins.length, 1, 'one start-up login for the two')
      const listening = await replicas[0]!.waitFor((line) => line.msg === 'listening')

      // Stopped, not killed: the sockets stay open and every command sent waits for an answer that does not come.
      redis.kill('SIGSTOP')
      sim.expireSessions()
      const startedAt = Date.now()
      // Before the deadline (M2M_PROXY_REDIS_TIMEOUT_MS, 2 s by default) a replica held such a request for as long as
      // the client waited; the 20 s abort is what a hold would run into.
      const answers = await Promise.all(replicas.map(async (replica) => await fetch(`${replica.proxyUrl}${ECHO_PATH}`, {
        method: 'POST',
        body: 'needs a login',
        signal: AbortSignal.timeout(20_000)
      })))
      t.comment(`answered in ${Date.now() - startedAt} ms`)
      for (const [index, answer] of answers.entries()) {
        t.equal(answer.status, 503, 'the request that needs a login gets 503')
        t.match(await answer.json(), { errorCode: 'Proxy.AuthenticationUnavailable.FleetStoreUnreachable' })
        t.ok(Number(answer.headers.get('retry-after')) >= 1, 'with Retry-After')
        t.ok(
          replicas[index]?.lines.some((line) => /Redis has not answered within 2000 ms/.test(String(line.msg))),
          'the replica says Redis is not answering'
        )
      }
      for (const replica of replicas) {
        t.match(
          await readyz(replica),
          { status: 503, body: { ready: false, reason: 'fleet-store-unreachable' } },
          '/readyz 503 without a usable session'
        )
        t.equal(await metricValue(replica, 'm2m_proxy_fleet_store_up'), 0, 'm2m_proxy_fleet_store_up 0')
      }
      t.equal(logins.length, 1, 'no login was sent while Redis hung')
      const callback = await fetch(`${String(listening.callbackUrl)}/CarrierService`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...callbackCredentials, requestId: 'while-hung', status: 'Success' }),
        signal: AbortSignal.timeout(20_000)
      })
      t.equal(callback.status, 503, 'a callback is refused, so that ThingSpace sends it again')
      t.ok(Number(callback.headers.get('retry-after')) >= 1, 'with Retry-After')
      t.match(await callback.json(), { errorCode: 'Proxy.FleetStoreUnreachable' })
      // A Device Location callback: its shared key cannot be read, which is the same "send it again", not a failure.
      const located = await fetch(`${String(listening.callbackUrl)}/DeviceLocation`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-callback-signature': 'a'.repeat(64) },
        body: JSON.stringify({ txid: 'while-hung', status: 'Success' }),
        signal: AbortSignal.timeout(20_000)
      })
      t.equal(located.status, 503, 'a Device Location callback is refused the same way')
      t.ok(Number(located.headers.get('retry-after')) >= 1, 'with Retry-After')
      t.match(await located.json(), { errorCode: 'Proxy.FleetStoreUnreachable' })
      const notStoredLines = (): Array<Record<string, unknown>> =>
        replicas[0]!.lines.filter((line) => line.msg === 'callback not stored')
      await replicas[0]!.waitFor(() => notStoredLines().length >= 2, 5000).catch(() => {}) // the lines come by a pipe
      const notStored = notStoredLines()
      t.equal(notStored.length, 2, 'one log line for each callback refused')
      t.ok(notStored.every((line) => line.level === 40 && typeof line.reason === 'string' && line.err === undefined),
        'each a warning that says why, without a stack: expected while Redis is out of reach')
      const read = await fetch(`${replicas[0]!.proxyUrl}/callbacks?after=0`, { signal: AbortSignal.timeout(20_000) })
      t.equal(read.status, 503, 'a read is answered 503')
      t.ok(Number(read.headers.get('retry-after')) >= 1, 'with Retry-After')
      await read.body?.cancel()

      redis.kill('SIGCONT')
      const resumedAt = Date.now()
      await everyReplicaServes(replicas)
      t.comment(`served again ${Date.now() - resumedAt} ms after Redis resumed`)
      for (const replica of replicas) {
        t.match(await readyz(replica), { status: 200, body: { ready: true } }, '/readyz 200 again')
      }
      await sleep(300) // a straggling login would show now
      t.equal(logins.length, 2, 'exactly one login for the fleet after Redis answered again')
      t.equal(sim.stats.failedLogins, 0)
    }
  )
}
