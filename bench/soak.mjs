// `npm run soak` (minutes; not part of npm test): an expiry storm, a steady soak with expiries and upstream resets,
// login flapping, and a fleet round (three replicas, one private Redis restarted once), against the built proxy as
// separate processes and the embedded simulator.
import { spawn, execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { Agent, request } from 'undici'
import { redisServerAvailable, REDIS_SERVER, startPrivateRedis } from './private-redis.mjs'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const SOAK_MINUTES = Number(process.env.SOAK_MINUTES ?? 10)
const STORM_REQUESTS = Number(process.env.SOAK_STORM_REQUESTS ?? 2000)
const FLAP_SECONDS = Number(process.env.SOAK_FLAP_SECONDS ?? 60)
const LOGIN_DELAY_MS = 100 // a realistic round trip to the platform, so that "one login" is visible in latencies
const MAX_LOGIN_FAILURES = 2
const FLEET_MINUTES = Number(process.env.SOAK_FLEET_MINUTES ?? 3)
const FLEET_REPLICAS = 3
const FLEET_CLIENTS_PER_REPLICA = 4
const FLEET_REDIS_DOWN_MS = 5000
// SOAK_ROUNDS=fleet (comma-separated: storm, flapping, soak, fleet) runs only those; SOAK_FLEET=off skips the fleet
// round.
const ROUNDS = new Set((process.env.SOAK_ROUNDS ?? 'storm,flapping,soak,fleet').split(',').map((name) => name.trim()))
if (process.env.SOAK_FLEET === 'off') ROUNDS.delete('fleet')

execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' })
const { buildSimulator, DEMO_CREDENTIALS } = await import(path.join(ROOT, 'dist/simulator/app.js'))
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-soak-'))
const children = []
const report = []
const say = (line) => {
  process.stdout.write(line + '\n')
  report.push(line)
}

async function startSimulator (options = {}) {
  const sim = buildSimulator({ ...DEMO_CREDENTIALS, ...options })
  await sim.app.listen({ host: '127.0.0.1', port: 0 })
  return { sim, url: `http://127.0.0.1:${sim.app.server.address().port}` }
}

/**
 * `onLogLine`, when given, receives every log line of the proxy after its "listening" line (else they are drained
 * unread).
 */
async function startProxy (upstream, env = {}, { onLogLine } = {}) {
  const dir = fs.mkdtempSync(path.join(work, 'proxy-'))
  fs.writeFileSync(path.join(dir, 'credentials.json'), JSON.stringify(DEMO_CREDENTIALS), { mode: 0o600 })
  const child = spawn(process.execPath, ['dist/main.js'], {
    cwd: ROOT,
    env: {
      ...process.env,
      M2M_PROXY_UPSTREAM: upstream,
      M2M_PROXY_CREDENTIALS_FILE: path.join(dir, 'credentials.json'),
      M2M_PROXY_PORT: '0',
      M2M_PROXY_ADMIN_PORT: '0',
      M2M_PROXY_LOG_LEVEL: 'info',
      M2M_PROXY_MAX_LOGIN_FAILURES: String(MAX_LOGIN_FAILURES),
      ...env
    },
    stdio: ['ignore', 'pipe', 'inherit']
  })
  children.push(child)
  let output = ''
  const collect = (chunk) => {
    output += chunk.toString()
  }
  child.stdout.on('data', collect)
  // Up to 15 s: a loaded 2-core machine can take several seconds to start three of them.
  for (let i = 0; i < 300 && !output.includes('"msg":"listening"') && child.exitCode === null; i++) await sleep(50)
  const line = output.split('\n').find((candidate) => candidate.includes('"msg":"listening"'))
  if (line === undefined) {
    throw new Error(
      `proxy did not start (${child.exitCode === null ? 'still running' : `exit code ${child.exitCode}`}); its output:\n${output.slice(-2000)}`
    )
  }
  child.stdout.off('data', collect)
  if (onLogLine === undefined) {
    child.stdout.resume() // keep draining the production log lines without keeping them
  } else {
    let partial = output.slice(output.indexOf(line) + line.length + 1)
    child.stdout.on('data', (chunk) => {
      const lines = (partial + chunk.toString()).split('\n')
      partial = lines.pop()
      for (const each of lines) onLogLine(each)
    })
  }
  const { proxyUrl, adminUrl } = JSON.parse(line)
  return { child, proxyUrl, adminUrl }
}

function rssMiB (pid) {
  return Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024
}

const client = new Agent({ connections: STORM_REQUESTS + 100, keepAliveTimeout: 30_000 })
async function timedRequest (url, body) {
  const started = performance.now()
  try {
    const response = await request(url, {
      method: 'POST',
      body,
      headers: { 'content-type': 'application/json' },
      dispatcher: client
    })
    const text = await response.body.text()
    return { status: response.statusCode, ms: performance.now() - started, text }
  } catch (error) {
    return { status: 0, ms: performance.now() - started, text: String(error.code ?? error) }
  }
}

const percentile = (values, p) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
}
const isAuthError = (result) =>
  result.status === 401 || result.status === 503 || (result.status === 400 && result.text.includes('SessionToken'))

