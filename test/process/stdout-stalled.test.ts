// The built proxy with a stdout reader that stalled (a log shipper hung, `| sleep`): the pipe is full and stays full.
// The proxy still exits on SIGTERM within the grace period plus the one second the exit gives a slow reader. Spawned
// with stdio 'pipe', the proxy's stdout is a socket pair in blocking mode, as Docker's or a shell's pipe is; once a
// write waited there for ever, in the exit handler or in libuv's threadpool, and only SIGKILL ended the process.

import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { DEMO_CREDENTIALS } from '../../src/simulator/app.js'
import { startSimulator } from '../helpers/simulator.js'
import { answeredInRounds, startProxyProcess } from '../helpers/process.js'
import { metricValue } from '../helpers/metrics.js'

const GRACE_MS = 1000

t.test('stdout reader stalled: the proxy keeps serving, drops and counts lines, and exits on time on SIGTERM', async (t) => {
  const { simUrl } = await startSimulator(t)
  const dir = t.testdir({ 'credentials.json': JSON.stringify(DEMO_CREDENTIALS) })
  const proxy = await startProxyProcess(
    {
      M2M_PROXY_UPSTREAM: simUrl,
      M2M_PROXY_CREDENTIALS_FILE: 'credentials.json',
      M2M_PROXY_LOG_BUFFER_BYTES: '4096', // production's batches
      M2M_PROXY_LOG_MAX_BUFFERED_BYTES: '16384', // the proxy's own share fills fast
      M2M_PROXY_SHUTDOWN_GRACE_MS: String(GRACE_MS)
    },
    dir,
    undefined,
    // Without tap's instrumentation in the child: it touches process.stdout, which puts the pipe in non-blocking mode
    // and hides the defect this test is about.
    { measured: true }
  )
  t.teardown(() => { proxy.child.kill('SIGKILL') })
  await proxy.waitFor((line) => line.msg === 'logged in to ThingSpace')
  proxy.child.stdout?.pause() // from now on nobody reads: the socket pair's buffers fill, then the proxy's
  // Long paths make long log lines: a few MiB of them, far more than the kernel's buffers (a few hundred KiB) take.
  const echo = `${proxy.proxyUrl}/api/m2m/v1/simulator/echo/${'x'.repeat(6000)}`
  t.equal(await answeredInRounds(echo, 20), 500, 'every request answered while the reader is stalled')
  await sleep(1200) // past the 1 s flush interval: the last batch is handed over too, and does not fit
  const dropped = metricValue(await (await fetch(`${proxy.adminUrl}/metrics`)).text(), 'm2m_proxy_log_lines_dropped_total')
  t.ok(dropped > 0, `${dropped} log lines dropped and counted`)

  const started = Date.now()
  proxy.child.kill('SIGTERM')
  const limitMs = GRACE_MS + 3000 // the grace, the exit's one second for the reader, and slack for a loaded machine
  const exit = await Promise.race([
    proxy.exit.then(({ code, signal }) => ({ code, signal, afterMs: Date.now() - started })),
    sleep(limitMs, 'still running' as const)
  ])
  t.not(exit, 'still running', `exited within ${limitMs} ms of SIGTERM`)
  t.match(exit, { code: 0, signal: null }, 'exit code 0')
  t.comment(`exit ${JSON.stringify(exit)}`)
  // Said on stderr (read here; a stalled stderr would only lose the line): how many lines the stalled reader cost.
  t.match(proxy.stderr, /m2m-session-proxy: \d+ log lines dropped in all: stdout not read for 1 s at exit \(\d+ of them left unwritten then\)/)
  t.notMatch(proxy.stderr, DEMO_CREDENTIALS.password, 'no secret on stderr')
  t.notMatch(proxy.stderr, DEMO_CREDENTIALS.clientSecret, 'no secret on stderr')
})
