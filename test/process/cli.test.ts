// The operator's CLI (dist/cli.js, the package's bin) against real proxy processes: every command, the exit codes
// scripts rely on (0 done, 1 refused or not ready, 2 usage or no answer), the address and token from the proxy's own
// settings (environment, M2M_PROXY_CONFIG) or from flags, and the fleet view with three replicas, one killed.

import t, { type Test } from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { execFile } from 'node:child_process'
import { DEMO_ACCOUNT_NAME, DEMO_CREDENTIALS } from '../../src/simulator/app.js'
import { startProxyProcess, type ProxyProcess } from '../helpers/process.js'
import { ADMIN_TOKEN, startSimulator } from '../helpers/simulator.js'
import { ROOT } from '../helpers/root.js'
import { nodeScript } from '../helpers/uninstrumented.js'
import { fleetKeyPrefix, startFleetReplica, stopReplica, until, waitReady } from '../helpers/fleet.js'
import { haveTestRedis } from '../helpers/redis.js'

const CLI = path.join(ROOT, 'dist', 'cli.js')
const HEALTHCHECK = path.join(ROOT, 'dist', 'healthcheck.js')

interface Run {
  code: number
  stdout: string
  stderr: string
}

/** Runs a built script with only `env` (and PATH): nothing of the test's own environment leaks in. */
function runScript (script: string, args: string[], env: Record<string, string>, cwd = ROOT): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      ...nodeScript(script, args, { coverage: true }),
      { cwd, env: { PATH: process.env.PATH ?? '', ...env }, timeout: 20_000 },
      (error, stdout, stderr) => {
        resolve({ code: error === null ? 0 : Number(error.code ?? 1), stdout, stderr })
      }
    )
  })
}

const cli = async (args: string[], env: Record<string, string>, cwd?: string): Promise<Run> =>
  await runScript(CLI, args, env, cwd)

function adminEnv (proxy: ProxyProcess): Record<string, string> {
  return { M2M_PROXY_ADMIN_PORT: new URL(proxy.adminUrl).port, M2M_PROXY_ADMIN_TOKEN: ADMIN_TOKEN }
}

function credentialsDir (t: Test, credentials: Record<string, string> = DEMO_CREDENTIALS): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-cli-'))
  t.teardown(() => { fs.rmSync(dir, { recursive: true, force: true }) })
  fs.writeFileSync(path.join(dir, 'credentials.json'), JSON.stringify(credentials), { mode: 0o600 })
  return dir
}

/** One proxy process on `dir`'s credentials, with the test's admin token; killed in teardown. */
async function startSingleProxy (t: Test, simUrl: string, dir: string): Promise<ProxyProcess> {
  const proxy = await startProxyProcess(
    {
      M2M_PROXY_UPSTREAM: simUrl,
      M2M_PROXY_CREDENTIALS_FILE: path.join(dir, 'credentials.json'),
      M2M_PROXY_ADMIN_TOKEN: ADMIN_TOKEN
    },
    dir
  )
  t.teardown(() => { proxy.child.kill('SIGKILL') })
  return proxy
}