async function storm () {
  say(
    `## Expiry storm: ${STORM_REQUESTS} concurrent requests across a session expiry (login takes ${LOGIN_DELAY_MS} ms)`
  )
  const { sim, url } = await startSimulator({ loginDelayMs: LOGIN_DELAY_MS })
  // Default settings: the storm's connections wait in the admission queue for a slot (M2M_PROXY_MAX_IN_FLIGHT), none is
  // reset.
  const proxy = await startProxy(url)
  await sleep(500)
  const echo = `${proxy.proxyUrl}/api/m2m/v1/simulator/echo`
  const burst = () =>
    Promise.all(Array.from({ length: STORM_REQUESTS }, (_, i) => timedRequest(echo, JSON.stringify({ i }))))
  await burst() // warm: connections open
  const baseline = await burst()
  const loginsBefore = sim.stats.logins
  sim.expireSessions()
  const stormed = await burst()
  const failures = stormed.filter((result) => result.status !== 200).length
  const failed = new Map()
  for (const result of stormed) {
    if (result.status !== 200) {
      const key = `${result.status} ${errorCodeOf(result)}`
      failed.set(key, (failed.get(key) ?? 0) + 1)
    }
  }
  const worstBaseline = Math.max(...baseline.map((result) => result.ms))
  const worstStorm = Math.max(...stormed.map((result) => result.ms))
  say(
    `logins during the storm: ${sim.stats.logins - loginsBefore} (target 1); failed requests: ${failures} (target 0)${failures === 0 ? '' : ` ${JSON.stringify(Object.fromEntries(failed))}`}`
  )
  say(
    `latency without expiry: p50 ${percentile(
      baseline.map((r) => r.ms),
      50
    ).toFixed(0)} ms, max ${worstBaseline.toFixed(0)} ms; across the expiry: p50 ${percentile(
      stormed.map((r) => r.ms),
      50
    ).toFixed(0)} ms, max ${worstStorm.toFixed(0)} ms`
  )
  say(
    `worst added latency: ${(worstStorm - worstBaseline).toFixed(0)} ms against one login round trip of ${LOGIN_DELAY_MS} ms`
  )
  proxy.child.kill('SIGKILL')
  await sim.app.close()
  return failures === 0 && sim.stats.logins - loginsBefore === 1
}

