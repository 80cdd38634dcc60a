// `npm run bench`: throughput, latency and RSS of this proxy against the upstream itself, nginx and bare
// @fastify/http-proxy, all in one run on this machine, GET and POST (1 KiB JSON) in alternating rounds; prints one
// table and the ratios.
// Then the same proxy in fleet mode (a Redis, M2M_PROXY_REDIS_URL) against single-process mode, with the Redis commands
// it sent.
import { spawn, spawnSync, execFileSync, execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { promisify } from 'node:util'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { deleteKeys, describeCommands, redisProblem, shownUrl, startCommandCount } from './fleet-redis.mjs'
import { imageMemoryEnv } from './memory-harness.mjs'
import { memorySection } from './memory.mjs'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const DURATION_S = Number(process.env.BENCH_DURATION ?? 5)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const SIDE_BY_SIDE_ROUNDS = Number(process.env.BENCH_SIDE_BY_SIDE_ROUNDS ?? ROUNDS)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50)
// production setting; 'warn' shows what the request lines cost
const LOG_LEVEL = process.env.BENCH_PROXY_LOG_LEVEL ?? 'info'
// Fleet mode against single-process mode: BENCH_FLEET=off skips it; it is skipped too when no Redis answers at
// BENCH_REDIS_URL.
const FLEET = process.env.BENCH_FLEET !== 'off'
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379'
const FLEET_ROUNDS = Number(process.env.BENCH_FLEET_ROUNDS ?? ROUNDS)
const FLEET_SIDE_BY_SIDE_ROUNDS = Number(process.env.BENCH_FLEET_SIDE_BY_SIDE_ROUNDS ?? SIDE_BY_SIDE_ROUNDS)
/** The keys this run's fleet-mode proxy writes, all under one prefix of its own, removed at the end. */
const FLEET_KEY_PREFIX = `m2m-bench:${randomBytes(6).toString('hex')}:`
// The queue's cost on the hot path: this proxy side by side with an earlier commit's build (a8bc49c: before admission,
// the connection cap's eviction, the upstream gate and the byte budgets). BENCH_BASELINE=off skips it; another commit
// id compares with that one. Built from `git archive` beside this checkout, with this checkout's node_modules when the
// lock file is the same, else with its own (npm ci, from npm's cache when it holds them).
const BASELINE = process.env.BENCH_BASELINE ?? 'a8bc49c'
const BASELINE_ROUNDS = Number(process.env.BENCH_BASELINE_ROUNDS ?? Math.max(SIDE_BY_SIDE_ROUNDS, 5))
// Start-up and RSS at rest with tracing off against the last commit before OpenTelemetry (fb68bab), built the same way
// (tsc and the esbuild bundle), and with tracing on; BENCH_TRACING_BASELINE=off skips the earlier build.
const TRACING_BASELINE = process.env.BENCH_TRACING_BASELINE ?? 'fb68bab'
// RSS idle: read again this long after ready (V8's memory reducer collects once a process has stopped allocating, a
// few seconds in); 0 skips it.
const IDLE_SECONDS = Number(process.env.BENCH_IDLE_SECONDS ?? 20)
const PATH = '/api/m2m/v1/devices/actions/list'
const POST_BODY = JSON.stringify({ accountName: '0000123456-00001', filter: { groupName: 'x'.repeat(940) } })
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-bench-'))
const children = []
const cleanups = []

function has (command) {
  return spawnSync('sh', ['-c', `command -v ${command}`]).status === 0
}
const TOOL = process.env.BENCH_TOOL ?? (has('wrk') ? 'wrk' : 'autocannon')

// The proxies under test (and nginx) get the last CPU to themselves; wrk and the upstream run on the
// others. Unpinned, they all compete for the same CPUs, and req/s then measures how the scheduler
// shares them as much as what a request costs the proxy.
const CPU_COUNT = os.cpus().length
const PIN = process.env.BENCH_PIN !== '0' && CPU_COUNT >= 2 && TOOL === 'wrk' && has('taskset')
const TARGET_CPUS = String(CPU_COUNT - 1)
const LOAD_CPUS = CPU_COUNT > 2 ? `0-${CPU_COUNT - 2}` : '0'

/** [command, args], run on the given CPUs when pinning (taskset execs the command: same pid). */
function onCpus (cpus, command, args) {
  return PIN ? ['taskset', ['-c', cpus, command, ...args]] : [command, args]
}

const execFileAsync = promisify(execFile)
const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100

/** Starts a child that prints its port on the first stdout line. */
function startChild (args, cpus) {
  const child = spawn(...onCpus(cpus, process.execPath, args), { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] })
  children.push(child)
  return new Promise((resolve, reject) => {
    let output = ''
    const onData = (chunk) => {
      output += chunk.toString()
      if (!output.includes('\n')) return
      child.stdout.off('data', onData)
      child.stdout.resume()
      resolve({ child, port: Number(output.split('\n')[0]) })
    }
    child.stdout.on('data', onData)
    child.once('exit', (code) => reject(new Error(`${args.join(' ')} exited with ${code}`)))
  })
}

