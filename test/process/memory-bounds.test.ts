// Memory bounded in bytes (issue 18, items 2 and 3), on the built proxy as the image runs it, default settings: one
// connection pipelining 400 × 1 MB uploads to a slow ThingSpace holds at most M2M_PROXY_BODY_MEMORY_BYTES of bodies,
// and a stdout nobody reads costs dropped lines, not memory. Where a memory cgroup can be made (root), the proxy runs
// in one limited like the Kubernetes example's pod, as Node sizes V8's heap from that limit, and the RSS target (160
// MiB) itself is asserted. Without one V8 sizes its heap by the host and lets garbage pile up: with other test files
// running beside, peaks move by tens of MiB, so only a ceiling well above the target and far below the unbounded growth
// (275 MiB with the bounds lifted) is.
import fs from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import path from 'node:path'
import t, { type Test } from 'tap'
import { DEMO_CREDENTIALS } from '../../src/simulator/app.js'
import { metricValue } from '../helpers/metrics.js'
import { startProxyProcess, type ProxyProcess } from '../helpers/process.js'
import { startStandInUpstream } from '../helpers/stand-in-upstream.js'
import {
  createMemoryCgroup,
  imageMemoryEnv,
  podMemoryLimitMiB,
  RSS_TARGET_MIB,
  rssMiB,
  startSlowUpstream,
  watchRss
} from '../../bench/memory-harness.mjs'

/** Without a limit: far below what the unbounded cases reach (the pipelining one: 275 MiB with the bounds lifted). */
const RSS_CEILING_UNLIMITED_MIB = 240
const cgroup = createMemoryCgroup(podMemoryLimitMiB())
t.teardown(() => cgroup?.remove())
const rssBound =
  cgroup === undefined
    ? {
        mib: RSS_CEILING_UNLIMITED_MIB,
        where: 'no memory limit (no cgroup could be made here): the ceiling, not the target'
      }
    : { mib: RSS_TARGET_MIB, where: `in a ${cgroup.limitMiB} MiB memory cgroup: the target` }
const BODY_BUDGET_BYTES = 32 * 1024 * 1024

async function startProxy (t: Test, upstream: string): Promise<ProxyProcess> {
  const dir = t.testdir({ 'credentials.json': JSON.stringify(DEMO_CREDENTIALS) })
  // MEMORY_TEST_ENV: settings to show that the test fails without a bound (e.g.
  // {"M2M_PROXY_LOG_MAX_BUFFERED_BYTES":"1073741824"}).
  const extra = JSON.parse(process.env.MEMORY_TEST_ENV ?? '{}') as Record<string, string>
  const proxy = await startProxyProcess(
    { M2M_PROXY_UPSTREAM: upstream, M2M_PROXY_CREDENTIALS_FILE: 'credentials.json', ...imageMemoryEnv(), ...extra },
    dir,
    undefined,
    { measured: true, wrap: cgroup?.wrap }
  )
  const pid = proxy.child.pid as number
  t.notMatch(
    fs.readFileSync(`/proc/${pid}/environ`, 'utf8'),
    /NODE_OPTIONS/,
    'the proxy as it runs in production: no test instrumentation'
  )
  if (cgroup !== undefined) {
    t.match(
      fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8'),
      path.basename(cgroup.dir),
      'the proxy runs in the pod-like cgroup'
    )
  }
  // Gone before the cgroup is removed.
  t.teardown(async () => {
    proxy.child.kill('SIGKILL')
    await proxy.exit
  })
  await proxy.waitFor((line) => line.msg === 'logged in to ThingSpace')
  return proxy
}

async function slowUpstream (t: Test): Promise<string> {
  const upstream = await startSlowUpstream()
  t.teardown(upstream.close)
  return upstream.url
}