async function soak () {
  say(
    `\n## Soak: ${SOAK_MINUTES} min steady load, session expiry every 30 s, OAuth expiry every 2 min, 1% upstream connection resets`
  )
  const { sim, url } = await startSimulator({ resetProbability: 0.01 })
  const proxy = await startProxy(url)
  await sleep(500)
  const target = `${proxy.proxyUrl}/api/m2m/v1/devices/actions/list`
  const counts = new Map()
  let running = true
  let sent = 0
  const workers = Array.from({ length: 16 }, async (_, worker) => {
    // eslint-disable-next-line no-unmodified-loop-condition -- set to false by the run's end, outside this loop
    while (running) {
      const result = await timedRequest(target, JSON.stringify({ accountName: '0000123456-00001', worker }))
      sent += 1
      const key = isAuthError(result) ? `auth-error ${result.status}` : String(result.status)
      counts.set(key, (counts.get(key) ?? 0) + 1)
      await sleep(5) // steady, not saturating: a few hundred requests per second
    }
  })
  const started = Date.now()
  const endAt = started + SOAK_MINUTES * 60_000
  const rss = []
  let sessionExpiries = 0
  let oauthExpiries = 0
  const loginsAtStart = sim.stats.logins
  let nextSession = started + 30_000
  let nextOauth = started + 120_000
  while (Date.now() < endAt) {
    await sleep(1000)
    const now = Date.now()
    // No expiry in the last 10 s: each one must be met by traffic before the load stops.
    const expiring = now < endAt - 10_000
    if (expiring && now >= nextSession) {
      sim.expireSessions()
      sessionExpiries += 1
      nextSession += 30_000
    }
    if (expiring && now >= nextOauth) {
      sim.expireOAuthToken()
      oauthExpiries += 1
      nextOauth += 120_000
    }
    if ((now - started) % 10_000 < 1000) rss.push({ at: now - started, mib: rssMiB(proxy.child.pid) })
  }
  running = false
  await Promise.all(workers)
  const logins = sim.stats.logins - loginsAtStart
  const authErrors = [...counts].filter(([key]) => key.startsWith('auth-error')).reduce((sum, [, n]) => sum + n, 0)
  const afterWarmup = rss.filter((sample) => sample.at >= 60_000)
  const firstMinute = afterWarmup.slice(0, 6).map((sample) => sample.mib)
  const lastMinute = afterWarmup.slice(-6).map((sample) => sample.mib)
  const growth = (percentile(lastMinute, 50) / percentile(firstMinute, 50) - 1) * 100
  say(`requests: ${sent}; answers by status: ${JSON.stringify(Object.fromEntries(counts))}`)
  say(`client-visible authentication errors: ${authErrors} (target 0)`)
  say(
    `session expiries: ${sessionExpiries}, logins: ${logins} (target: one per expiry); OAuth expiries: ${oauthExpiries}, new OAuth tokens: ${sim.stats.oauthTokensIssued - 1}`
  )
  say(
    `proxy RSS after warm-up: first minute median ${percentile(firstMinute, 50).toFixed(1)} MiB, last minute median ${percentile(lastMinute, 50).toFixed(1)} MiB, growth ${growth.toFixed(1)}% (target < 10%)`
  )
  proxy.child.kill('SIGKILL')
  await sim.app.close()
  return authErrors === 0 && logins === sessionExpiries && growth < 10
}

async function flapping () {
  say(`\n## Login flapping: ${FLAP_SECONDS} s of logins answered by 500s, timeouts and rejections in turn`)
  const { sim, url } = await startSimulator()
  const proxy = await startProxy(url, { M2M_PROXY_UPSTREAM_TIMEOUT_MS: '1000' })
  await sleep(500)
  const modes = ['status500', 'hang', 'reject']
  for (let i = 0; i < 300; i++) sim.failNextLogins(1, modes[i % modes.length])
  let maxConsecutive = 0
  const watch = setInterval(() => {
    maxConsecutive = Math.max(maxConsecutive, sim.stats.consecutiveFailedLogins)
  }, 20)
  const target = `${proxy.proxyUrl}/api/m2m/v1/devices/actions/list`
  const started = Date.now()
  const statuses = new Map()
  await fetch(`${proxy.adminUrl}/healthz`)
  sim.expireSessions()
  while (Date.now() - started < FLAP_SECONDS * 1000) {
    const results = await Promise.all(Array.from({ length: 20 }, () => timedRequest(target, '{}')))
    for (const result of results) statuses.set(result.status, (statuses.get(result.status) ?? 0) + 1)
    if (Math.random() < 0.2) sim.expireSessions()
    await sleep(100)
  }
  clearInterval(watch)
  say(
    `requests: ${[...statuses.values()].reduce((a, b) => a + b, 0)}; answers by status: ${JSON.stringify(Object.fromEntries(statuses))}`
  )
  say(
    `rejected logins counted by the platform: ${sim.stats.failedLogins}; max consecutive: ${maxConsecutive} (limit ${MAX_LOGIN_FAILURES}); account locked: ${sim.locked}`
  )
  const metrics = await (await fetch(`${proxy.adminUrl}/metrics`)).text()
  const logins = (outcome) =>
    Number(new RegExp(`m2m_proxy_logins_total\\{outcome="${outcome}"\\} (\\d+)`).exec(metrics)?.[1] ?? 0)
  say(
    `login attempts by the proxy: success ${logins('success')}, rejected ${logins('rejected')}, error ${logins('error')} over ${FLAP_SECONDS} s (backoff 1 s doubling to 60 s); guard engaged: ${/m2m_proxy_login_guard_engaged (\d)/.exec(metrics)?.[1]}`
  )
  proxy.child.kill('SIGKILL')
  await sim.app.close()
  return maxConsecutive <= MAX_LOGIN_FAILURES && !sim.locked
}