t.test('every command against a running proxy, as a person and as a script reads it', async (t) => {
  const { sim, simUrl } = await startSimulator(t)
  const dir = credentialsDir(t)
  const proxy = await startSingleProxy(t, simUrl, dir)
  await proxy.waitFor((line) => line.msg === 'logged in to ThingSpace')
  const env = adminEnv(proxy)

  const status = await cli(['status'], env)
  t.equal(status.code, 0, 'ready: 0')
  t.match(status.stdout, /^ready: +yes$/m)
  t.match(status.stdout, /^session: +active, logged in (just now|\d+s ago), idle expiry in \d+m/m)
  t.match(status.stdout, /^logins: +1 \(renewals 0\), failed in a row 0 of 2 allowed$/m)
  t.match(status.stdout, /^password: .*scheduled rotation off$/m)
  t.notMatch(status.stdout + status.stderr, ADMIN_TOKEN, 'the token is never printed')

  const json = await cli(['status', '--json'], env)
  const parsed = JSON.parse(json.stdout) as {
    readiness: { ready: boolean }
    session: { logins: number; state: string }
  }
  t.same([parsed.readiness.ready, parsed.session.state, parsed.session.logins], [true, 'active', 1])

  const ended = await cli(['session', 'end'], env)
  t.same([ended.code, ended.stdout.trim()], [0, 'session ended (logged out of ThingSpace)'])
  t.equal(sim.stats.logouts, 1, 'ThingSpace saw the logout')
  t.equal(JSON.parse((await cli(['status', '--json'], env)).stdout).session.state, 'none')
  t.equal((await cli(['session', 'end'], env)).stdout.trim(), 'no session was open')

  const started = await cli(['session', 'start'], env)
  t.equal(started.code, 0)
  t.match(started.stdout, /^session: +active/m)
  t.equal(sim.stats.logins, 2, 'one more login')

  const rotated = await cli(['password', 'rotate'], env)
  t.equal(rotated.code, 0, rotated.stderr)
  t.match(rotated.stdout.trim(), /^password rotated at \d{4}-\d\d-\d\dT.*; a login with it succeeded$/)
  const saved = JSON.parse(fs.readFileSync(path.join(dir, 'credentials.json'), 'utf8')) as { password: string }
  t.not(saved.password, DEMO_CREDENTIALS.password, 'the new password is in the credentials file')
  t.notMatch(rotated.stdout, saved.password, 'and never printed')
  t.equal(sim.stats.passwordResets, 1)

  const reloaded = await cli(['credentials', 'reload'], env)
  t.equal(reloaded.code, 0, reloaded.stderr)
  t.match(reloaded.stdout, /^credentials file read again\nsession: +active/)

  const fleet = await cli(['fleet'], env)
  t.same([fleet.code, fleet.stdout.trim()], [0, 'single-process mode: no fleet (M2M_PROXY_REDIS_URL is not set)'])
  const fleetJson = JSON.parse((await cli(['fleet', '--json'], env)).stdout) as { mode: string; replicas: unknown[] }
  t.same([fleetJson.mode, fleetJson.replicas.length], ['single', 1])

  // Refusals: 1, on stderr, in the proxy's own words.
  const logoutsBefore = sim.stats.logouts
  const wrong = await cli(['session', 'end'], { ...env, M2M_PROXY_ADMIN_TOKEN: 'x'.repeat(32) })
  t.equal(wrong.code, 1, 'a wrong token: refused')
  t.equal(wrong.stderr.trim(), 'refused (HTTP 401 Proxy.Unauthorized): wrong admin token')
  t.equal(wrong.stdout, '')
  t.equal(sim.stats.logouts, logoutsBefore, 'the refused call did nothing')

  // The token from a file given as a flag; the address from the config file the proxy would read.
  const tokenFile = path.join(dir, 'admin-token')
  fs.writeFileSync(tokenFile, `${ADMIN_TOKEN}\n`, { mode: 0o600 })
  const configFile = path.join(dir, 'config.json')
  fs.writeFileSync(configFile, JSON.stringify({ adminPort: Number(env.M2M_PROXY_ADMIN_PORT) }))
  const fromFiles = await cli(['status', '--token-file', tokenFile], { M2M_PROXY_CONFIG: configFile })
  t.equal(fromFiles.code, 0, fromFiles.stderr)
  t.match(fromFiles.stdout, /^logins: /m, 'the token from --token-file was used')
  t.equal((await runScript(HEALTHCHECK, [], { M2M_PROXY_CONFIG: configFile })).code, 0, 'the healthcheck reads the config file')

  const noToken = await cli(['status'], { M2M_PROXY_CONFIG: configFile })
  t.equal(noToken.code, 0, 'status without a token: readiness only')
  t.match(noToken.stdout, /set M2M_PROXY_ADMIN_TOKEN or M2M_PROXY_ADMIN_TOKEN_FILE \(or --token-file\) to see more/)

  proxy.child.kill('SIGTERM')
  await proxy.exit
  const gone = await cli(['status'], env)
  t.equal(gone.code, 2, 'nothing answers: 2')
  t.equal(
    gone.stderr.trim(),
    `m2m-session-proxy: no answer from the admin listener at http://127.0.0.1:${env.M2M_PROXY_ADMIN_PORT}: ECONNREFUSED`
  )
  t.equal((await runScript(HEALTHCHECK, [], { M2M_PROXY_CONFIG: configFile })).code, 1, 'the healthcheck fails too')
})

