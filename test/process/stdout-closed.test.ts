// The built proxy with nobody reading its stdout any more (a log shipper that died, `| tee` interrupted):
// it drops and counts its log lines, keeps serving, and still exits on time.

import t, { type Test } from 'tap'
import { execFileSync, spawn } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { DEMO_CREDENTIALS } from '../../src/simulator/app.js'
import { startSimulator } from '../helpers/simulator.js'
import { answeredInRounds, MAIN, startProxyProcess, type ProxyProcess } from '../helpers/process.js'
import { metricValue } from '../helpers/metrics.js'
import { until } from '../helpers/fleet.js'
import { nodeScript } from '../helpers/uninstrumented.js'

async function startWithSimulator (t: Test, env: Record<string, string> = {}): Promise<ProxyProcess> {
  const { simUrl } = await startSimulator(t)
  const dir = t.testdir({ 'credentials.json': JSON.stringify(DEMO_CREDENTIALS) })
  // The production log buffer (the test helper writes each line at once): these tests are about what is left in it.
  const proxy = await startProxyProcess({ M2M_PROXY_UPSTREAM: simUrl, M2M_PROXY_CREDENTIALS_FILE: 'credentials.json', M2M_PROXY_LOG_BUFFER_BYTES: '4096', ...env }, dir)
  t.teardown(() => { proxy.child.kill('SIGKILL') })
  await proxy.waitFor((line) => line.msg === 'logged in to ThingSpace')
  return proxy
}

/** Resolves with the milliseconds until the process exited, or 'still running' after `limitMs`. */
async function exitWithin (proxy: ProxyProcess, startedAt: number, limitMs: number): Promise<{ code: number | null, afterMs: number } | 'still running'> {
  const exited = proxy.exit.then(({ code }) => ({ code, afterMs: Date.now() - startedAt }))
  return await Promise.race([exited, sleep(limitMs, 'still running' as const, { ref: false })])
}

t.test('stdout reader gone: the proxy keeps serving, counts the dropped lines, exits at once on SIGTERM', async (t) => {
  const proxy = await startWithSimulator(t)
  proxy.child.stdout?.destroy() // the reading end closes: every write to the proxy's stdout fails (EPIPE)
  for (let round = 0; round < 2; round++) {
    for (let index = 0; index < 30; index++) {
      t.equal((await fetch(`${proxy.proxyUrl}/api/m2m/v1/simulator/echo`)).status, 200)
    }
    await sleep(1500) // past the 1 s flush interval: the buffered lines are written, and fail
  }
  const metrics = await (await fetch(`${proxy.adminUrl}/metrics`)).text()
  const dropped = metricValue(metrics, 'm2m_proxy_log_lines_dropped_total')
  t.ok(dropped >= 30, `${dropped} log lines dropped and counted`)
  t.match(proxy.stderr, /stdout .*EPIPE.*log lines are dropped/, 'said once on stderr')
  const started = Date.now()
  proxy.child.kill('SIGTERM')
  const exit = await exitWithin(proxy, started, 5000)
  t.not(exit, 'still running', 'exited within 5 s of SIGTERM (the grace period is 10 s; nothing was in flight)')
  t.match(exit, { code: 0 })
  t.match(proxy.stderr, /\d+ log lines dropped/, 'the total said at exit')
})

t.test('stdout reader gone once the shutdown began: the lines left at exit are dropped, the process exits', async (t) => {
  const proxy = await startWithSimulator(t)
  const started = Date.now()
  proxy.child.kill('SIGTERM')
  await proxy.waitFor((line) => line.msg === 'shutting down') // written: the reader was there until now
  proxy.child.stdout?.destroy()
  const exit = await exitWithin(proxy, started, 5000)
  t.not(exit, 'still running', 'exited within 5 s of SIGTERM (nothing in flight)')
  t.match(exit, { code: 0 })
  // The shutdown's last lines either fail at exit (said on stderr) or were still in an asynchronous write when the
  // process ended (nothing to say): which one depends on timing. Never anything else, never a stack.
  t.match(proxy.stderr, /^(m2m-session-proxy: (stdout failed \(EPIPE\)|\d+ log lines dropped)[^\n]*\n)*$/, 'nothing on stderr but the EPIPE lines')
})

t.test('stdout reader gone in the middle of a drain: the exit waits for the drain only', async (t) => {
  const proxy = await startWithSimulator(t)
  const inFlight = fetch(`${proxy.proxyUrl}/api/m2m/v1/simulator/delay/2000`)
  await until(async () => metricValue(await (await fetch(`${proxy.adminUrl}/metrics`)).text(), 'm2m_proxy_requests_in_flight') >= 1, 5000, 'the request to be in flight')
  const started = Date.now()
  proxy.child.kill('SIGTERM')
  await proxy.waitFor((line) => line.msg === 'shutting down')
  proxy.child.stdout?.destroy()
  t.equal((await inFlight).status, 200, 'the request in flight completed')
  const exit = await exitWithin(proxy, started, 5000)
  t.not(exit, 'still running', 'exited within 5 s of SIGTERM (the drain takes 2 s, the grace period is 10 s)')
  t.match(exit, { code: 0 })
})