/**
 * The error code of a non-2xx answer: `errorCode` of a JSON body (the proxy's `Proxy.*` or ThingSpace's), the
 * connection error for status 0, else "-".
 */
function errorCodeOf (result) {
  if (result.status === 0) return result.text
  try {
    return String(JSON.parse(result.text)?.errorCode ?? '-')
  } catch {
    return '-'
  }
}
/**
 * A client-visible authentication error (fleet round): any 401 or 403, whoever answered; a proxy 503
 * `Proxy.AuthenticationUnavailable.*` (no usable session: fleet store unreachable, login failing or
 * refused, lock wait given up); or any answer carrying a ThingSpace session or credential refusal
 * (`…SessionToken…`, `…InvalidCredentials`, `…AccountLocked`) that the proxy passed on.
 */
const isClientAuthError = (status, code) =>
  status === 401 ||
  status === 403 ||
  (status === 503 && code.startsWith('Proxy.AuthenticationUnavailable')) ||
  /SessionToken|InvalidCredentials|AccountLocked/.test(code)

async function adminSession (replica, token) {
  try {
    const response = await fetch(`${replica.adminUrl}/admin/session`, {
      headers: { authorization: `Bearer ${token}` },
      signal: globalThis.AbortSignal.timeout(2000)
    })
    return response.ok ? await response.json() : { error: `HTTP ${response.status}` }
  } catch (error) {
    return { error: String(error.cause?.code ?? error.code ?? error) }
  }
}

