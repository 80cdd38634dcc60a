// The built entry point (`npm start`): bad configuration exits 1 with one line, before listening and before any login.

import t from 'tap'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { DEMO_CREDENTIALS } from '../../src/simulator/app.js'
import { startSimulator } from '../helpers/stack.js'

const MAIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist/main.js')

interface Exit { code: number | null, stdout: string, stderr: string }

function runMain (env: Record<string, string>, cwd: string, timeoutMs = 10_000): Promise<Exit> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN], { cwd, env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
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

t.before(() => {
  if (!fs.existsSync(MAIN)) throw new Error(`${MAIN} is missing: run \`npm run build\` (npm test does)`)
})

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
    { name: 'short admin token', env: { M2M_PROXY_CREDENTIALS_FILE: 'good.json', M2M_PROXY_ADMIN_TOKEN: 'short-token' }, expect: /M2M_PROXY_ADMIN_TOKEN: .*at least 24/ }
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
  const child = spawn(process.execPath, [MAIN], {
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