function freePort () {
  return new Promise((resolve) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

/** Fleet settings are never inherited from the shell: the bench sets them on the fleet-mode proxy only. */
const FLEET_ENV_NAMES = [
  'M2M_PROXY_REDIS_URL',
  'M2M_PROXY_FLEET_KEY',
  'M2M_PROXY_FLEET_KEY_FILE',
  'M2M_PROXY_REDIS_KEY_PREFIX'
]

/** Starts the proxy as in production: its JSON log lines go to a file, as with a container runtime's log driver. */
async function startProxy (env, name = 'proxy', root = ROOT) {
  const logFile = path.join(work, `${name}.log`)
  const log = fs.openSync(logFile, 'w')
  const port = await freePort()
  const adminPort = await freePort()
  const inherited = { ...process.env }
  for (const envName of FLEET_ENV_NAMES) delete inherited[envName]
  // A state directory of its own: proxies started side by side may not share one (src/fs/state-dir-lock.ts).
  const stateDir = fs.mkdtempSync(path.join(work, `${name}-state-`))
  const child = spawn(...onCpus(TARGET_CPUS, process.execPath, ['dist/main.js']), {
    cwd: root,
    env: {
      ...inherited,
      M2M_PROXY_STATE_DIR: stateDir,
      ...env,
      M2M_PROXY_PORT: String(port),
      M2M_PROXY_ADMIN_PORT: String(adminPort)
    },
    stdio: ['ignore', log, 'inherit']
  })
  children.push(child)
  for (let i = 0; i < 200; i++) {
    const ready = await fetch(`http://127.0.0.1:${adminPort}/readyz`).then(
      (response) => response.ok,
      () => false
    )
    if (ready) return { child, port, adminPort, logFile }
    await sleep(50)
  }
  throw new Error('the proxy did not start')
}

function rssMiB (pid) {
  try {
    const kb = Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1])
    return kb / 1024
  } catch {
    return NaN
  }
}

/** CPU time (user + system) the processes have used so far, in microseconds. */
function cpuMicros (pids) {
  try {
    let ticks = 0
    for (const pid of pids ?? [NaN]) {
      const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
      ticks += Number(fields[11]) + Number(fields[12])
    }
    return (ticks * 1e6) / CLOCK_TICKS
  } catch {
    return NaN
  }
}

/** nginx's master and its workers. */
function withChildren (pid) {
  try {
    return [
      pid,
      ...fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)
    ]
  } catch {
    return undefined
  }
}

async function load (port, method) {
  const url = `http://127.0.0.1:${port}${PATH}`
  if (TOOL === 'wrk') {
    const script = path.join(work, `${method}.lua`)
    fs.writeFileSync(
      script,
      method === 'POST'
        ? `wrk.method = "POST"\nwrk.body = ${JSON.stringify(POST_BODY)}\nwrk.headers["Content-Type"] = "application/json"\n`
        : 'wrk.method = "GET"\n'
    )
    const { stdout: output } = await execFileAsync(
      ...onCpus(LOAD_CPUS, 'wrk', ['-t1', `-c${CONNECTIONS}`, `-d${DURATION_S}s`, '--latency', '-s', script, url]),
      { encoding: 'utf8' }
    )
    const unit = (value, suffix) => Number(value) * ({ us: 0.001, ms: 1, s: 1000 }[suffix] ?? 1)
    const percentile = (p) => {
      const match = new RegExp(`\\s${p}%\\s+([\\d.]+)(us|ms|s)`).exec(output)
      return match === null ? NaN : unit(match[1], match[2])
    }
    const errors = /Non-2xx or 3xx responses: (\d+)/.exec(output)
    const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output)
    return {
      requests: Number(/(\d+) requests in/.exec(output)?.[1]),
      rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(output)?.[1]),
      p50: percentile(50),
      p99: percentile(99),
      errors:
        Number(errors?.[1] ?? 0) +
        (socketErrors === null ? 0 : socketErrors.slice(1).reduce((sum, value) => sum + Number(value), 0))
    }
  }
  const { default: autocannon } = await import('autocannon')
  const result = await autocannon({
    url,
    method,
    connections: CONNECTIONS,
    duration: DURATION_S,
    body: method === 'POST' ? POST_BODY : undefined,
    headers: method === 'POST' ? { 'content-type': 'application/json' } : {}
  })
  return {
    requests: result.requests.total,
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.non2xx + result.errors
  }
}

function startNginx (upstreamPort) {
  if (!fs.existsSync('/usr/sbin/nginx') && !has('nginx')) return undefined
  const prefix = path.join(work, 'nginx')
  fs.mkdirSync(path.join(prefix, 'logs'), { recursive: true })
  const port = 20000 + Math.floor(Math.random() * 20000)
  const conf = path.join(prefix, 'nginx.conf')
  fs.writeFileSync(
    conf,
    `worker_processes 1;
error_log ${prefix}/logs/error.log warn;
pid ${prefix}/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${prefix}/body; proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fcgi; uwsgi_temp_path ${prefix}/uwsgi; scgi_temp_path ${prefix}/scgi;
  upstream thingspace { server 127.0.0.1:${upstreamPort}; keepalive 64; }
  server {
    listen 127.0.0.1:${port};
    location /api/m2m/ {
      proxy_pass http://thingspace;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer fixed-oauth-token";
      proxy_set_header VZ-M2M-Token "fixed-session-token";
    }
  }
}
`
  )
  const nginx = fs.existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : 'nginx'
  // Its own process group: SIGKILL to the master alone would leave the worker running.
  const child = spawn(...onCpus(TARGET_CPUS, nginx, ['-p', prefix, '-c', conf, '-g', 'daemon off;']), {
    stdio: 'inherit',
    detached: true
  })
  child.processGroup = true
  children.push(child)
  return { child, port }
}

function median (values) {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b)
  if (sorted.length === 0) return NaN
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}