async function fleet () {
  say(
    `\n## Fleet: ${FLEET_MINUTES} min, ${FLEET_REPLICAS} replicas sharing one session through a private Redis, ${FLEET_CLIENTS_PER_REPLICA} clients per replica, session expiry every 30 s (login takes ${LOGIN_DELAY_MS} ms), one Redis restart (down ${FLEET_REDIS_DOWN_MS / 1000} s, every key lost) in the middle`
  )
  if (!redisServerAvailable()) {
    say(
      `skipped: no redis-server at ${REDIS_SERVER} (apt-get install redis-server, or SOAK_REDIS_SERVER=path); SOAK_FLEET=off skips this round`
    )
    return true
  }
  const redis = await startPrivateRedis({
    dir: fs.mkdtempSync(path.join(work, 'redis-')),
    onChild: (child) => children.push(child)
  })
  const { sim, url } = await startSimulator({ loginDelayMs: LOGIN_DELAY_MS })
  const adminToken = randomBytes(24).toString('hex')
  const env = {
    M2M_PROXY_REDIS_URL: redis.url,
    M2M_PROXY_FLEET_KEY: randomBytes(32).toString('hex'),
    M2M_PROXY_REDIS_KEY_PREFIX: `m2m-soak-${randomBytes(4).toString('hex')}:`,
    M2M_PROXY_ADMIN_TOKEN: adminToken
  }
  say(
    `private redis-server on port ${redis.port} (--save '' --appendonly no), key prefix ${env.M2M_PROXY_REDIS_KEY_PREFIX}`
  )
  let started = Date.now()
  const warnings = new Map() // "replica N level: msg" -> { count, firstAt } from the replicas' warn and error lines
  const onLogLine = (replica) => (line) => {
    if (!/"level":[456]0/.test(line)) return
    let entry
    try {
      entry = JSON.parse(line)
    } catch {
      return
    }
    const key = `replica ${replica} ${entry.level >= 50 ? 'error' : 'warn'}: ${String(entry.msg).slice(0, 200)}`
    const seen = warnings.get(key) ?? { count: 0, firstAt: Date.now() - started }
    seen.count += 1
    warnings.set(key, seen)
  }
  const replicas = []
  for (let i = 0; i < FLEET_REPLICAS; i++) replicas.push(await startProxy(url, env, { onLogLine: onLogLine(i + 1) }))
  for (let i = 0; i < 100; i++) {
    const states = await Promise.all(replicas.map((replica) => adminSession(replica, adminToken)))
    if (states.every((state) => state.state === 'active')) break
    await sleep(100)
  }
  const loginsAtStart = sim.stats.logins
  let maxConsecutive = 0
  const watch = setInterval(() => {
    maxConsecutive = Math.max(maxConsecutive, sim.stats.consecutiveFailedLogins)
  }, 20)

  started = Date.now()
  const endAt = started + FLEET_MINUTES * 60_000
  const counts = new Map() // "status errorCode" -> { count, firstAt, lastAt, auth }
  const latencies = []
  const perReplica = replicas.map(() => 0)
  let running = true
  const workers = replicas.flatMap((replica, r) =>
    Array.from({ length: FLEET_CLIENTS_PER_REPLICA }, async (_, worker) => {
      const target = `${replica.proxyUrl}/api/m2m/v1/devices/actions/list`
      // eslint-disable-next-line no-unmodified-loop-condition -- set to false by the run's end, outside this loop
      while (running) {
        const result = await timedRequest(target, JSON.stringify({ accountName: '0000123456-00001', worker }))
        latencies.push(result.ms)
        perReplica[r] += 1
        const ok = result.status >= 200 && result.status < 300
        const code = ok ? '' : errorCodeOf(result)
        const key = ok ? String(result.status) : `${result.status} ${code}`
        const at = Date.now() - started
        const entry = counts.get(key) ?? {
          count: 0,
          firstAt: at,
          lastAt: at,
          auth: !ok && isClientAuthError(result.status, code)
        }
        entry.count += 1
        entry.lastAt = at
        counts.set(key, entry)
        await sleep(5) // steady, not saturating
      }
    })
  )

  // Expiries on the 30 s marks; the restart 10 s after the mark nearest the middle, so that Redis is
  // back (and every replica reconnected) well before the next expiry: an expiry while Redis is down
  // would be answered 503 FleetStoreUnreachable by design (no login while the fleet's count is unknown).
  const restartAt = started + Math.max(1, Math.floor((FLEET_MINUTES * 60_000) / 2 / 30_000)) * 30_000 + 10_000
  const restartRedis = async () => {
    const loginsBefore = sim.stats.logins
    const downAt = Date.now() - started
    await redis.stop()
    await sleep(FLEET_REDIS_DOWN_MS / 2)
    const seenDown = (await Promise.all(replicas.map((replica) => adminSession(replica, adminToken)))).map(
      (state) => state.fleet?.storeConnected === false
    )
    await sleep(FLEET_REDIS_DOWN_MS / 2)
    await redis.start()
    const upAt = Date.now() - started
    const reconnectedAt = replicas.map(() => undefined)
    for (let i = 0; i < 300 && reconnectedAt.includes(undefined); i++) {
      await Promise.all(
        replicas.map(async (replica, r) => {
          if (
            reconnectedAt[r] === undefined &&
            (await adminSession(replica, adminToken)).fleet?.storeConnected === true
          ) { reconnectedAt[r] = Date.now() - started }
        })
      )
      await sleep(100)
    }
    return { downAt, upAt, seenDown, reconnectedAt, loginsBefore, loginsAfter: sim.stats.logins }
  }
  const windows = [] // one per expiry: when, and the simulator's logins just before it
  let nextExpiry = started + 30_000
  let restartTask
  while (Date.now() < endAt) {
    await sleep(250)
    const now = Date.now()
    // No expiry in the last 10 s: each one must be met by traffic before the load stops.
    if (now < endAt - 10_000 && now >= nextExpiry) {
      windows.push({ at: now - started, loginsBefore: sim.stats.logins })
      sim.expireSessions()
      nextExpiry += 30_000
    }
    if (restartTask === undefined && now >= restartAt && now < endAt - 10_000 - FLEET_REDIS_DOWN_MS) {
      restartTask = restartRedis()
    }
  }
  running = false
  await Promise.all(workers)
  const restart = await restartTask
  clearInterval(watch)
  const finalStates = await Promise.all(replicas.map((replica) => adminSession(replica, adminToken)))

  const expiries = windows.length
  const logins = sim.stats.logins
  const perExpiry = windows.map((window, i) => (windows[i + 1]?.loginsBefore ?? logins) - window.loginsBefore)
  const requests = latencies.length
  const nonOk = [...counts].filter(([key]) => !/^2\d\d$/.test(key))
  const authErrors = nonOk.filter(([, entry]) => entry.auth).reduce((sum, [, entry]) => sum + entry.count, 0)
  const seconds = (ms) => (ms / 1000).toFixed(1)
  say(
    `requests: ${requests} (per replica ${perReplica.join(' / ')}); 2xx: ${requests - nonOk.reduce((sum, [, entry]) => sum + entry.count, 0)}; non-2xx: ${nonOk.length === 0 ? 'none' : ''}`
  )
  for (const [key, entry] of nonOk) {
    say(
      `  ${key}: ${entry.count}${entry.auth ? ' [authentication error]' : ''}, first at ${seconds(entry.firstAt)} s, last at ${seconds(entry.lastAt)} s`
    )
  }
  say(
    `client-visible authentication errors (401, 403, 503 Proxy.AuthenticationUnavailable.*, passed-on SessionToken/credential refusals): ${authErrors} (target 0)`
  )
  if (restart === undefined) {
    say('Redis restart: not done (the round is too short: SOAK_FLEET_MINUTES >= 1 needed)')
  } else {
    const reconnected = restart.reconnectedAt.map((at) =>
      at === undefined ? 'never' : `+${seconds(at - restart.upAt)} s`
    )
    say(
      `Redis restart: down at ${seconds(restart.downAt)} s, up at ${seconds(restart.upAt)} s; replicas saw it down: ${restart.seenDown.filter(Boolean).length} of ${replicas.length}; reconnected after it was up: ${reconnected.join(', ')}; logins at the simulator meanwhile: ${restart.loginsAfter - restart.loginsBefore}`
    )
  }
  const restartWindow = restart === undefined ? -1 : windows.findLastIndex((window) => window.at <= restart.downAt)
  say(
    `session expiries: ${expiries} (at ${windows.map((window) => seconds(window.at)).join(', ')} s); logins at the simulator: ${logins} = ${loginsAtStart} at start-up + ${logins - loginsAtStart} after (target ${expiries + 1}: one per expiry + the initial one; difference ${logins - expiries - 1 >= 0 ? '+' : ''}${logins - expiries - 1})`
  )
  say(
    `logins after each expiry: ${perExpiry.map((n, i) => (i === restartWindow + 1 ? `${n} (first after the Redis restart)` : String(n))).join(', ')}`
  )
  say(
    `failed logins seen by the platform: ${sim.stats.failedLogins} in all, max consecutive ${maxConsecutive} (limit ${MAX_LOGIN_FAILURES}); account locked: ${sim.locked}`
  )
  say(
    `latency: p50 ${percentile(latencies, 50).toFixed(1)} ms, p99 ${percentile(latencies, 99).toFixed(1)} ms, max ${Math.max(...latencies).toFixed(0)} ms`
  )
  for (const [key, entry] of warnings) say(`  ${key} (×${entry.count}, first at ${seconds(entry.firstAt)} s)`)
  finalStates.forEach((state, i) =>
    say(
      `replica ${i + 1} GET /admin/session: state ${state.state ?? state.error}, fleetMode ${state.fleetMode}, fleet ${JSON.stringify(state.fleet)}`
    )
  )

  for (const replica of replicas) replica.child.kill('SIGKILL')
  await redis.stop()
  await sim.app.close()
  return (
    authErrors === 0 &&
    logins === expiries + 1 &&
    sim.stats.failedLogins <= MAX_LOGIN_FAILURES &&
    maxConsecutive <= MAX_LOGIN_FAILURES &&
    !sim.locked &&
    restart !== undefined
  )
}

let ok = true
try {
  say(`m2m-session-proxy soak, ${new Date().toISOString()}, ${os.cpus().length} CPUs`)
  if (ROUNDS.has('storm')) ok = (await storm()) && ok
  if (ROUNDS.has('flapping')) ok = (await flapping()) && ok
  if (ROUNDS.has('soak')) ok = (await soak()) && ok
  if (ROUNDS.has('fleet')) ok = (await fleet()) && ok
  else if (process.env.SOAK_FLEET === 'off') say('\n## Fleet: skipped (SOAK_FLEET=off)')
  say(`\nresult: ${ok ? 'all targets met' : 'a target was missed'}`)
} finally {
  for (const child of children) child.kill('SIGKILL')
  await client.close()
  fs.rmSync(work, { recursive: true, force: true })
}
process.exit(ok ? 0 : 1)