t.test('callbacks register, list and remove, through the proxy at ThingSpace', async (t) => {
  const { sim, simUrl } = await startSimulator(t)
  const dir = credentialsDir(t)
  const proxy = await startProxyProcess(
    {
      M2M_PROXY_UPSTREAM: simUrl,
      M2M_PROXY_CREDENTIALS_FILE: path.join(dir, 'credentials.json'),
      M2M_PROXY_ADMIN_TOKEN: ADMIN_TOKEN,
      M2M_PROXY_CALLBACK_PORT: '0',
      M2M_PROXY_ACCOUNT_NAME: DEMO_ACCOUNT_NAME
    },
    dir
  )
  t.teardown(() => { proxy.child.kill('SIGKILL') })
  const env = adminEnv(proxy)
  const registered = await cli(['callbacks', 'register', 'CarrierService', 'SMSDelivery', '--url', 'https://cb.example.com/in'], env)
  t.equal(registered.code, 0, registered.stderr)
  t.equal(registered.stdout.trim(), [
    `CarrierService: registered at https://cb.example.com/in/CarrierService (account ${DEMO_ACCOUNT_NAME})`,
    `SMSDelivery: registered at https://cb.example.com/in/SMSDelivery (account ${DEMO_ACCOUNT_NAME})`
  ].join('\n'))
  const made = JSON.parse(fs.readFileSync(path.join(dir, 'callback-credentials.json'), 'utf8')) as { password: string }
  t.notMatch(registered.stdout + registered.stderr, made.password, 'the callback password is never printed')
  const listed = await cli(['callbacks', 'list'], env)
  t.match(listed.stdout, /^CarrierService +https:\/\/cb\.example\.com\/in\/CarrierService$/m)
  t.equal(JSON.parse((await cli(['callbacks', 'list', '--json'], env)).stdout).callbacks.length, 2)
  const removed = await cli(['callbacks', 'remove', 'SMSDelivery'], env)
  t.same([removed.code, removed.stdout.trim()], [0, `SMSDelivery: removed (account ${DEMO_ACCOUNT_NAME})`])
  t.same(sim.callbacks.list(DEMO_ACCOUNT_NAME).map((entry) => entry.name), ['CarrierService'])
  const refused = await cli(['callbacks', 'list', '--account', '9999999999-00001'], env)
  t.equal(refused.code, 1, 'ThingSpace refused: 1')
  t.match(refused.stderr, /^refused \(HTTP 502 Proxy\.UpstreamRefused\): ThingSpace refused to list the callbacks: 400 /)
  const bad = await cli(['callbacks', 'register', 'Pizza'], env)
  t.same([bad.code, bad.stderr.trim()], [1, 'refused (HTTP 400 Proxy.BadRequest): unknown callback service "Pizza"; known: ' +
    'CarrierService, DeviceUsage, ExternalProvisioningChanges, PromoChanges, SMSDelivery, DeviceSuspendStatus, ' +
    'DeviceProvisioningHistory, AlertService, Location, DeviceLocation'])
})

t.test('status of a proxy whose password ThingSpace rejects: 1, and why', async (t) => {
  const { simUrl } = await startSimulator(t)
  const dir = credentialsDir(t, { ...DEMO_CREDENTIALS, password: 'wrong-password-0' })
  const proxy = await startSingleProxy(t, simUrl, dir)
  await until(
    async () => (await (await fetch(`${proxy.adminUrl}/readyz`)).json()).reason === 'credentials-rejected',
    10_000,
    'readiness says credentials-rejected'
  )
  const status = await cli(['status'], adminEnv(proxy))
  t.equal(status.code, 1, 'not ready: 1')
  t.match(status.stdout, /^ready: +no \(credentials-rejected\)$/m)
  t.match(status.stdout, /^logins: +0 \(renewals 0\), failed in a row 1 of 2 allowed$/m)
  const rotate = await cli(['session', 'start'], adminEnv(proxy))
  t.equal(rotate.code, 1, 'a refused action: 1')
  t.match(rotate.stderr, /^refused \(HTTP 503 Proxy\.AuthenticationUnavailable\.CredentialsRejected\): /)
})