async function main () {
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' })
  const upstream = await startChild(['bench/upstream.mjs'], LOAD_CPUS)
  const credentials = path.join(work, 'credentials.json')
  fs.writeFileSync(
    credentials,
    JSON.stringify({
      username: 'bench',
      password: 'bench-password',
      clientId: 'bench-client',
      clientSecret: 'bench-secret'
    }),
    { mode: 0o600 }
  )
  const proxyEnv = {
    M2M_PROXY_UPSTREAM: `http://127.0.0.1:${upstream.port}`,
    M2M_PROXY_CREDENTIALS_FILE: credentials,
    M2M_PROXY_LOG_LEVEL: LOG_LEVEL
  }
  const proxy = await startProxy(proxyEnv)
  const bare = await startChild(['bench/bare-proxy.mjs', String(upstream.port), '0'], TARGET_CPUS)
  const raw = await startChild(['bench/raw-proxy.mjs', String(upstream.port), '0'], TARGET_CPUS)
  const nginx = startNginx(upstream.port)
  if (nginx !== undefined) await sleep(300)

  const bareName = 'bare @fastify/http-proxy'
  const rawName = 'raw node:http + undici'
  const proxyName = `m2m-session-proxy (${LOG_LEVEL} logs)`
  const targets = [
    { name: 'upstream direct (the limit)', port: upstream.port, cpuPids: [upstream.child.pid] },
    ...(nginx === undefined
      ? []
      : [{ name: 'nginx, static headers', port: nginx.port, cpuPids: withChildren(nginx.child.pid) }]),
    { name: rawName, port: raw.port, pid: raw.child.pid, cpuPids: [raw.child.pid] },
    { name: bareName, port: bare.port, pid: bare.child.pid, cpuPids: [bare.child.pid] },
    { name: proxyName, port: proxy.port, pid: proxy.child.pid, cpuPids: [proxy.child.pid], logFile: proxy.logFile }
  ]
  const results = new Map(targets.map((target) => [target.name, { GET: [], POST: [] }]))
  const rss = { [bare.child.pid]: [], [raw.child.pid]: [], [proxy.child.pid]: [] }
  const placement = PIN
    ? `targets pinned to CPU ${TARGET_CPUS}, wrk and the upstream to CPU ${LOAD_CPUS}`
    : 'not pinned (BENCH_PIN=0, one CPU, autocannon or no taskset)'
  process.stderr.write(
    `bench: ${TOOL}, ${CONNECTIONS} connections, ${DURATION_S} s per run, ${ROUNDS} rounds, ${CPU_COUNT} CPUs (${os.cpus()[0]?.model ?? 'unknown'}), ${placement}\n`
  )
  for (const target of targets) for (const method of ['GET', 'POST']) await load(target.port, method) // warm-up

  /** One load run against one target, with the target's CPU time per request and RSS. */
  async function measured (target, method, label) {
    const cpuBefore = cpuMicros(target.cpuPids)
    const result = await load(target.port, method)
    // CPU per request: what a request costs the process, a figure less moved than req/s by how the
    // shared machine schedules the load generator, upstream and proxy on its few CPUs.
    result.cpuPerRequest = (cpuMicros(target.cpuPids) - cpuBefore) / result.requests
    if (target.pid !== undefined) rss[target.pid].push(rssMiB(target.pid))
    if (target.logFile !== undefined) fs.truncateSync(target.logFile) // keep the disk free; the writes still happen
    process.stderr.write(
      `  ${label} ${method.padEnd(4)} ${target.name.padEnd(32)} ${result.rps.toFixed(0).padStart(7)} req/s  p50 ${result.p50.toFixed(2)} ms  p99 ${result.p99.toFixed(2)} ms  CPU ${Number.isFinite(result.cpuPerRequest) ? `${result.cpuPerRequest.toFixed(0)} µs/req` : 'n/a'}${result.errors ? `  errors ${result.errors}` : ''}\n`
    )
    return result
  }

  for (let round = 0; round < ROUNDS; round++) {
    for (const method of ['GET', 'POST']) {
      // Rotate the order each round so that no target always runs on a cooler or hotter machine.
      const ordered = targets.map((_, index) => targets[(index + round) % targets.length])
      for (const target of ordered) {
        results.get(target.name)[method].push(await measured(target, method, `round ${round + 1}`))
      }
    }
  }

  // Side by side: raw, bare and this proxy under load at the same time, so that every change of this shared
  // machine's speed hits them alike; each serves its own wrk, they share the upstream.
  const sideBySideNames = [rawName, bareName, proxyName]
  const sideBySide = Object.fromEntries(sideBySideNames.map((name) => [name, { GET: [], POST: [] }]))
  const sideBySideTargets = targets.filter((target) => sideBySideNames.includes(target.name))
  for (let round = 0; round < SIDE_BY_SIDE_ROUNDS; round++) {
    for (const method of ['GET', 'POST']) {
      const runs = await Promise.all(
        sideBySideTargets.map((target) => measured(target, method, `side by side ${round + 1}`))
      )
      sideBySideTargets.forEach((target, index) => sideBySide[target.name][method].push(runs[index]))
    }
  }

  const mediansOf = (runs) => ({
    rps: median(runs.map((run) => run.rps)),
    p50: median(runs.map((run) => run.p50)),
    p99: median(runs.map((run) => run.p99)),
    cpu: median(runs.map((run) => run.cpuPerRequest)),
    errors: runs.reduce((sum, run) => sum + run.errors, 0)
  })
  const summary = targets.map((target) => {
    const row = { name: target.name }
    for (const method of ['GET', 'POST']) row[method] = mediansOf(results.get(target.name)[method])
    return row
  })
  const cpu = (value) => (Number.isFinite(value) ? value.toFixed(0) : 'n/a')
  const lines = [
    '',
    `${placement}:`,
    '',
    '| target | GET req/s | GET p50 ms | GET p99 ms | GET CPU µs/req | POST req/s | POST p50 ms | POST p99 ms | POST CPU µs/req | errors |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|'
  ]
  for (const row of summary) {
    const cells = ['GET', 'POST'].map(
      (method) =>
        `${row[method].rps.toFixed(0)} | ${row[method].p50.toFixed(2)} | ${row[method].p99.toFixed(2)} | ${cpu(row[method].cpu)}`
    )
    lines.push(`| ${row.name} | ${cells.join(' | ')} | ${row.GET.errors + row.POST.errors} |`)
  }
  const ours = summary.at(-1)
  const byName = (prefix) => summary.find((row) => row.name.startsWith(prefix))
  const ratio = (other, method) => (other === undefined ? 'n/a' : (ours[method].rps / other[method].rps).toFixed(2))
  const ourRss = rss[proxy.child.pid]
  const bareRss = rss[bare.child.pid]
  lines.push(
    '',
    `m2m-session-proxy RSS after each run: median ${median(ourRss).toFixed(1)} MiB, max ${Math.max(...ourRss).toFixed(1)} MiB (target < 150 MiB); bare @fastify/http-proxy: median ${median(bareRss).toFixed(1)} MiB, max ${Math.max(...bareRss).toFixed(1)} MiB`
  )
  lines.push(
    `throughput ratio this proxy / bare @fastify/http-proxy: GET ${ratio(byName('bare'), 'GET')}, POST ${ratio(byName('bare'), 'POST')} (target >= 1.00)`
  )
  // Each round's own ratio, then their median: a slow spell of this shared machine then hits both sides of a ratio.
  const perRound = (runs, method, figure, other = bareName) =>
    runs[proxyName][method].map((run, round) => run[figure] / runs[other][method][round][figure])
  const pairedRatio = (runs, method, figure, other = bareName) =>
    median(perRound(runs, method, figure, other)).toFixed(2)
  const roundsAhead = (runs, method) => {
    const ratios = perRound(runs, method, 'rps')
    return `${ratios.filter((value) => value >= 1).length}/${ratios.length}`
  }
  const oneAfterAnother = Object.fromEntries([bareName, proxyName].map((name) => [name, results.get(name)]))
  lines.push(
    `median of the per-round ratios this proxy / bare: GET ${pairedRatio(oneAfterAnother, 'GET', 'rps')}, POST ${pairedRatio(oneAfterAnother, 'POST', 'rps')}; rounds in which this proxy served at least as many: GET ${roundsAhead(oneAfterAnother, 'GET')}, POST ${roundsAhead(oneAfterAnother, 'POST')}`
  )
  lines.push(
    `CPU per request this proxy / bare, median of the per-round ratios: GET ${pairedRatio(oneAfterAnother, 'GET', 'cpuPerRequest')}, POST ${pairedRatio(oneAfterAnother, 'POST', 'cpuPerRequest')}`
  )
  lines.push(
    `p99 ratio this proxy / bare: GET ${(ours.GET.p99 / byName('bare').GET.p99).toFixed(2)}, POST ${(ours.POST.p99 / byName('bare').POST.p99).toFixed(2)} (target <= 1.00)`
  )
  lines.push(
    `throughput ratio this proxy / nginx: GET ${ratio(byName('nginx'), 'GET')}, POST ${ratio(byName('nginx'), 'POST')}`
  )
  const perRoundAgainst = (other, method) => {
    const ours = results.get(proxyName)[method]
    const theirs = results.get(other)[method]
    return median(ours.map((run, round) => run.cpuPerRequest / theirs[round].cpuPerRequest)).toFixed(2)
  }
  lines.push(
    `CPU per request this proxy / raw node:http + undici, median of the per-round ratios: GET ${perRoundAgainst(rawName, 'GET')}, POST ${perRoundAgainst(rawName, 'POST')} (target <= 1.20)`
  )
  if (SIDE_BY_SIDE_ROUNDS > 0) {
    lines.push(
      '',
      `Side by side (raw, bare and this proxy loaded at the same time, ${SIDE_BY_SIDE_ROUNDS} rounds, medians):`,
      '',
      '| target | GET req/s | GET p99 ms | GET CPU µs/req | POST req/s | POST p99 ms | POST CPU µs/req |',
      '|---|---:|---:|---:|---:|---:|---:|'
    )
    for (const name of sideBySideNames) {
      const cells = ['GET', 'POST'].map((method) => {
        const medians = mediansOf(sideBySide[name][method])
        return `${medians.rps.toFixed(0)} | ${medians.p99.toFixed(2)} | ${cpu(medians.cpu)}`
      })
      lines.push(`| ${name} | ${cells.join(' | ')} |`)
    }
    lines.push(
      '',
      `side by side, this proxy / bare, median of the per-round ratios: throughput GET ${pairedRatio(sideBySide, 'GET', 'rps')}, POST ${pairedRatio(sideBySide, 'POST', 'rps')} (target >= 1.00; rounds at least level: GET ${roundsAhead(sideBySide, 'GET')}, POST ${roundsAhead(sideBySide, 'POST')}); ` +
        `p99 GET ${pairedRatio(sideBySide, 'GET', 'p99')}, POST ${pairedRatio(sideBySide, 'POST', 'p99')} (target <= 1.00); CPU per request GET ${pairedRatio(sideBySide, 'GET', 'cpuPerRequest')}, POST ${pairedRatio(sideBySide, 'POST', 'cpuPerRequest')}`,
      // Against the raw proxy in the same rounds: a slow spell of the machine moves both sides of each ratio.
      `side by side, CPU per request this proxy / raw node:http + undici, median of the per-round ratios: GET ${pairedRatio(sideBySide, 'GET', 'cpuPerRequest', rawName)}, POST ${pairedRatio(sideBySide, 'POST', 'cpuPerRequest', rawName)} (target <= 1.20)`
    )
  }

  /**
   * Spawn to ready and RSS at rest, each proxy started BENCH_STARTUP_RUNS times (default 7) on the targets' CPU: this
   * proxy (ready at its "listening" line, production log settings), raw node:http + undici and bare @fastify/http-proxy
   * (ready at their port line). RSS is read 1 s after ready and, all of a run's processes left at rest together, again
   * IDLE_SECONDS after the last was ready.
   */
  async function startupAndFootprint () {
    const runs = Number(process.env.BENCH_STARTUP_RUNS ?? 7)
    const dir = fs.mkdtempSync(path.join(work, 'startup-'))
    const imageEnv = imageMemoryEnv()
    const imageName = (name) => `${name}, ${Object.entries(imageEnv).map(([key, value]) => `${key}=${value}`).join(' ')}`
    let tracingBaselineSkipped = TRACING_BASELINE === 'off' ? 'skipped (BENCH_TRACING_BASELINE=off)' : undefined
    /** One per proxy kind: they are alive together while they rest (state-dir-lock.ts allows one proxy each). */
    const stateDir = (name) => {
      const made = path.join(dir, `state-${name}`)
      fs.mkdirSync(made, { recursive: true })
      return made
    }
    const kinds = [
      {
        name: proxyName,
        args: ['dist/main.js'],
        // A state directory of its own: the proxy of the rounds above still holds the one beside the credentials file
        // (a second proxy on a state directory is refused, src/fs/state-dir-lock.ts).
        env: { ...proxyEnv, M2M_PROXY_PORT: '0', M2M_PROXY_ADMIN_PORT: '0', M2M_PROXY_STATE_DIR: stateDir('off') },
        ready: /"msg":"listening"/
      },
      {
        name: `${proxyName}, tracing on`,
        args: ['dist/main.js'],
        // An OTLP endpoint that nobody answers: the SDK, its exporter and the instrumentations loaded and started; at
        // rest no span is sent.
        env: {
          ...proxyEnv,
          M2M_PROXY_PORT: '0',
          M2M_PROXY_ADMIN_PORT: '0',
          M2M_PROXY_STATE_DIR: stateDir('on'),
          OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9'
        },
        ready: /"msg":"listening"/
      },
      ...tracingBaselineKinds(),
      { name: rawName, args: ['bench/raw-proxy.mjs', String(upstream.port), '0'], env: {}, ready: /^\d+\n/ },
      { name: bareName, args: ['bench/bare-proxy.mjs', String(upstream.port), '0'], env: {}, ready: /^\d+\n/ },
      // As the image runs them: the Dockerfile's MALLOC_* settings, for this proxy and, the same way, the raw one.
      {
        name: imageName(proxyName),
        args: ['dist/main.js'],
        env: { ...proxyEnv, ...imageEnv, M2M_PROXY_PORT: '0', M2M_PROXY_ADMIN_PORT: '0', M2M_PROXY_STATE_DIR: stateDir('image') },
        ready: /"msg":"listening"/
      },
      { name: imageName(rawName), args: ['bench/raw-proxy.mjs', String(upstream.port), '0'], env: imageEnv, ready: /^\d+\n/ }
    ]
    /** The proxy before OpenTelemetry, when it can be built here (its dist/main.js, started like this one). */
    function tracingBaselineKinds () {
      if (TRACING_BASELINE === 'off') return []
      const built = buildCommit(TRACING_BASELINE, { bundle: true })
      if (typeof built === 'string') {
        tracingBaselineSkipped = `${TRACING_BASELINE} cannot be built here: ${built}`
        return []
      }
      return [{
        name: `before tracing (${TRACING_BASELINE})`,
        args: [path.join(built.dir, 'dist/main.js')],
        env: { ...proxyEnv, M2M_PROXY_PORT: '0', M2M_PROXY_ADMIN_PORT: '0', M2M_PROXY_STATE_DIR: stateDir('before') },
        ready: /"msg":"listening"/
      }]
    }
    const figures = new Map(kinds.map((kind) => [kind.name, { startMs: [], rssMiB: [], idleMiB: [] }]))
    for (let run = 0; run < runs; run++) {
      const resting = []
      for (const kind of kinds) {
        const started = performance.now()
        const child = spawn(
          ...onCpus(
            TARGET_CPUS,
            process.execPath,
            kind.args.map((arg) => (arg.startsWith('dist/') || arg.startsWith('bench/') ? path.join(ROOT, arg) : arg))
          ),
          {
            cwd: dir,
            env: { PATH: process.env.PATH, ...kind.env },
            stdio: ['ignore', 'pipe', 'ignore']
          }
        )
        await new Promise((resolve, reject) => {
          let output = ''
          child.stdout.on('data', (chunk) => {
            output += chunk.toString()
            if (kind.ready.test(output)) resolve()
          })
          child.once('exit', (code) => reject(new Error(`${kind.name} exited with ${code} before it was ready`)))
        })
        figures.get(kind.name).startMs.push(performance.now() - started)
        child.stdout.resume()
        await sleep(1000)
        figures.get(kind.name).rssMiB.push(rssMiB(child.pid))
        resting.push({ kind, child, readyAt: performance.now() - 1000 })
      }
      // Left at rest together, then read again, once the last started has rested IDLE_SECONDS.
      if (IDLE_SECONDS > 0) await sleep(Math.max(0, resting.at(-1).readyAt + IDLE_SECONDS * 1000 - performance.now()))
      for (const { kind, child } of resting) {
        if (IDLE_SECONDS > 0) figures.get(kind.name).idleMiB.push(rssMiB(child.pid))
        child.kill('SIGKILL')
        await new Promise((resolve) => child.once('exit', resolve))
      }
    }
    const out = [
      '',
      `Start-up and footprint (${runs} starts each, medians; spawn to ready, RSS 1 s later and, idle, ${IDLE_SECONDS} s later):`,
      '',
      '| process | spawn to ready ms | RSS at rest MiB | RSS idle MiB |',
      '|---|---:|---:|---:|'
    ]
    // BENCH_IDLE_SECONDS=0 skips the idle reading: its cells say so instead of NaN.
    const idleOf = (figure) => (figure.idleMiB.length === 0 ? undefined : median(figure.idleMiB))
    const idleCell = (figure) => idleOf(figure)?.toFixed(1) ?? 'not read'
    for (const kind of kinds) {
      const figure = figures.get(kind.name)
      out.push(
        `| ${kind.name} | ${median(figure.startMs).toFixed(0)} | ${median(figure.rssMiB).toFixed(1)} | ${idleCell(figure)} |`
      )
    }
    const ours = figures.get(proxyName)
    const rawFigures = figures.get(rawName)
    const ratios = (a, b) =>
      `start-up ${(median(a.startMs) / median(b.startMs)).toFixed(2)}, RSS at rest ${(median(a.rssMiB) / median(b.rssMiB)).toFixed(2)}, ` +
      (IDLE_SECONDS > 0 ? `idle ${(idleOf(a) / idleOf(b)).toFixed(2)}` : 'idle not read (BENCH_IDLE_SECONDS=0)')
    out.push(
      '',
      `this proxy / raw: ${ratios(ours, rawFigures)} (targets: start-up <= 2, RSS <= 1.2)`,
      `as the image runs them (${Object.keys(imageEnv).join(', ')}), this proxy / raw: ` +
        `${ratios(figures.get(imageName(proxyName)), figures.get(imageName(rawName)))} (targets: start-up <= 2, RSS <= 1.2)`,
      `tracing on / off: ${ratios(figures.get(`${proxyName}, tracing on`), ours)} (what turning it on costs)`
    )
    const before = figures.get(`before tracing (${TRACING_BASELINE})`)
    out.push(
      before === undefined
        ? `tracing off / before tracing: ${tracingBaselineSkipped}`
        : `tracing off / before tracing (${TRACING_BASELINE}): ${ratios(ours, before)} (target: 1.00 within the run's noise)`
    )
    return out
  }

  /**
   * An earlier commit built in the work folder (tsc, and with `bundle` its esbuild bundle too, as `npm run build`
   * makes dist/main.js); a reason string when it cannot be.
   */
  function buildCommit (commit, { bundle = false } = {}) {
    if (spawnSync('git', ['-C', ROOT, 'cat-file', '-e', `${commit}^{commit}`]).status !== 0) {
      return `commit ${commit} is not in this clone (a shallow clone?)`
    }
    const sameLock =
      spawnSync('git', ['-C', ROOT, 'diff', '--quiet', commit, 'HEAD', '--', 'package-lock.json']).status === 0
    const dir = path.join(work, `build-${commit}`)
    if (fs.existsSync(path.join(dir, 'dist/main.js'))) return { dir }
    fs.mkdirSync(dir)
    const archive = spawnSync('sh', ['-c', `git -C "${ROOT}" archive "${commit}" | tar -x -C "${dir}"`], {
      stdio: 'inherit'
    })
    if (archive.status !== 0) return 'git archive failed'
    if (sameLock) fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'))
    else {
      // Its own dependencies, from npm's cache where they are all there, else what is missing from the registry (a new
      // machine); the bench, unlike the tests, may fetch.
      const install = (mode) =>
        spawnSync('npm', ['ci', mode, '--ignore-scripts', '--no-audit', '--no-fund'], { cwd: dir, stdio: 'inherit' })
          .status === 0
      if (!install('--offline') && !install('--prefer-offline')) {
        return "its package-lock.json differs from this checkout's and npm ci could not install it"
      }
    }
    // Since the type check moved out of `npm run build` (tsconfig.build.json gone), its build is `npm run build` too.
    const built = bundle || !fs.existsSync(path.join(dir, 'tsconfig.build.json'))
      ? spawnSync('npm', ['run', '--silent', 'build'], { cwd: dir, stdio: 'inherit' })
      : spawnSync(process.execPath, [path.join(dir, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], {
        cwd: dir,
        stdio: 'inherit'
      })
    return built.status === 0 ? { dir } : 'its build failed'
  }

  // This proxy (default settings: admission, the upstream gate and the byte budgets on the hot path) against the
  // baseline build, both loaded at the same time in each round so that the shared machine's changes of speed hit both
  // alike.
  async function baselineComparison () {
    if (BASELINE === 'off') return ['', 'baseline comparison: skipped (BENCH_BASELINE=off)']
    const baseline = buildCommit(BASELINE)
    if (typeof baseline === 'string') {
      return ['', `baseline comparison: skipped, ${BASELINE} cannot be built here: ${baseline}`]
    }
    // Two new processes, started and warmed up alike: reusing the proxy of the rounds above for one side gave it a 10%
    // handicap against a copy of itself (an A/A run, BENCH_BASELINE=HEAD).
    const currentProxy = await startProxy(proxyEnv, 'proxy-current')
    const baselineProxy = await startProxy(proxyEnv, 'proxy-baseline', baseline.dir)
    const pairNow = [
      {
        name: `this proxy (${spawnSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout.trim()})`,
        port: currentProxy.port,
        pid: currentProxy.child.pid,
        cpuPids: [currentProxy.child.pid],
        logFile: currentProxy.logFile
      },
      {
        name: `baseline ${BASELINE}`,
        port: baselineProxy.port,
        pid: baselineProxy.child.pid,
        cpuPids: [baselineProxy.child.pid],
        logFile: baselineProxy.logFile
      }
    ]
    for (const target of pairNow) rss[target.pid] = []
    for (const method of ['GET', 'POST']) for (const target of pairNow) await load(target.port, method) // warm-up
    const runs = pairNow.map(() => ({ GET: [], POST: [] }))
    for (let round = 0; round < BASELINE_ROUNDS; round++) {
      for (const method of ['GET', 'POST']) {
        const results = await Promise.all(
          pairNow.map((target) => measured(target, method, `baseline side by side ${round + 1}`))
        )
        results.forEach((result, index) => runs[index][method].push(result))
      }
    }
    const out = [
      '',
      `The queue's cost on the hot path: this proxy against ${BASELINE} (before admission, the upstream gate and the byte budgets), side by side, ${BASELINE_ROUNDS} rounds, medians:`,
      '',
      '| build | GET req/s | GET p99 ms | GET CPU µs/req | POST req/s | POST p99 ms | POST CPU µs/req | errors |',
      '|---|---:|---:|---:|---:|---:|---:|---:|'
    ]
    pairNow.forEach((target, index) => {
      const medians = ['GET', 'POST'].map((method) => mediansOf(runs[index][method]))
      out.push(
        `| ${target.name} | ${medians.map((row) => `${row.rps.toFixed(0)} | ${row.p99.toFixed(2)} | ${cpu(row.cpu)}`).join(' | ')} | ${medians[0].errors + medians[1].errors} |`
      )
    })
    const ratioOf = (method, figure) =>
      median(runs[0][method].map((run, round) => run[figure] / runs[1][method][round][figure])).toFixed(2)
    out.push(
      '',
      `this proxy / ${BASELINE}, median of the per-round ratios: CPU per request GET ${ratioOf('GET', 'cpuPerRequest')}, POST ${ratioOf('POST', 'cpuPerRequest')} (target <= 1.05); ` +
        `throughput GET ${ratioOf('GET', 'rps')}, POST ${ratioOf('POST', 'rps')}; p99 GET ${ratioOf('GET', 'p99')}, POST ${ratioOf('POST', 'p99')}`
    )
    out.push(
      `RSS after each run: this proxy median ${median(rss[currentProxy.child.pid]).toFixed(1)} MiB; ${BASELINE} median ${median(rss[baselineProxy.child.pid]).toFixed(1)} MiB`
    )
    currentProxy.child.kill('SIGKILL')
    baselineProxy.child.kill('SIGKILL')
    return out
  }

  // Fleet mode against single-process mode: the same build, settings, upstream and load; only M2M_PROXY_REDIS_URL (with
  // a fleet key and a key prefix of this run's own) differs. Each replica keeps the tokens in memory and reads Redis on
  // renewal and notification only, so fleet mode should cost nothing per request. Alternating rounds (the order swapped
  // each round) and side-by-side rounds compare the two; Redis's own records show which commands the fleet proxy sent
  // during the load.
  async function fleetComparison () {
    if (!FLEET) return ['', 'fleet mode: skipped (BENCH_FLEET=off)']
    const problem = await redisProblem(REDIS_URL)
    if (problem !== undefined) {
      return [
        '',
        `fleet mode: skipped, no Redis answers at ${shownUrl(REDIS_URL)} (${problem}); BENCH_REDIS_URL names another one`
      ]
    }
    cleanups.push(async () => {
      const deleted = await deleteKeys(REDIS_URL, FLEET_KEY_PREFIX)
      process.stderr.write(`bench: removed ${deleted} Redis key(s) under ${FLEET_KEY_PREFIX}\n`)
    })
    // Two new processes, started and warmed up alike, so that neither has the other's head start (JIT, heap, log file).
    const singleProxy = await startProxy(proxyEnv, 'proxy-single')
    const fleetProxy = await startProxy(
      {
        ...proxyEnv,
        M2M_PROXY_REDIS_URL: REDIS_URL,
        M2M_PROXY_FLEET_KEY: randomBytes(32).toString('hex'),
        M2M_PROXY_REDIS_KEY_PREFIX: FLEET_KEY_PREFIX
      },
      'proxy-fleet'
    )
    // Each process's mode, from its metrics: only fleet mode has m2m_proxy_fleet_store_up, 1 while its Redis answers.
    const storeUp = async (adminPort) =>
      /^m2m_proxy_fleet_store_up (\S+)/m.exec(await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text())?.[1]
    const [singleUp, fleetUp] = await Promise.all([storeUp(singleProxy.adminPort), storeUp(fleetProxy.adminPort)])
    if (singleUp !== undefined || fleetUp !== '1') {
      throw new Error(
        `fleet bench: expected one proxy in single-process mode and one with its fleet store connected, got m2m_proxy_fleet_store_up ${singleUp} and ${fleetUp}`
      )
    }
    const modes = [singleProxy, fleetProxy].map((instance, index) => ({
      key: ['single', 'fleet'][index],
      row: ['single process', 'fleet mode (Redis)'][index],
      name: `m2m-session-proxy, ${['single', 'fleet'][index]}`,
      port: instance.port,
      pid: instance.child.pid,
      cpuPids: [instance.child.pid],
      logFile: instance.logFile
    }))
    for (const mode of modes) rss[mode.pid] = []
    process.stderr.write(
      `bench: fleet mode against single-process mode, Redis at ${shownUrl(REDIS_URL)}, keys under ${FLEET_KEY_PREFIX}\n`
    )
    for (const method of ['GET', 'POST']) for (const mode of modes) await load(mode.port, method) // warm-up

    let count
    let countProblem
    try {
      count = await startCommandCount(REDIS_URL, fleetProxy.child.pid)
    } catch (error) {
      countProblem = error instanceof Error ? error.message : String(error)
    }
    const oneAfterAnother = { single: { GET: [], POST: [] }, fleet: { GET: [], POST: [] } }
    for (let round = 0; round < FLEET_ROUNDS; round++) {
      for (const method of ['GET', 'POST']) {
        for (const mode of round % 2 === 0 ? modes : [...modes].reverse()) {
          oneAfterAnother[mode.key][method].push(await measured(mode, method, `fleet ${round + 1}`))
        }
      }
    }
    const together = { single: { GET: [], POST: [] }, fleet: { GET: [], POST: [] } }
    for (let round = 0; round < FLEET_SIDE_BY_SIDE_ROUNDS; round++) {
      for (const method of ['GET', 'POST']) {
        const runs = await Promise.all(modes.map((mode) => measured(mode, method, `fleet side by side ${round + 1}`)))
        modes.forEach((mode, index) => together[mode.key][method].push(runs[index]))
      }
    }
    let commands
    try {
      commands = await count?.stop()
    } catch (error) {
      countProblem = error instanceof Error ? error.message : String(error)
    }
    const fleetUpAfter = await storeUp(fleetProxy.adminPort).catch(() => undefined)

    const out = [
      '',
      `Fleet mode against single-process mode (the same proxy, upstream and load; fleet mode adds M2M_PROXY_REDIS_URL=${shownUrl(REDIS_URL)}, a fleet key and a key prefix of this run's own):`
    ]
    const fleetRatios = (runs, method, figure) => {
      const ratios = runs.fleet[method].map((run, round) => run[figure] / runs.single[method][round][figure])
      return {
        median: median(ratios).toFixed(2),
        atLeast: `${ratios.filter((value) => value >= 1).length}/${ratios.length}`
      }
    }
    const ratioLine = (runs, how) => {
      const [getRps, postRps] = ['GET', 'POST'].map((method) => fleetRatios(runs, method, 'rps'))
      const figure = (name) =>
        ['GET', 'POST'].map((method) => `${method} ${fleetRatios(runs, method, name).median}`).join(', ')
      return `fleet / single ${how}, median of the per-round ratios: throughput GET ${getRps.median}, POST ${postRps.median} (rounds with fleet at least level: GET ${getRps.atLeast}, POST ${postRps.atLeast}); p99 ${figure('p99')}; CPU per request ${figure('cpuPerRequest')}`
    }
    if (FLEET_ROUNDS > 0) {
      out.push(
        '',
        `One after the other (${FLEET_ROUNDS} rounds, the order swapped each round, medians):`,
        '',
        '| mode | GET req/s | GET p50 ms | GET p99 ms | GET CPU µs/req | POST req/s | POST p50 ms | POST p99 ms | POST CPU µs/req | errors |',
        '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|'
      )
      for (const mode of modes) {
        const medians = ['GET', 'POST'].map((method) => mediansOf(oneAfterAnother[mode.key][method]))
        out.push(
          `| ${mode.row} | ${medians.map((row) => `${row.rps.toFixed(0)} | ${row.p50.toFixed(2)} | ${row.p99.toFixed(2)} | ${cpu(row.cpu)}`).join(' | ')} | ${medians[0].errors + medians[1].errors} |`
        )
      }
      out.push('', ratioLine(oneAfterAnother, 'one after the other'))
    }
    if (FLEET_SIDE_BY_SIDE_ROUNDS > 0) {
      out.push(
        '',
        `Side by side (both loaded at the same time, ${FLEET_SIDE_BY_SIDE_ROUNDS} rounds, medians):`,
        '',
        '| mode | GET req/s | GET p99 ms | GET CPU µs/req | POST req/s | POST p99 ms | POST CPU µs/req | errors |',
        '|---|---:|---:|---:|---:|---:|---:|---:|'
      )
      for (const mode of modes) {
        const medians = ['GET', 'POST'].map((method) => mediansOf(together[mode.key][method]))
        out.push(
          `| ${mode.row} | ${medians.map((row) => `${row.rps.toFixed(0)} | ${row.p99.toFixed(2)} | ${cpu(row.cpu)}`).join(' | ')} | ${medians[0].errors + medians[1].errors} |`
        )
      }
      out.push('', ratioLine(together, 'side by side'))
    }
    const rssOf = (instance) =>
      `median ${median(rss[instance.child.pid]).toFixed(1)} MiB, max ${Math.max(...rss[instance.child.pid]).toFixed(1)} MiB`
    out.push('', `RSS after each run: single process ${rssOf(singleProxy)}; fleet mode ${rssOf(fleetProxy)}`)
    const fleetRequests = [oneAfterAnother, together]
      .flatMap((runs) => [...runs.fleet.GET, ...runs.fleet.POST])
      .reduce((sum, run) => sum + run.requests, 0)
    if (commands === undefined) {
      out.push('', `Redis commands during the fleet rounds: not counted (${countProblem ?? 'no count'})`)
    } else {
      const proxyTotal = [...commands.proxy.values()].reduce((sum, value) => sum + value, 0)
      out.push(
        '',
        `Redis commands during the fleet rounds (${fleetRequests} requests proxied in fleet mode): the fleet-mode proxy's ${commands.proxyConnections} connection(s) to Redis sent ${describeCommands(commands.proxy)}, ` +
          `${((proxyTotal * 1000) / fleetRequests).toFixed(3)} per 1000 requests (MONITOR, by client connection); the Redis server received ${describeCommands(commands.server)} in all ` +
          `(INFO commandstats; every client of this Redis, without the bench's own INFO); the fleet store was ${fleetUpAfter === '1' ? 'still' : 'NOT'} connected after the rounds (m2m_proxy_fleet_store_up ${fleetUpAfter})`
      )
    }
    return out
  }
  lines.push(...(await startupAndFootprint()))
  lines.push(...(await baselineComparison()))
  lines.push(...(await fleetComparison()))
  // Last, with every other process of the bench stopped: peaks of RSS are what this section measures.
  for (const child of children) child.kill('SIGKILL')
  if (process.env.BENCH_MEMORY !== 'off') lines.push(...(await memorySection()))
  else lines.push('', 'memory: skipped (BENCH_MEMORY=off)')
  process.stdout.write(lines.join('\n') + '\n')
}

try {
  await main()
} finally {
  for (const child of children) {
    if (child.processGroup) process.kill(-child.pid, 'SIGKILL')
    else child.kill('SIGKILL')
  }
  fs.rmSync(work, { recursive: true, force: true })
  if (cleanups.length > 0) await sleep(200) // the killed proxies gone before their keys are removed
  for (const cleanup of cleanups) {
    await cleanup().catch((error) =>
      process.stderr.write(`bench: cleanup failed: ${error instanceof Error ? error.message : String(error)}\n`)
    )
  }
}