t.test(
  'one connection pipelining 400 × 1 MB POSTs to a ThingSpace answering in 300 ms: all 400 answered, at most the body budget held',
  async (t) => {
    const proxy = await startProxy(t, await slowUpstream(t))
    const pid = proxy.child.pid as number
    const atRest = rssMiB(pid)
    const stopWatching = watchRss(pid)
    let bodyBytesPeak = 0
    const bodyBytesWatch = setInterval(() => {
      fetch(`${proxy.adminUrl}/metrics`).then(
        async (response) => {
          bodyBytesPeak = Math.max(bodyBytesPeak, metricValue(await response.text(), 'm2m_proxy_request_body_bytes'))
        },
        () => {}
      )
    }, 50)
    const body = Buffer.alloc(1024 * 1024, 'x')
    const head = Buffer.from(
      `POST /api/m2m/v1/devices/actions/list HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: ${body.length}\r\n\r\n`
    )
    const { port } = new URL(proxy.proxyUrl)
    const socket = net.connect(Number(port), '127.0.0.1')
    t.teardown(() => socket.destroy())
    let answers = ''
    let answered = 0
    const allAnswered = new Promise<void>((resolve, reject) => {
      socket.on('data', (chunk: Buffer) => {
        answers += chunk.toString('latin1')
        const statusLines = answers.match(/HTTP\/1\.1 \d{3}/g) ?? []
        answered = statusLines.length
        if (answered >= 400) resolve()
      })
      socket.on('error', reject)
      socket.on('close', () => reject(new Error(`the connection closed after ${answered} answers`)))
    })
    for (let i = 0; i < 400; i++) {
      // Written as fast as the proxy takes them: the kernel's buffers, then the proxy's reading, hold the rest back.
      if (!socket.write(head) || !socket.write(body)) await new Promise((resolve) => socket.once('drain', resolve))
    }
    await allAnswered
    clearInterval(bodyBytesWatch)
    const peak = stopWatching()
    const statuses = answers.match(/HTTP\/1\.1 (\d{3})/g) ?? []
    t.equal(
      statuses.filter((line) => line.endsWith('200')).length,
      400,
      'every request answered 200, in order, on the one connection'
    )
    t.ok(
      bodyBytesPeak > 0 && bodyBytesPeak <= BODY_BUDGET_BYTES,
      `at most ${(bodyBytesPeak / 1048576).toFixed(1)} MiB of bodies held (M2M_PROXY_BODY_MEMORY_BYTES: 32 MiB)`
    )
    t.ok(
      peak < rssBound.mib,
      `peak RSS ${peak.toFixed(0)} MiB < ${rssBound.mib} MiB, ${rssBound.where} (at rest ${atRest.toFixed(0)} MiB, 400 MB sent)`
    )
  }
)

t.test(
  'nobody reading stdout, default log level, 12,000 requests with 6 KB paths (75 MB of log lines): lines dropped and counted, not held',
  async (t) => {
    // A ThingSpace answering each call at once with its path, uncompressed: the simulator's Fastify, gzip and request
    // log, in this test's process, cost more CPU than the proxy under test, which is what is measured.
    const upstream = await startStandInUpstream(t, (request, _body, response) => {
      response.setHeader('content-type', 'application/json')
      response.end(JSON.stringify({ path: request.url }))
    })
    const proxy = await startProxy(t, upstream.url)
    const pid = proxy.child.pid as number
    // the pipe fills (64 KiB), then the proxy's buffer (M2M_PROXY_LOG_MAX_BUFFERED_BYTES, 1 MiB)
    proxy.child.stdout?.pause()
    const atRest = rssMiB(pid)
    const stopWatching = watchRss(pid)
    // Each request's log line holds its path (not its query): long ones make the lines nobody reads add up to more than
    // the target.
    const echo = `${proxy.proxyUrl}/api/m2m/v1/simulator/echo/${'q'.repeat(6000)}`
    // Node's HTTP client on 50 kept-alive connections, as fetch would: fetch's streams and abort signals, 12,000 times
    // in this test's process, cost more CPU than the proxy under test.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 50 })
    t.teardown(() => agent.destroy())
    const status = async (): Promise<number> =>
      await new Promise((resolve, reject) => {
        http.get(echo, { agent }, (response) => {
          response.resume().on('end', () => resolve(response.statusCode ?? 0))
        }).on('error', reject)
      })
    let answered = 0
    for (let round = 0; round < 240; round++) {
      const statuses = await Promise.all(Array.from({ length: 50 }, status))
      answered += statuses.filter((status) => status === 200).length
    }
    const peak = stopWatching()
    t.equal(answered, 12_000, 'every request answered while the reader is stuck')
    const dropped = metricValue(
      await (await fetch(`${proxy.adminUrl}/metrics`)).text(),
      'm2m_proxy_log_lines_dropped_total'
    )
    // Held back: at most M2M_PROXY_LOG_MAX_BUFFERED_BYTES (1 MiB, about 170 of these lines); about 11,800 of the 12,000
    // lines were dropped in runs here (with the bound lifted, none, and the RSS passed the target): half is the floor
    // asserted.
    t.ok(dropped > 6000, `${dropped} lines dropped and counted, not held`)
    t.ok(
      peak < rssBound.mib,
      `peak RSS ${peak.toFixed(0)} MiB < ${rssBound.mib} MiB, ${rssBound.where} (at rest ${atRest.toFixed(0)} MiB)`
    )
  }
)
