// `npm run soak` (minutes; not part of npm test): an expiry storm, a steady soak with expiries and upstream resets,
// and login flapping, against the built proxy as a separate process and the embedded simulator.
import { spawn, execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { Agent, request } from 'undici'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const SOAK_MINUTES = Number(process.env.SOAK_MINUTES ?? 10)
const STORM_REQUESTS = Number(process.env.SOAK_STORM_REQUESTS ?? 2000)
const FLAP_SECONDS = Number(process.env.SOAK_FLAP_SECONDS ?? 60)
const LOGIN_DELAY_MS = 100 // a realistic round trip to the platform, so that "one login" is visible in latencies
const MAX_LOGIN_FAILURES = 2

execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' })
const { buildSimulator, DEMO_CREDENTIALS } = await import(path.join(ROOT, 'dist/simulator/app.js'))
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-soak-'))
const children = []
const report = []
const say = (line) => { process.stdout.write(line + '\n'); report.push(line) }

async function startSimulator (options = {}) {
  const sim = buildSimulator({ ...DEMO_CREDENTIALS, ...options })
  await sim.app.listen({ host: '127.0.0.1', port: 0 })
  return { sim, url: `http://127.0.0.1:${sim.app.server.address().port}` }
}

async function startProxy (upstream, env = {}) {
  const dir = fs.mkdtempSync(path.join(work, 'proxy-'))
  fs.writeFileSync(path.join(dir, 'credentials.json'), JSON.stringify(DEMO_CREDENTIALS), { mode: 0o600 })
  const child = spawn(process.execPath, ['dist/main.js'], {
    cwd: ROOT,
    env: { ...process.env, M2M_PROXY_UPSTREAM: upstream, M2M_PROXY_CREDENTIALS_FILE: path.join(dir, 'credentials.json'), M2M_PROXY_PORT: '0', M2M_PROXY_ADMIN_PORT: '0', M2M_PROXY_LOG_LEVEL: 'info', M2M_PROXY_MAX_LOGIN_FAILURES: String(MAX_LOGIN_FAILURES), ...env },
    stdio: ['ignore', 'pipe', 'inherit']
  })
  children.push(child)
  let output = ''
  const collect = (chunk) => { output += chunk.toString() }
  child.stdout.on('data', collect)
  for (let i = 0; i < 100 && !output.includes('"msg":"listening"'); i++) await sleep(50)
  const line = output.split('\n').find((candidate) => candidate.includes('"msg":"listening"'))
  if (line === undefined) throw new Error('proxy did not start')
  child.stdout.off('data', collect)
  child.stdout.resume() // keep draining the production log lines without keeping them
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
    const response = await request(url, { method: 'POST', body, headers: { 'content-type': 'application/json' }, dispatcher: client })
    const text = await response.body.text()
    return { status: response.statusCode, ms: performance.now() - started, text }
  } catch (error) {
    return { status: 0, ms: performance.now() - started, text: String(error.code ?? error) }
  }
}

const percentile = (values, p) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor(p / 100 * sorted.length))]
}
const isAuthError = (result) => result.status === 401 || result.status === 503 || (result.status === 400 && result.text.includes('SessionToken'))