t.test('usage mistakes: 2, with the usage; no proxy needed', async (t) => {
  for (const [args, message] of [
    [[], 'no command given'],
    [['sesion', 'end'], 'unknown command "sesion end"'],
    [['status', '--nope'], "Unknown option '--nope'"],
    [['status', '--timeout', '0'], '--timeout must be a number of seconds above 0 and at most 86400 (got "0")'],
    [['status', '--timeout', '1e9'], '--timeout must be a number of seconds above 0 and at most 86400 (got "1e9")'],
    [['status', '--admin-url', 'localhost:9090'], '--admin-url must be an origin such as http://127.0.0.1:9090'],
    [['status', '--admin-url', 'http://ops:s3cret-pw@127.0.0.1:9090'], '--admin-url must not hold a user or password'],
    [['status', 'now'], 'unknown command "status now"'],
    [['callbacks', 'list', 'CarrierService'], 'unknown command "callbacks list CarrierService"'],
    [['status', '--url', 'https://a.example'], '--url is not an option of "status"'],
    [['callbacks', 'remove', '--url', 'https://a.example'], '--url is not an option of "callbacks remove"']
  ] as Array<[string[], string]>) {
    const run = await cli(args, {})
    t.equal(run.code, 2, args.join(' '))
    t.match(run.stderr, message, args.join(' '))
    t.notOk(run.stderr.includes('s3cret-pw'), 'no password echoed')
    t.match(run.stderr, /^usage: m2m-session-proxy <command>/m, 'the usage follows')
  }
  const noToken = await cli(['password', 'rotate'], { M2M_PROXY_ADMIN_PORT: '1' })
  t.equal(noToken.code, 2)
  t.match(noToken.stderr, /"password rotate" needs the admin token: set M2M_PROXY_ADMIN_TOKEN/)
  const badConfig = await cli(['status'], { M2M_PROXY_ADMIN_PORT: 'ninety' })
  t.equal(badConfig.code, 2)
  t.equal(
    badConfig.stderr.trim(),
    'm2m-session-proxy: configuration error: M2M_PROXY_ADMIN_PORT: must be an integer from 0 to 65535 (got "ninety")'
  )
  const help = await cli(['--help'], {})
  t.equal(help.code, 0)
  for (const command of ['status', 'session start', 'session end', 'password rotate', 'credentials reload', 'fleet',
    'callbacks register', 'callbacks list', 'callbacks remove']) {
    t.match(help.stdout, new RegExp(`^  ${command} `, 'm'), `--help lists ${command}`)
  }
  const version = await cli(['--version'], {})
  t.equal(version.stdout.trim(), (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version)
})

t.test('the fleet at a glance: three replicas, one killed is stale, one shut down is gone', async (t) => {
  if (!(await haveTestRedis(t))) return
  const { simUrl } = await startSimulator(t)
  const options = {
    simUrl,
    keyPrefix: fleetKeyPrefix(),
    fleetKey: 'ab'.repeat(32),
    env: { M2M_PROXY_FLEET_HEARTBEAT_MS: '1000' }
  }
  const first = await startFleetReplica(t, options)
  const second = await startFleetReplica(t, options)
  const third = await startFleetReplica(t, options)
  const replicas = [first, second, third]
  for (const replica of replicas) await waitReady(replica)
  const ids = replicas.map((replica) => `${os.hostname()}/${replica.child.pid}`).sort()
  interface View {
    mode: string
    self: string
    lockHolder: string | null
    replicas: Array<{ id: string; stale: boolean; ready: boolean; generation: number | null }>
  }
  const view = async (replica: ProxyProcess): Promise<View> => {
    const run = await cli(['fleet', '--json'], adminEnv(replica))
    if (run.code !== 0) throw new Error(`fleet failed: ${run.stderr}`)
    return JSON.parse(run.stdout) as View
  }
  // A beat is at most one interval behind: the first ones were written while the replicas were starting.
  const allReady = async (): Promise<boolean> => {
    const { replicas } = await view(second)
    return replicas.length === 3 && replicas.every((replica) => replica.ready)
  }
  await until(allReady, 10_000, 'every replica has beaten since it became ready')
  const all = await view(second)
  t.same(all.replicas.map((replica) => replica.id), ids, 'every replica, by host/pid')
  t.same(
    all.replicas.map((replica) => [replica.stale, replica.ready, replica.generation]),
    [[false, true, 1], [false, true, 1], [false, true, 1]]
  )
  t.equal(all.self, `${os.hostname()}/${second.child.pid}`)
  t.equal(all.lockHolder, null, 'nobody logging in')

  await stopReplica(third) // SIGKILL: no goodbye
  const killed = `${os.hostname()}/${third.child.pid}`
  const isStale = async (): Promise<boolean> =>
    (await view(first)).replicas.find((replica) => replica.id === killed)?.stale === true
  await until(isStale, 10_000, 'the killed replica is stale')
  const table = await cli(['fleet'], adminEnv(first))
  t.equal(table.code, 0)
  t.match(table.stdout, /^REPLICA +HOST +STATE +READY +GEN +LAST LOGIN +LAST SEEN/m)
  t.match(table.stdout, new RegExp(`^${killed.replace('.', '\\.')} .* STALE$`, 'm'), 'the killed one is marked stale')
  t.match(table.stdout, new RegExp(`^${os.hostname().replace('.', '\\.')}/${String(first.child.pid)} .*\\(this one\\)$`, 'm'))
  t.match(table.stdout, /^3 replica\(s\); password generation 1; login lock free$/m)
  t.match(
    table.stdout,
    new RegExp(`^${os.hostname().replace('.', '\\.')}/${String(first.child.pid)} +\\S+ +active +yes +1 +(just now|\\d+s ago|\\d+m \\d+s ago) `, 'm'),
    "LAST LOGIN: when the fleet's session was logged in"
  )

  second.child.kill('SIGTERM')
  await second.exit
  const after = await view(first)
  t.notOk(after.replicas.some((replica) => replica.id === `${os.hostname()}/${second.child.pid}`), 'shut down: gone at once')
})

t.test('a replica with another fleet key: readiness fleet-key-mismatch, one clear line, seen from the fleet', async (t) => {
  if (!(await haveTestRedis(t))) return
  const { sim, simUrl } = await startSimulator(t)
  const keyPrefix = fleetKeyPrefix()
  const good = await startFleetReplica(t, { simUrl, keyPrefix, fleetKey: 'ab'.repeat(32) })
  await waitReady(good)
  const stranger = await startFleetReplica(t, { simUrl, keyPrefix, fleetKey: 'cd'.repeat(32) })
  const reason = async (): Promise<unknown> => (await (await fetch(`${stranger.adminUrl}/readyz`)).json()).reason
  await until(async () => (await reason()) === 'fleet-key-mismatch', 10_000, 'readiness says fleet-key-mismatch')
  const status = await cli(['status'], adminEnv(stranger))
  t.equal(status.code, 1)
  t.match(status.stdout, /^ready: +no \(fleet-key-mismatch\)$/m)
  const answer = await fetch(`${stranger.proxyUrl}/api/m2m/v1/devices/actions/list`, { method: 'POST', body: '{}' })
  t.equal(answer.status, 503)
  const body = (await answer.json()) as { errorCode: string; errorMessage: string }
  t.equal(body.errorCode, 'Proxy.AuthenticationUnavailable.FleetKeyMismatch')
  t.match(body.errorMessage, /give every replica the same M2M_PROXY_FLEET_KEY/)
  t.notOk(
    stranger.lines.some((line) => /cannot be reached/.test(String(line.msg))),
    'never called an outage'
  )
  t.equal(sim.stats.logins, 1, 'only the good replica logged in')
  await until(async () => {
    const view = JSON.parse((await cli(['fleet', '--json'], adminEnv(good))).stdout) as { unreadable: number }
    return view.unreadable === 1
  }, 10_000, "the good replica's fleet view counts the stranger's heartbeat as unreadable")
  t.match((await cli(['fleet'], adminEnv(good))).stdout, /1 heartbeat\(s\) could not be opened: a replica with another M2M_PROXY_FLEET_KEY\?/)
})
