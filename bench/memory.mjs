// `npm run bench:memory` (and the last section of `npm run bench`): the proxy's peak RSS, as the image runs it (default
// settings, the Dockerfile's MALLOC_* settings), in issue 18's two worst cases, against the README's target of 160 MiB:
//   pipelining  one connection pipelining 400 × 1 MB POSTs to a ThingSpace answering each 300 ms after its body
//   stuck-log   nobody reads stdout while 12,000 requests with 6 KB paths each write a log line (75 MB of lines)
// Each case runs BENCH_MEMORY_RUNS times (default 3), one process at a time, nothing else loaded by the bench
// meanwhile. The proxy runs in a memory cgroup limited as the Kubernetes example's pod (deploy/kubernetes.yaml, 192Mi),
// where the bench may create one (root, cgroup v1 or a delegated v2 tree): Node sizes V8's heap from that limit, as in
// the pod. Without a limit (a 24 GB host) V8 lets garbage grow for longer and the peaks are 10 to 60 MiB higher; they
// are reported too. BENCH_MEMORY_LIMIT_MIB sets another limit, 0 runs unlimited only. BENCH_MEMORY_NODE=/path/to/node
// runs the proxy (and the simulator) on another Node, e.g. the image's Node 24;
// BENCH_MEMORY_ENV='{"M2M_PROXY_MAX_PIPELINED":"4"}' adds settings (to size them against a pod's limit).
import { spawn, execFileSync } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import {
  createMemoryCgroup,
  imageMemoryEnv,
  podMemoryLimitMiB,
  rssMiB,
  RSS_TARGET_MIB as TARGET_MIB,
  startSlowUpstream,
  watchRss
} from './memory-harness.mjs'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const RUNS = Number(process.env.BENCH_MEMORY_RUNS ?? 3)
const NODE = process.env.BENCH_MEMORY_NODE ?? process.execPath
const EXTRA_ENV = JSON.parse(process.env.BENCH_MEMORY_ENV ?? '{}')
const POD_LIMIT_MIB = Number(process.env.BENCH_MEMORY_LIMIT_MIB ?? podMemoryLimitMiB())
const CREDENTIALS = {
  username: 'demo-user',
  password: 'demo-password-1',
  clientId: 'demo-client-id',
  clientSecret: 'demo-client-secret'
}

function median (values) {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}

/** Starts a child whose stdout announces readiness with a line matching `ready`; resolves with that output so far. */
function startChild (args, env, ready) {
  const [command, commandArgs] = env.cgroup === undefined ? [NODE, args] : env.cgroup.wrap(NODE, args)
  const child = spawn(command, commandArgs, {
    cwd: env.cwd ?? ROOT,
    env: { PATH: process.env.PATH, ...env.vars },
    stdio: ['ignore', 'pipe', 'inherit']
  })
  return new Promise((resolve, reject) => {
    let output = ''
    const onData = (chunk) => {
      output += chunk.toString()
      if (!ready.test(output)) return
      child.stdout.off('data', onData)
      resolve({ child, output })
    }
    child.stdout.on('data', onData)
    child.once('exit', (code) => reject(new Error(`${args.join(' ')} exited with ${code} before it was ready`)))
  })
}

async function startProxy (upstream, cgroup) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-bench-memory-'))
  fs.writeFileSync(path.join(dir, 'credentials.json'), JSON.stringify(CREDENTIALS), { mode: 0o600 })
  const { child, output } = await startChild(
    [path.join(ROOT, 'dist/main.js')],
    {
      cwd: dir,
      cgroup,
      vars: {
        M2M_PROXY_UPSTREAM: upstream,
        M2M_PROXY_CREDENTIALS_FILE: 'credentials.json',
        M2M_PROXY_PORT: '0',
        M2M_PROXY_ADMIN_PORT: '0',
        ...imageMemoryEnv(),
        ...EXTRA_ENV
      }
    },
    /logged in to ThingSpace/
  )
  const listening = JSON.parse(output.split('\n').find((line) => line.includes('"msg":"listening"')))
  return {
    child,
    proxyUrl: listening.proxyUrl,
    adminUrl: listening.adminUrl,
    stop: () => {
      child.kill('SIGKILL')
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }
}

/** Samples the process's RSS every 50 ms while `load` runs; its RSS before and the peak. */
async function measure (pid, load) {
  const rest = rssMiB(pid)
  const stopWatching = watchRss(pid)
  let peak
  try {
    await load()
  } finally {
    peak = stopWatching()
  }
  return { rest, peak }
}

