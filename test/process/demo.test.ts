// `npm run demo` as a user runs it (dist/demo.js: `npm run build` first): its admin curl works, and its
// temporary directory, which holds a credentials file, is gone after every way it stops.

import t, { type Test } from 'tap'
import { spawn, execFile } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { promisify } from 'node:util'
import { MAIN } from '../helpers/process.js'
import { nodeScript } from '../helpers/uninstrumented.js'

const DEMO = path.resolve(path.dirname(MAIN), 'demo.js')
const execFileAsync = promisify(execFile)

interface Demo {
  /** Resolves with everything written to stdout once the demo's screen text is there. */
  started: Promise<string>
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>
  kill: (signal: NodeJS.Signals) => void
}

/** The demo with every port from the environment (0: free ones) and its temporary directory under `tmp`. */
function runDemo (tmp: string, env: Record<string, string> = {}, args: string[] = []): Demo {
  const child = spawn(...nodeScript(DEMO, args, { coverage: true }), {
    env: {
      PATH: process.env.PATH ?? '',
      TMPDIR: tmp,
      M2M_PROXY_PORT: '0',
      M2M_PROXY_ADMIN_PORT: '0',
      M2M_DEMO_SIMULATOR_PORT: '0',
      ...env
    },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stdout = ''
  let stderr = ''
  let onOutput = (): void => {}
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString()
    onOutput()
  })
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString()
  })
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>(
    (resolve) => {
      child.on('close', (code, signal) => {
        resolve({ code, signal, stdout, stderr })
      })
    }
  )
  const started = new Promise<string>((resolve, reject) => {
    onOutput = () => {
      if (stdout.includes('Ctrl-C stops both.')) resolve(stdout)
    }
    void exit.then(({ code }) => {
      reject(new Error(`the demo exited (${code}) before it started: ${stderr}`))
    })
  })
  started.catch(() => {}) // only awaited when it is expected to start
  return {
    started,
    exit,
    kill: (signal) => {
      child.kill(signal)
    }
  }
}

function demoDirectories (tmp: string): string[] {
  return fs.readdirSync(tmp).filter((name) => name.startsWith('m2m-session-proxy-demo-'))
}

async function busyPort (t: Test): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return (server.address() as net.AddressInfo).port
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  t.test(`the printed admin curl answers 200; after ${signal} the temporary directory is gone`, async (t) => {
    const tmp = t.testdir({})
    const demo = runDemo(tmp)
    t.teardown(() => {
      demo.kill('SIGKILL')
    })
    const screen = await demo.started
    t.equal(demoDirectories(tmp).length, 1, 'one temporary directory while it runs')

    const curl =
      /^ {2}(curl -s -H 'Authorization: Bearer ([0-9a-f]{48})' (http:\/\/127\.0\.0\.1:\d+)\/admin\/session)$/m.exec(
        screen
      )
    t.ok(curl, 'one admin curl printed, with its token')
    const [, , token = '', adminUrl = ''] = curl ?? []
    // As printed, through a shell, when curl is there; otherwise the same request with fetch.
    const hasCurl = await execFileAsync('sh', ['-c', 'command -v curl']).then(
      () => true,
      () => false
    )
    if (hasCurl) {
      const { stdout } = await execFileAsync('sh', ['-c', `${curl?.[1] ?? ''} -w '\\n%{http_code}'`])
      const status = stdout.trim().split('\n').at(-1)
      t.equal(status, '200', 'the printed curl answers 200')
      t.match(JSON.parse(stdout.trim().split('\n').slice(0, -1).join('\n')), { state: 'active' })
    }
    const answer = await fetch(`${adminUrl}/admin/session`, { headers: { authorization: `Bearer ${token}` } })
    t.equal(answer.status, 200)
    t.equal((await fetch(`${adminUrl}/admin/session`)).status, 401, 'the token is required')

    demo.kill(signal)
    const exit = await demo.exit
    t.equal(exit.code, 0, 'exit code 0')
    t.same(demoDirectories(tmp), [], 'temporary directory removed')
    // For a person: pretty lines by default, not JSON.
    const logLines = exit.stdout.split('\n').filter((line) => /^\d\d:\d\d:\d\d\.\d{3} [A-Z]+ +/.test(line))
    t.ok(logLines.some((line) => /^\S+ INFO {2}logged in to ThingSpace {2}component=session$/.test(line)), 'pretty log lines')
    t.notOk(exit.stdout.split('\n').some((line) => line.startsWith('{')), 'no JSON line')
    t.notOk(
      logLines.some((line) => line.includes(token)),
      'the admin token is in no log line'
    )
  })
}

