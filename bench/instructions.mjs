// `npm run bench:instructions`: CPU instructions per request of this proxy and of bare @fastify/http-proxy,
// counted by valgrind (callgrind). Unlike req/s, the count does not move with the load of a shared machine.
// It leaves out the kernel's share (socket reads and writes, the same for both); needs `apt-get install valgrind`.
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const WARM_UP = Number(process.env.BENCH_WARM_UP ?? 8000) // fewer left to V8's compiler: steadier counts
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 3000)
const PATH = '/api/m2m/v1/devices/actions/list'
const POST_BODY = Buffer.from(JSON.stringify({ accountName: '0000123456-00001', filter: { groupName: 'x'.repeat(940) } }))
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-instructions-'))
const children = []

function startChild (command, args, options = {}) {
  const child = spawn(command, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], ...options })
  children.push(child)
  return child
}

function firstLine (child) {
  return new Promise((resolve, reject) => {
    let output = ''
    child.stdout.on('data', (chunk) => {
      output += chunk.toString()
      if (output.includes('\n')) resolve(output.split('\n')[0])
    })
    child.once('exit', (code) => reject(new Error(`exited with ${code}`)))
  })
}

/** `count` requests over 10 keep-alive connections. */
async function send (port, method, count) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 10 })
  let sent = 0
  let failed = 0
  await new Promise((resolve) => {
    let done = 0
    const next = () => {
      if (sent >= count) return
      sent++
      const request = http.request({ host: '127.0.0.1', port, path: PATH, method, agent, headers: method === 'POST' ? { 'content-type': 'application/json', 'content-length': POST_BODY.length } : {} }, (response) => {
        if (response.statusCode !== 200) failed++
        response.resume()
        response.on('end', () => { if (++done === count) resolve(); else next() })
      })
      request.end(method === 'POST' ? POST_BODY : undefined)
    }
    for (let i = 0; i < 10; i++) next()
  })
  agent.destroy()
  if (failed > 0) throw new Error(`${failed} of ${count} requests failed`)
}

async function waitForPort (port) {
  for (let i = 0; i < 600; i++) {
    const up = await new Promise((resolve) => http.get({ host: '127.0.0.1', port, path: '/' }, (response) => { response.resume(); resolve(true) }).on('error', () => resolve(false)))
    if (up) return
    await sleep(200)
  }
  throw new Error(`nothing answered on port ${port}`)
}

/** Main-thread and all-thread instructions per request, counted from after the warm-up to the exit. */
async function measure (name, args, env, port, method) {
  const dir = fs.mkdtempSync(path.join(work, `${name}-${method}-`))
  const output = fs.openSync(path.join(dir, 'output.log'), 'w') // the proxy's log lines and valgrind's notes
  const child = startChild('valgrind', ['--tool=callgrind', '--separate-threads=yes', `--callgrind-out-file=${dir}/callgrind.out`, process.execPath, ...args], {
    env: { ...process.env, ...env, M2M_PROXY_STATE_DIR: dir },
    stdio: ['ignore', output, output]
  })
  const exited = new Promise((resolve) => child.once('exit', resolve))
  await waitForPort(port)
  await send(port, method, WARM_UP)
  execFileSync('callgrind_control', ['--zero', String(child.pid)], { stdio: 'ignore' })
  await send(port, method, REQUESTS)
  child.kill('SIGINT')
  await exited
  let main = 0
  let all = 0
  for (const file of fs.readdirSync(dir).filter((entry) => entry.startsWith('callgrind.out-'))) {
    const total = Number(/^totals: (\d+)/m.exec(fs.readFileSync(path.join(dir, file), 'utf8'))?.[1] ?? 0)
    all += total
    if (file.endsWith('-01')) main = total
  }
  return { main: main / REQUESTS, all: all / REQUESTS }
}

async function main () {
  if (spawnSync('sh', ['-c', 'command -v valgrind && command -v callgrind_control']).status !== 0) {
    process.stdout.write('bench:instructions skipped: valgrind is not installed (apt-get install valgrind)\n')
    return
  }
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' })
  const upstream = startChild(process.execPath, ['bench/upstream.mjs'])
  const upstreamPort = Number(await firstLine(upstream))
  const credentials = path.join(work, 'credentials.json')
  fs.writeFileSync(credentials, JSON.stringify({ username: 'bench', password: 'bench-password', clientId: 'bench-client', clientSecret: 'bench-secret' }), { mode: 0o600 })
  // SIGINT ends both cleanly, so that callgrind writes its counts.
  const exitOnSigint = path.join(work, 'exit-on-sigint.mjs')
  fs.writeFileSync(exitOnSigint, "process.on('SIGINT', () => process.exit(0))\n")
  const barePort = 20000 + Math.floor(Math.random() * 10000)
  const proxyPort = barePort + 1
  const targets = [
    { name: 'bare @fastify/http-proxy', args: ['--import', exitOnSigint, 'bench/bare-proxy.mjs', String(upstreamPort), String(barePort)], env: {}, port: barePort },
    {
      name: 'm2m-session-proxy (info logs)',
      args: ['dist/main.js'],
      env: { M2M_PROXY_UPSTREAM: `http://127.0.0.1:${upstreamPort}`, M2M_PROXY_CREDENTIALS_FILE: credentials, M2M_PROXY_PORT: String(proxyPort), M2M_PROXY_ADMIN_PORT: String(proxyPort + 1), M2M_PROXY_LOG_LEVEL: 'info' },
      port: proxyPort
    }
  ]
  process.stderr.write(`bench:instructions: ${WARM_UP} warm-up requests, then ${REQUESTS} counted, 10 connections, under callgrind (minutes)\n`)
  const results = {}
  for (const method of ['GET', 'POST']) {
    // The two targets run side by side: instruction counts do not depend on sharing the CPU.
    const counts = await Promise.all(targets.map((target) => measure(target.name.split(' ')[0], target.args, target.env, target.port, method)))
    targets.forEach((target, index) => { (results[target.name] ??= {})[method] = counts[index] })
  }
  const k = (value) => `${(value / 1000).toFixed(0)}k`
  const lines = ['', '| target | GET main thread | GET all threads | POST main thread | POST all threads |', '|---|---:|---:|---:|---:|']
  for (const target of targets) {
    const { GET, POST } = results[target.name]
    lines.push(`| ${target.name} | ${k(GET.main)} | ${k(GET.all)} | ${k(POST.main)} | ${k(POST.all)} |`)
  }
  const [bare, ours] = targets.map((target) => results[target.name])
  lines.push('', `instructions per request, this proxy / bare: GET ${(ours.GET.main / bare.GET.main).toFixed(2)} (main thread), ${(ours.GET.all / bare.GET.all).toFixed(2)} (all threads); POST ${(ours.POST.main / bare.POST.main).toFixed(2)}, ${(ours.POST.all / bare.POST.all).toFixed(2)}`)
  lines.push('(other threads: V8\'s compiler and garbage collector, log writes; their share varies more between runs)')
  process.stdout.write(lines.join('\n') + '\n')
}

try {
  await main()
} finally {
  for (const child of children) child.kill('SIGKILL')
  fs.rmSync(work, { recursive: true, force: true })
}