async function storm () {
  say(`## Expiry storm: ${STORM_REQUESTS} concurrent requests across a session expiry (login takes ${LOGIN_DELAY_MS} ms)`)
  const { sim, url } = await startSimulator({ loginDelayMs: LOGIN_DELAY_MS })
  const proxy = await startProxy(url)
  await sleep(500)
  const echo = `${proxy.proxyUrl}/api/m2m/v1/simulator/echo`
  const burst = () => Promise.all(Array.from({ length: STORM_REQUESTS }, (_, i) => timedRequest(echo, JSON.stringify({ i }))))
  await burst() // warm: connections open
  const baseline = await burst()
  const loginsBefore = sim.stats.logins
  sim.expireSessions()
  const stormed = await burst()
  const failures = stormed.filter((result) => result.status !== 200).length
  const worstBaseline = Math.max(...baseline.map((result) => result.ms))
  const worstStorm = Math.max(...stormed.map((result) => result.ms))
  say(`logins during the storm: ${sim.stats.logins - loginsBefore} (target 1); failed requests: ${failures} (target 0)`)
  say(`latency without expiry: p50 ${percentile(baseline.map((r) => r.ms), 50).toFixed(0)} ms, max ${worstBaseline.toFixed(0)} ms; across the expiry: p50 ${percentile(stormed.map((r) => r.ms), 50).toFixed(0)} ms, max ${worstStorm.toFixed(0)} ms`)
  say(`worst added latency: ${(worstStorm - worstBaseline).toFixed(0)} ms against one login round trip of ${LOGIN_DELAY_MS} ms`)
  proxy.child.kill('SIGKILL')
  await sim.app.close()
  return failures === 0 && sim.stats.logins - loginsBefore === 1
}

async function soak () {
  say(`\n## Soak: ${SOAK_MINUTES} min steady load, session expiry every 30 s, OAuth expiry every 2 min, 1% upstream connection resets`)
  const { sim, url } = await startSimulator({ resetProbability: 0.01 })
  const proxy = await startProxy(url)
  await sleep(500)
  const target = `${proxy.proxyUrl}/api/m2m/v1/devices/actions/list`
  const counts = new Map()
  let running = true
  let sent = 0
  const workers = Array.from({ length: 16 }, async (_, worker) => {
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
    if (expiring && now >= nextSession) { sim.expireSessions(); sessionExpiries += 1; nextSession += 30_000 }
    if (expiring && now >= nextOauth) { sim.expireOAuthToken(); oauthExpiries += 1; nextOauth += 120_000 }
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
  say(`session expiries: ${sessionExpiries}, logins: ${logins} (target: one per expiry); OAuth expiries: ${oauthExpiries}, new OAuth tokens: ${sim.stats.oauthTokensIssued - 1}`)
  say(`proxy RSS after warm-up: first minute median ${percentile(firstMinute, 50).toFixed(1)} MiB, last minute median ${percentile(lastMinute, 50).toFixed(1)} MiB, growth ${growth.toFixed(1)}% (target < 10%)`)
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
  const watch = setInterval(() => { maxConsecutive = Math.max(maxConsecutive, sim.stats.consecutiveFailedLogins) }, 20)
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
  say(`requests: ${[...statuses.values()].reduce((a, b) => a + b, 0)}; answers by status: ${JSON.stringify(Object.fromEntries(statuses))}`)
  say(`rejected logins counted by the platform: ${sim.stats.failedLogins}; max consecutive: ${maxConsecutive} (limit ${MAX_LOGIN_FAILURES}); account locked: ${sim.locked}`)
  const metrics = await (await fetch(`${proxy.adminUrl}/metrics`)).text()
  const logins = (outcome) => Number(new RegExp(`m2m_proxy_logins_total\\{outcome="${outcome}"\\} (\\d+)`).exec(metrics)?.[1] ?? 0)
  say(`login attempts by the proxy: success ${logins('success')}, rejected ${logins('rejected')}, error ${logins('error')} over ${FLAP_SECONDS} s (backoff 1 s doubling to 60 s); guard engaged: ${/m2m_proxy_login_guard_engaged (\d)/.exec(metrics)?.[1]}`)
  proxy.child.kill('SIGKILL')
  await sim.app.close()
  return maxConsecutive <= MAX_LOGIN_FAILURES && !sim.locked
}

let ok = true
try {
  say(`m2m-session-proxy soak, ${new Date().toISOString()}, ${os.cpus().length} CPUs`)
  ok = (await storm()) && ok
  ok = (await flapping()) && ok
  ok = (await soak()) && ok
  say(`\nresult: ${ok ? 'all targets met' : 'a target was missed'}`)
} finally {
  for (const child of children) child.kill('SIGKILL')
  await client.close()
  fs.rmSync(work, { recursive: true, force: true })
}
process.exit(ok ? 0 : 1)
