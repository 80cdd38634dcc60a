// The built entry point (`npm start`): bad configuration exits 1 with one line, before listening and before any login.

import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { DEMO_CREDENTIALS } from '../../src/simulator/app.js'
import { startSimulator } from '../helpers/simulator.js'
import { startProxyProcess } from '../helpers/process.js'
import { startStandInUpstream } from '../helpers/stand-in-upstream.js'
import { ROOT } from '../helpers/root.js'
import { nodeScript } from '../helpers/uninstrumented.js'

const MAIN = path.join(ROOT, 'dist', 'main.js')
const DEMO = path.resolve(path.dirname(MAIN), 'demo.js')

interface Exit { code: number | null, stdout: string, stderr: string }

interface RunOptions {
  timeoutMs?: number
  script?: string
  /**
   * The demo's run counts in the coverage report (uninstrumented.ts; the proxy's bundle cannot). Of the runs of a loop
   * that go through the same lines of demo.ts, one is counted.
   */
  coverage?: boolean
}

function runMain (
  env: Record<string, string>,
  cwd: string,
  { timeoutMs = 10_000, script = MAIN, coverage = false }: RunOptions = {}
): Promise<Exit> {
  return new Promise((resolve, reject) => {
    const child = spawn(...nodeScript(script, [], { coverage }), { cwd, env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString() })
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

// Independent cases (each its own simulator, directory and ports), several at a time: two of them wait on the state
// lock's 10 s check, the others mostly on child processes. A deadline raced against an exit is unref'd: a timer left
// running kept the file's process alive up to 30 s after its last test.
t.jobs = 3

if (!fs.existsSync(MAIN)) throw new Error(`${MAIN} is missing: run \`npm run build\` (npm test does)`)

t.test('bad configuration: exit 1, one line naming the setting, no stack trace, no login', async (t) => {
  const { sim, simUrl } = await startSimulator(t)
  const dir = t.testdir({
    'good.json': JSON.stringify(DEMO_CREDENTIALS),
    'malformed.json': '{"username": "demo-user", "password": "s3cret-in-broken-file"',
    'missing-field.json': JSON.stringify({ username: 'u', password: 'p', clientId: 'c' }),
    'unknown-key.json': JSON.stringify({ upstream: simUrl, colour: 'blue' })
  })
  const base = { M2M_PROXY_UPSTREAM: simUrl, M2M_PROXY_PORT: '0', M2M_PROXY_ADMIN_PORT: '0' }
  const cases: Array<{ name: string, env: Record<string, string>, expect: RegExp }> = [
    { name: 'no credentials configured', env: {}, expect: /M2M_PROXY_CREDENTIALS_FILE.*npm run demo/ },
    { name: 'credentials file missing', env: { M2M_PROXY_CREDENTIALS_FILE: 'nope.json' }, expect: /M2M_PROXY_CREDENTIALS_FILE: .*nope\.json does not exist/ },
    { name: 'credentials file malformed', env: { M2M_PROXY_CREDENTIALS_FILE: 'malformed.json' }, expect: /malformed\.json is not valid JSON/ },
    { name: 'credentials field missing', env: { M2M_PROXY_CREDENTIALS_FILE: 'missing-field.json' }, expect: /missing "clientSecret"/ },
    { name: 'bad port', env: { M2M_PROXY_CREDENTIALS_FILE: 'good.json', M2M_PROXY_PORT: 'eighty' }, expect: /M2M_PROXY_PORT: must be an integer from 0 to 65535/ },
    { name: 'unknown key in the config file', env: { M2M_PROXY_CREDENTIALS_FILE: 'good.json', M2M_PROXY_CONFIG: 'unknown-key.json' }, expect: /M2M_PROXY_CONFIG: .*unknown key "colour"/ },
    { name: 'short admin token', env: { M2M_PROXY_CREDENTIALS_FILE: 'good.json', M2M_PROXY_ADMIN_TOKEN: 'short-token' }, expect: /M2M_PROXY_ADMIN_TOKEN: .*at least 24/ },
    { name: 'misspelled variable', env: { M2M_PROXY_CREDENTIALS_FILE: 'good.json', M2M_PROXY_PORTT: '18000' }, expect: /M2M_PROXY_PORTT: unknown variable, did you mean M2M_PROXY_PORT\?/ },
    {
      name: 'Kubernetes service links of a Service "m2m-proxy"',
      env: {
        M2M_PROXY_CREDENTIALS_FILE: 'good.json',
        M2M_PROXY_SERVICE_HOST: '10.0.0.7',
        M2M_PROXY_SERVICE_PORT: '8080',
        M2M_PROXY_PORT: 'tcp://10.0.0.7:8080',
        M2M_PROXY_PORT_8080_TCP: 'tcp://10.0.0.7:8080',
        M2M_PROXY_PORT_8080_TCP_PROTO: 'tcp',
        M2M_PROXY_PORT_8080_TCP_PORT: '8080',
        M2M_PROXY_PORT_8080_TCP_ADDR: '10.0.0.7'
      },
      expect: /M2M_PROXY_PORT: is "tcp:\/\/10\.0\.0\.7:8080", injected by Kubernetes for the Service "m2m-proxy" .*service links.*enableServiceLinks: false.*rename that Service/
    }
  ]
  for (const { name, env, expect } of cases) {
    const result = await runMain({ ...base, ...env }, dir)
    t.equal(result.code, 1, `${name}: exit code 1`)
    const lines = result.stderr.trim().split('\n')
    t.equal(lines.length, 1, `${name}: one line`)
    t.match(result.stderr, expect, name)
    t.notMatch(result.stderr, /\n\s+at /, `${name}: no stack trace`)
    t.notMatch(result.stderr + result.stdout, /s3cret-in-broken-file|short-token/, `${name}: no secret echoed`)
    t.equal(result.stdout, '', `${name}: nothing logged, nothing listened`)
  }
  t.equal(sim.stats.tokenRequests, 0, 'no OAuth request was made')
  t.equal(sim.stats.logins + sim.stats.failedLogins, 0, 'no login was attempted')
})

t.test('good configuration: listens, logs in, stops cleanly on SIGTERM', async (t) => {
  const { sim, simUrl } = await startSimulator(t)
  const dir = t.testdir({ 'credentials.json': JSON.stringify(DEMO_CREDENTIALS) })
  const child = spawn(...nodeScript(MAIN), {
    cwd: dir,
    env: { PATH: process.env.PATH ?? '', M2M_PROXY_UPSTREAM: simUrl, M2M_PROXY_CREDENTIALS_FILE: 'credentials.json', M2M_PROXY_PORT: '0', M2M_PROXY_ADMIN_PORT: '0' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stdout = ''
  const loggedIn = new Promise<void>((resolve) => {
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString()
      if (stdout.includes('logged in to ThingSpace')) resolve()
    })
  })
  await loggedIn
  const listening = stdout.split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, unknown>).find((entry) => entry.msg === 'listening')
  t.match(listening?.proxyUrl, /^http:\/\/127\.0\.0\.1:\d+$/, 'the ephemeral port is logged')
  t.equal(sim.stats.logins, 1)
  const code = await new Promise<number | null>((resolve) => {
    child.on('close', resolve)
    child.kill('SIGTERM')
  })
  t.equal(code, 0)
  t.equal(fs.statSync(path.join(dir, 'login-guard.json')).isFile(), true, 'state kept beside the credentials by default')
})

/** A port on 127.0.0.1 that something else listens on, for the life of the test. */
async function busyPort (t: Test): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return (server.address() as net.AddressInfo).port
}

t.test('a port in use: exit 1, one line naming the setting, the port and the listener', async (t) => {
  const { simUrl } = await startSimulator(t)
  const dir = t.testdir({ 'credentials.json': JSON.stringify(DEMO_CREDENTIALS) })
  const port = await busyPort(t)
  const base = { M2M_PROXY_UPSTREAM: simUrl, M2M_PROXY_CREDENTIALS_FILE: 'credentials.json', M2M_PROXY_PORT: '0', M2M_PROXY_ADMIN_PORT: '0' }
  for (const [setting, listener] of [['M2M_PROXY_ADMIN_PORT', 'admin'], ['M2M_PROXY_PORT', 'proxy']] as const) {
    const result = await runMain({ ...base, [setting]: String(port) }, dir)
    t.equal(result.code, 1, `${setting}: exit code 1`)
    t.equal(result.stderr.trim().split('\n').length, 1, `${setting}: one line`)
    t.match(result.stderr, `${setting} ${port} is in use (the ${listener} listener, on 127.0.0.1)`)
  }
})

t.test('the demo names the busy port too, instead of a raw listen EADDRINUSE', async (t) => {
  const port = await busyPort(t)
  const dir = t.testdir({})
  for (const setting of ['M2M_PROXY_PORT', 'M2M_PROXY_ADMIN_PORT', 'M2M_DEMO_SIMULATOR_PORT']) {
    // The proxy listener's run is the one not counted: the admin listener listens after it, so that the admin run goes
    // through the same lines and more.
    const coverage = setting !== 'M2M_PROXY_PORT'
    const result = await runMain({ M2M_PROXY_PORT: '0', M2M_PROXY_ADMIN_PORT: '0', [setting]: String(port) }, dir, { script: DEMO, coverage })
    t.equal(result.code, 1, `${setting}: exit code 1`)
    t.match(result.stderr, new RegExp(`^m2m-session-proxy demo: cannot listen: ${setting} ${port} is in use \\(the [a-z ]+ listener, on 127\\.0\\.0\\.1\\)`), setting)
    t.notMatch(result.stderr, /listen EADDRINUSE/)
  }
})

t.test('a credentials file readable by group or others: a warning at start-up naming the file and chmod 600', async (t) => {
  const { simUrl } = await startSimulator(t)
  const dir = t.testdir({ 'credentials.json': JSON.stringify(DEMO_CREDENTIALS), 'private.json': JSON.stringify(DEMO_CREDENTIALS) })
  fs.chmodSync(path.join(dir, 'credentials.json'), 0o644)
  fs.chmodSync(path.join(dir, 'private.json'), 0o600)
  for (const [file, warned] of [['credentials.json', true], ['private.json', false]] as const) {
    const proxy = await startProxyProcess({ M2M_PROXY_UPSTREAM: simUrl, M2M_PROXY_CREDENTIALS_FILE: file }, dir)
    await proxy.waitFor((line) => line.msg === 'logged in to ThingSpace')
    const warning = proxy.lines.find((line) => line.level === 40 && /accessible to/.test(String(line.msg)))
    proxy.child.kill('SIGTERM')
    await proxy.exit
    if (!warned) {
      t.equal(warning, undefined, 'no warning for mode 0600')
      continue
    }
    t.match(warning?.msg, `the credentials file ${path.join(dir, file)} is accessible to its group and other users (mode 0644)`)
    t.match(warning?.msg, `chmod 600 ${path.join(dir, file)}`)
    t.notMatch(JSON.stringify(proxy.lines), DEMO_CREDENTIALS.password, 'no secret logged')
  }
})

// Issue 17, item 7: the admin token file and the fleet key file hold secrets too.
t.test('an admin token file or fleet key file readable by group or others: a warning at start-up naming the file, the setting and chmod 600', async (t) => {
  const { simUrl } = await startSimulator(t)
  const dir = t.testdir({
    'credentials.json': JSON.stringify(DEMO_CREDENTIALS),
    'admin-token': 'a'.repeat(32),
    'fleet-key': 'ab'.repeat(32)
  })
  fs.chmodSync(path.join(dir, 'credentials.json'), 0o600)
  fs.chmodSync(path.join(dir, 'admin-token'), 0o640)
  fs.chmodSync(path.join(dir, 'fleet-key'), 0o604)
  const proxy = await startProxyProcess({
    M2M_PROXY_UPSTREAM: simUrl,
    M2M_PROXY_CREDENTIALS_FILE: 'credentials.json',
    M2M_PROXY_ADMIN_TOKEN_FILE: 'admin-token',
    // The key file is read and checked at start-up before the store is used; an unreachable Redis is enough here.
    M2M_PROXY_REDIS_URL: 'redis://127.0.0.1:1',
    M2M_PROXY_FLEET_KEY_FILE: 'fleet-key'
  }, dir)
  await proxy.waitFor((line) => line.setting === 'M2M_PROXY_FLEET_KEY_FILE')
  const warnings = proxy.lines.filter((line) => line.level === 40 && /is accessible to/.test(String(line.msg)))
  proxy.child.kill('SIGKILL')
  await proxy.exit
  t.match(warnings.find((line) => line.setting === 'M2M_PROXY_ADMIN_TOKEN_FILE')?.msg,
    `the file ${path.join(dir, 'admin-token')} is accessible to its group (mode 0640); it holds the admin token: chmod 600 ${path.join(dir, 'admin-token')}`)
  t.match(warnings.find((line) => line.setting === 'M2M_PROXY_FLEET_KEY_FILE')?.msg,
    `the file ${path.join(dir, 'fleet-key')} is accessible to other users (mode 0604); it holds the fleet key: chmod 600 ${path.join(dir, 'fleet-key')}`)
  t.equal(warnings.length, 2, 'not the 0600 credentials file')
  t.notMatch(JSON.stringify(proxy.lines), 'a'.repeat(32), 'no secret logged')
  t.notMatch(JSON.stringify(proxy.lines), 'ab'.repeat(32))
})

t.test('a second proxy on a state directory a live proxy holds: exit 1, one line naming the holder', async (t) => {
  const { sim, simUrl } = await startSimulator(t)
  const dir = t.testdir({ 'credentials.json': JSON.stringify(DEMO_CREDENTIALS) })
  const env = { M2M_PROXY_UPSTREAM: simUrl, M2M_PROXY_CREDENTIALS_FILE: 'credentials.json' }
  const first = await startProxyProcess(env, dir)
  t.teardown(() => { first.child.kill('SIGKILL') })
  await first.waitFor((line) => line.msg === 'logged in to ThingSpace')
  const lock = JSON.parse(fs.readFileSync(path.join(dir, 'proxy.lock'), 'utf8')) as { pid: number }
  t.equal(lock.pid, first.child.pid, 'the lock file names the holder')

  const second = await runMain({ ...env, M2M_PROXY_PORT: '0', M2M_PROXY_ADMIN_PORT: '0' }, dir)
  t.equal(second.code, 1)
  t.equal(second.stderr.trim().split('\n').length, 1, 'one line')
  t.match(
    second.stderr,
    new RegExp(`M2M_PROXY_STATE_DIR: ${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is in use by another m2m-session-proxy \\(pid ${String(first.child.pid)} on `)
  )
  t.match(second.stderr, /give each proxy \(each replica of a fleet\) a state directory of its own/i)
  t.equal(second.stdout, '', 'nothing listened')
  t.equal(sim.stats.logins, 1, 'the second one never logged in')

  // Killed: its lock is left behind, and the next start takes it over.
  first.child.kill('SIGKILL')
  await first.exit
  t.ok(fs.existsSync(path.join(dir, 'proxy.lock')), 'a crash leaves the lock file')
  const next = await startProxyProcess(env, dir)
  t.teardown(() => { next.child.kill('SIGKILL') })
  await next.waitFor((line) => line.msg === 'logged in to ThingSpace')
  next.child.kill('SIGTERM')
  t.equal((await next.exit).code, 0)
  t.notOk(fs.existsSync(path.join(dir, 'proxy.lock')), 'a clean stop removes it')
})

// Another process took the lock (it judged this one gone, or someone started a second proxy after deleting the file):
// two proxies would keep two lockout counts for one account. The holder sees it at its next touch (10 s) and stops.
t.test('a proxy whose state directory lock is taken over stops: exit 1, one line naming the file', async (t) => {
  const { simUrl } = await startSimulator(t)
  const dir = t.testdir({ 'credentials.json': JSON.stringify(DEMO_CREDENTIALS) })
  const proxy = await startProxyProcess({ M2M_PROXY_UPSTREAM: simUrl, M2M_PROXY_CREDENTIALS_FILE: 'credentials.json' }, dir)
  t.teardown(() => { proxy.child.kill('SIGKILL') })
  await proxy.waitFor((line) => line.msg === 'logged in to ThingSpace')
  const file = path.join(dir, 'proxy.lock')
  fs.writeFileSync(file, JSON.stringify({ pid: process.pid, host: 'another-proxy', startedAt: new Date().toISOString() }))
  const exit = await Promise.race([proxy.exit, sleep(30_000, undefined, { ref: false })])
  t.equal(exit?.code, 1, 'stopped')
  t.match(proxy.stderr, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} was taken over by another process`))
  t.match(proxy.stderr, /"host":"another-proxy"/)
  t.ok(fs.existsSync(file), "the other's lock is left in place")
})

// Stopping on a lost lock must not cut off what ThingSpace is carrying out: a client left with a reset connection
// cannot tell whether its activation was done, and may send it again.
t.test('a proxy whose state directory lock is taken over lets requests in flight finish, then stops', async (t) => {
  const received = { activations: 0 }
  let arrived: (response: http.ServerResponse) => void = () => {}
  const held = new Promise<http.ServerResponse>((resolve) => { arrived = resolve })
  const upstream = await startStandInUpstream(t, (_request, _body, response) => {
    received.activations++
    arrived(response) // answered below, once the proxy has seen its lock taken over
  })
  const dir = t.testdir({ 'credentials.json': JSON.stringify(DEMO_CREDENTIALS) })
  const proxy = await startProxyProcess({
    M2M_PROXY_UPSTREAM: upstream.url,
    M2M_PROXY_CREDENTIALS_FILE: 'credentials.json',
    M2M_PROXY_SHUTDOWN_GRACE_MS: '20000'
  }, dir)
  t.teardown(() => { proxy.child.kill('SIGKILL') })
  await proxy.waitFor((line) => line.msg === 'logged in to ThingSpace')
  const answer = new Promise<string>((resolve) => {
    const request = http.request(proxy.proxyUrl + '/api/m2m/v1/devices/actions/activate', {
      method: 'POST',
      headers: { 'content-type': 'application/json' }
    }, (response) => {
      let text = ''
      response.setEncoding('utf8')
      response.on('data', (data: string) => { text += data })
      response.on('end', () => { resolve(`${response.statusCode ?? 0} ${text}`) })
      response.on('error', (error) => { resolve(`error ${String(error)}`) })
    })
    request.on('error', (error: NodeJS.ErrnoException) => { resolve(`error ${error.code ?? String(error)}`) })
    request.end('{"devices":[{"deviceIds":[{"kind":"imei","id":"1"}]}]}')
  })
  const response = await held
  fs.writeFileSync(path.join(dir, 'proxy.lock'), JSON.stringify({ pid: 1, host: 'another-proxy', startedAt: new Date().toISOString() }))
  // Seen at the next touch of the lock (10 s at most): the activation is still in flight when the proxy begins to stop.
  const takenOver = (line: Record<string, unknown>): boolean => /was taken over by another process/.test(String(line.msg))
  await proxy.waitFor((line) => line.level === 60 && takenOver(line), 30_000)
  response.setHeader('content-type', 'application/json')
  response.end('{"requestId":"r-1"}')
  t.match(await answer, /^200 \{"requestId":"r-1"\}/, "the client gets ThingSpace's answer, not a reset connection")
  const exit = await Promise.race([proxy.exit, sleep(30_000, undefined, { ref: false })])
  t.equal(exit?.code, 1, 'then it stops')
  t.match(proxy.stderr, /was taken over by another process/)
  t.equal(received.activations, 1)
})

t.test('Redis refusing the URL for good (a database it lacks, a wrong user or password): exit 1, one line', async (t) => {
  const { sim, simUrl } = await startSimulator(t)
  const dir = t.testdir({ 'credentials.json': JSON.stringify(DEMO_CREDENTIALS) })
  const base = {
    M2M_PROXY_UPSTREAM: simUrl,
    M2M_PROXY_CREDENTIALS_FILE: 'credentials.json',
    M2M_PROXY_PORT: '0',
    M2M_PROXY_ADMIN_PORT: '0',
    M2M_PROXY_FLEET_KEY: 'ab'.repeat(32)
  }
  for (const [url, reason] of [
    ['redis://127.0.0.1:6379/99', /ERR DB index is out of range/],
    ['redis://nobody-here:hunter2-secret@127.0.0.1:6379', /WRONGPASS/]
  ] as const) {
    const result = await runMain({ ...base, M2M_PROXY_REDIS_URL: url }, dir, { timeoutMs: 15_000 })
    t.equal(result.code, 1, `${url}: exit 1`)
    t.equal(result.stderr.trim().split('\n').length, 1, 'one line')
    t.match(result.stderr, /^m2m-session-proxy: configuration error: M2M_PROXY_REDIS_URL: Redis refused this replica \(/)
    t.match(result.stderr, reason)
    t.match(result.stderr, /no retry can fix that; correct the user, password or database number in the URL/)
    t.notMatch(result.stderr + result.stdout, /hunter2-secret/, 'the password is never echoed')
  }
  t.equal(sim.stats.logins + sim.stats.failedLogins, 0, 'no login was attempted')
})