t.test('a port taken: exit 1, and the temporary directory is gone', async (t) => {
  const port = await busyPort(t)
  const base = t.testdir({})
  for (const setting of ['M2M_PROXY_PORT', 'M2M_PROXY_ADMIN_PORT', 'M2M_DEMO_SIMULATOR_PORT']) {
    const tmp = path.join(base, setting)
    fs.mkdirSync(tmp)
    const demo = runDemo(tmp, { [setting]: String(port) })
    const exit = await demo.exit
    t.equal(exit.code, 1, `${setting}: exit code 1`)
    t.match(exit.stderr, String(port), `${setting}: the port is named`)
    t.same(demoDirectories(tmp), [], `${setting}: temporary directory removed`)
  }
})

t.test('--tour: runs by itself: one re-login, no error; an activation\'s callback read back; JSON logs when asked', async (t) => {
  const tmp = t.testdir({})
  const demo = runDemo(tmp, { M2M_PROXY_LOG_FORMAT: 'json' }, ['--tour'])
  t.teardown(() => {
    demo.kill('SIGKILL')
  })
  const exit = await demo.exit
  t.equal(exit.code, 0, exit.stderr)
  const tour = exit.stdout.split('\n').filter((line) => line.startsWith('tour: '))
  t.match(tour, [
    /^tour: 1\. device list through the proxy: 200, \d+ devices \(ThingSpace logins so far: 1\)$/,
    /^tour: 2\. the simulator expired every session/,
    /^tour: 3\. the same call: 200, \d+ devices; the proxy logged in once more \(logins: 2\) and replayed it: no error$/,
    /^tour: one re-login, nothing for the client to do$/,
    /^tour: 4\. an activation through the proxy: 200, requestId [0-9a-f-]{36}$/,
    /^tour: 5\. its result, by callback, read from the proxy: 200, status Success$/,
    /^tour: done: renewed under the client, and the callback loop closed$/
  ])
  const json = exit.stdout.split('\n').filter((line) => line.startsWith('{'))
  t.ok(
    json.some((line) => (JSON.parse(line) as { msg?: string; reason?: string }).reason === 'expired'),
    'JSON lines, "session renewed" for the expiry among them'
  )
  t.same(demoDirectories(tmp), [], 'temporary directory removed')
})

const curlInstalled = await execFileAsync('sh', ['-c', 'command -v curl']).then(
  () => true,
  () => false
)

t.test('the tour as printed: step by step with curl, as a person would', { skip: !curlInstalled && 'no curl' }, async (t) => {
  const tmp = t.testdir({})
  const demo = runDemo(tmp)
  t.teardown(() => {
    demo.kill('SIGKILL')
  })
  const screen = await demo.started
  const steps = [...screen.matchAll(/^ {5}(curl .*)$/gm)].map((match) => match[1] as string)
  t.equal(steps.length, 4, 'four commands: list, expire, list, stats')
  const outputs: string[] = []
  for (const command of steps) outputs.push((await execFileAsync('sh', ['-c', command])).stdout)
  t.match(JSON.parse(outputs[0] ?? ''), { devices: Array }, 'step 1: the device list')
  t.match(JSON.parse(outputs[2] ?? ''), { devices: Array }, 'step 3: the device list again, no error')
  t.match(JSON.parse(outputs[3] ?? ''), { logins: 2, failedLogins: 0 }, 'one re-login')
  demo.kill('SIGINT')
  t.equal((await demo.exit).code, 0)
})