// Issue 18, item 3: a reader that falls behind (a full pipe) must not grow the process's memory without bound.
t.test('a slow stdout reader: lines past M2M_PROXY_LOG_MAX_BUFFERED_BYTES are dropped and counted, with one warning when dropping starts and one when it stops', async (t) => {
  const proxy = await startWithSimulator(t, { M2M_PROXY_LOG_MAX_BUFFERED_BYTES: '16384' })
  proxy.child.stdout?.pause() // nobody reads: the pipe fills (64 KiB), then the proxy's buffer
  const echo = `${proxy.proxyUrl}/api/m2m/v1/simulator/echo`
  t.equal(await answeredInRounds(echo, 40), 1000, 'every request answered while the reader is stuck')
  const dropped = metricValue(await (await fetch(`${proxy.adminUrl}/metrics`)).text(), 'm2m_proxy_log_lines_dropped_total')
  t.ok(dropped > 0, `${dropped} lines dropped and counted, not held`)
  proxy.child.stdout?.resume()
  await sleep(1500) // the pipe drains; the next line is kept
  t.equal((await fetch(echo)).status, 200)
  // Usually one episode; two when the paused pipe took one more chunk in the middle and a line fitted (the reader
  // caught up, briefly). Each episode has its two warnings, and their counts add up to the metric's.
  const warnings = (prefix: string): Array<Record<string, unknown>> => proxy.lines.filter((line) => typeof line.msg === 'string' && line.msg.startsWith(prefix))
  const countedInWarnings = (): number => warnings('stdout caught up').reduce((sum, line) => sum + Number(/(\d+) log line/.exec(String(line.msg))?.[1]), 0)
  // Read again now that the reader caught up: the last requests' lines may have been dropped after the first reading.
  const droppedInAll = metricValue(await (await fetch(`${proxy.adminUrl}/metrics`)).text(), 'm2m_proxy_log_lines_dropped_total')
  t.ok(droppedInAll >= dropped, 'the count only grows')
  await proxy.waitFor(() => countedInWarnings() >= droppedInAll)
  t.equal(countedInWarnings(), droppedInAll, 'the stop warnings give the count')
  const started = warnings('stdout is not read fast enough')
  t.ok(started.length >= 1 && started.length === warnings('stdout caught up').length, `one warning when dropping started, one when it stopped, per episode (${started.length})`)
  t.equal(started[0]?.level, 40)
  // Written whole or not at all: a batch that the full pipe took only in part had the rest of its bytes written next.
  const broken = proxy.lines.filter((line) => typeof line.level !== 'number')
  t.same(broken, [], 'every line on stdout whole JSON')
})

// A container runtime hands the proxy a pipe (a FIFO), which takes part of a write when it is nearly full; Node's spawn
// gives a socket pair, which takes a batch whole or not at all. The proxy writes a batch in the call when the pipe
// takes it: what a nearly full pipe did not take must follow, byte for byte, before anything else.
t.test('stdout a pipe that fills and drains again: every line whole', async (t) => {
  const { simUrl } = await startSimulator(t)
  const dir = t.testdir({ 'credentials.json': JSON.stringify(DEMO_CREDENTIALS) })
  const fifo = path.join(dir, 'stdout')
  execFileSync('mkfifo', [fifo])
  // The reading end first (non-blocking: no writer yet), so that opening the writing end does not wait.
  const readEnd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
  const reader = new net.Socket({ fd: readEnd, readable: true })
  const writeEnd = fs.openSync(fifo, fs.constants.O_WRONLY)
  const child = spawn(...nodeScript(MAIN), {
    cwd: dir,
    env: {
      PATH: process.env.PATH ?? '',
      M2M_PROXY_UPSTREAM: simUrl,
      M2M_PROXY_CREDENTIALS_FILE: 'credentials.json',
      M2M_PROXY_PORT: '0',
      M2M_PROXY_ADMIN_PORT: '0',
      M2M_PROXY_LOG_BUFFER_BYTES: '4096', // production's batches
      M2M_PROXY_LOG_MAX_BUFFERED_BYTES: '16384'
    },
    stdio: ['ignore', writeEnd, 'ignore']
  })
  fs.closeSync(writeEnd)
  t.teardown(() => {
    child.kill('SIGKILL')
    reader.destroy()
  })
  let text = ''
  reader.on('data', (chunk: Buffer) => { text += chunk.toString('latin1') }) // bytes as they came: no decoding here
  await until(async () => text.includes('"msg":"logged in to ThingSpace"'), 10_000, 'the proxy to log in')
  const listening = JSON.parse(text.split('\n').find((line) => line.includes('"msg":"listening"')) ?? '{}') as Record<string, string>
  reader.pause() // the pipe fills (64 KiB), then the proxy's own share
  // Lines of about 1 KiB, so that a 4 KiB batch meets a pipe with part of its room left.
  const echo = `${listening.proxyUrl}/api/m2m/v1/simulator/echo/${'x'.repeat(700)}`
  t.equal(await answeredInRounds(echo, 20), 500, 'every request answered while nobody reads')
  reader.resume()
  await sleep(1500) // the pipe drains; the batches held are written
  for (let index = 0; index < 20; index++) t.equal((await fetch(echo)).status, 200)
  const adminUrl = listening.adminUrl ?? ''
  const dropped = metricValue(await (await fetch(`${adminUrl}/metrics`)).text(), 'm2m_proxy_log_lines_dropped_total')
  t.ok(dropped > 0, `${dropped} lines dropped while the pipe was full`)
  await until(async () => text.includes('"msg":"stdout caught up'), 5000, 'the warning that it caught up')
  await sleep(1200) // the last lines' batch, flushed within a second
  const lines = text.split('\n').slice(0, -1)
  const broken = lines.filter((line) => {
    try {
      return typeof (JSON.parse(Buffer.from(line, 'latin1').toString('utf8')) as { level?: unknown }).level !== 'number'
    } catch {
      return true
    }
  })
  t.same(broken, [], `all ${lines.length} lines whole JSON`)
})