async function pipelining (cgroup) {
  const upstream = await startSlowUpstream()
  const proxy = await startProxy(upstream.url, cgroup)
  try {
    return await measure(proxy.child.pid, async () => {
      const body = Buffer.alloc(1024 * 1024, 'x')
      const head = Buffer.from(
        `POST /api/m2m/v1/devices/actions/list HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: ${body.length}\r\n\r\n`
      )
      const socket = net.connect(Number(new URL(proxy.proxyUrl).port), '127.0.0.1')
      let answers = ''
      const done = new Promise((resolve, reject) => {
        socket.on('data', (chunk) => {
          answers += chunk.toString('latin1')
          if ((answers.match(/HTTP\/1\.1 200/g) ?? []).length >= 400) resolve()
        })
        socket.on('error', reject)
      })
      for (let i = 0; i < 400; i++) {
        if (!socket.write(head) || !socket.write(body)) await new Promise((resolve) => socket.once('drain', resolve))
      }
      await done
      socket.destroy()
    })
  } finally {
    proxy.stop()
    upstream.close()
  }
}

async function stuckLog (cgroup) {
  const { child: simulator, output } = await startChild(
    [path.join(ROOT, 'dist/simulator/main.js')],
    { vars: { SIMULATOR_PORT: '0' } },
    /listening on http:\/\/\S+/
  )
  const simUrl = /listening on (http:\/\/\S+)/.exec(output)[1]
  const proxy = await startProxy(simUrl, cgroup)
  proxy.child.stdout.pause() // nobody reads: the pipe fills, then the proxy's own buffer
  try {
    return await measure(proxy.child.pid, async () => {
      const echo = `${proxy.proxyUrl}/api/m2m/v1/simulator/echo/${'q'.repeat(6000)}`
      for (let round = 0; round < 240; round++) {
        await Promise.all(
          Array.from({ length: 50 }, async () => {
            await (await fetch(echo)).arrayBuffer()
          })
        )
      }
    })
  } finally {
    proxy.stop()
    simulator.kill('SIGKILL')
  }
}

/** The report's lines (markdown). */
export async function memorySection () {
  const nodeVersion = execFileSync(NODE, ['--version'], { encoding: 'utf8' }).trim()
  const cgroup = POD_LIMIT_MIB > 0 ? createMemoryCgroup(POD_LIMIT_MIB) : undefined
  // The target is the pod's: judged in the cgroup where there is one, otherwise (for want of one) without a limit.
  const modes =
    cgroup === undefined
      ? [{ label: 'none', cgroup: undefined, judged: true }]
      : [
          { label: `${POD_LIMIT_MIB} MiB (cgroup)`, cgroup, judged: true },
          { label: 'none (for reference)', cgroup: undefined, judged: false }
        ]
  const lines = [
    '',
    `Peak RSS as the image runs the proxy (Node ${nodeVersion}, ${Object.keys(EXTRA_ENV).length === 0 ? 'default settings' : `settings ${JSON.stringify(EXTRA_ENV)}`}, ${
      Object.entries(imageMemoryEnv())
        .map(([name, value]) => `${name}=${value}`)
        .join(' ') || 'no memory ENV'
    }), ${RUNS} runs each, one at a time; target under ${TARGET_MIB} MiB in a pod limited to ${POD_LIMIT_MIB} MiB${POD_LIMIT_MIB > 0 && cgroup === undefined ? ' (no memory cgroup could be made here: run unlimited, where V8 sizes its heap by the host)' : ''}:`,
    '',
    '| case | memory limit | at rest MiB (median) | peak MiB (median) | peak MiB (max) | target met |',
    '|---|---|---:|---:|---:|---|'
  ]
  try {
    for (const [name, run] of [
      ['400 × 1 MB pipelined on one connection, upstream 300 ms', pipelining],
      ['stdout not read, 12,000 requests with 6 KB paths', stuckLog]
    ]) {
      for (const mode of modes) {
        const results = []
        for (let i = 0; i < RUNS; i++) {
          const result = await run(mode.cgroup)
          process.stderr.write(
            `  memory ${name}, limit ${mode.label}: at rest ${result.rest.toFixed(0)} MiB, peak ${result.peak.toFixed(0)} MiB\n`
          )
          results.push(result)
        }
        const peaks = results.map((result) => result.peak)
        const met = Math.max(...peaks) < TARGET_MIB ? 'yes' : 'NO'
        lines.push(
          `| ${name} | ${mode.label} | ${median(results.map((result) => result.rest)).toFixed(0)} | ${median(peaks).toFixed(0)} | ${Math.max(...peaks).toFixed(0)} | ${mode.judged ? met : `(${met})`} |`
        )
      }
    }
  } finally {
    cgroup?.remove()
  }
  return lines
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' })
  process.stdout.write((await memorySection()).join('\n') + '\n')
}
