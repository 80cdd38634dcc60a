// SIGKILL at random moments of a password rotation never leaves the credentials file empty, truncated or unparsable.

import t, { type Test } from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { DEMO_CREDENTIALS } from '../../src/simulator/app.js'
import { ADMIN_TOKEN, startSimulator } from '../helpers/stack.js'
import { ROOT } from '../helpers/root.js'
import { nodeScript } from '../helpers/uninstrumented.js'

const MAIN = path.join(ROOT, 'dist', 'main.js')
const TRIALS = 24

/**
 * Starts the built proxy and resolves with its admin URL once it has logged in; killed at the end of `t` whatever
 * happens.
 */
function startProxyProcess (t: Test, simUrl: string, dir: string): Promise<{ child: ChildProcess; adminUrl: string }> {
  const child = spawn(...nodeScript(MAIN), {
    cwd: dir,
    env: {
      PATH: process.env.PATH ?? '',
      M2M_PROXY_UPSTREAM: simUrl,
      M2M_PROXY_CREDENTIALS_FILE: 'credentials.json',
      M2M_PROXY_PORT: '0',
      M2M_PROXY_ADMIN_PORT: '0',
      M2M_PROXY_ADMIN_TOKEN: ADMIN_TOKEN
    },
    stdio: ['ignore', 'pipe', 'inherit']
  })
  t.teardown(() => {
    child.kill('SIGKILL')
  })
  return new Promise((resolve, reject) => {
    let output = ''
    let adminUrl: string | undefined
    child.stdout?.on('data', (chunk: Buffer) => {
      output += chunk.toString()
      for (const line of output.split('\n')) {
        if (line.includes('"msg":"listening"')) adminUrl = (JSON.parse(line) as { adminUrl: string }).adminUrl
        if (adminUrl !== undefined && line.includes('logged in to ThingSpace')) {
          child.stdout?.removeAllListeners('data')
          child.stdout?.resume()
          resolve({ child, adminUrl })
          return
        }
      }
    })
    child.on('exit', (code) => reject(new Error(`proxy exited early with ${code}`)))
  })
}

t.test(`SIGKILL during ${TRIALS} rotations: the credentials file always holds a whole, valid document`, async (t) => {
  // Independent trials, a few at a time: each has its own simulator, directory and process.
  t.jobs = 4
  for (let trial = 0; trial < TRIALS; trial++) {
    // Spread the kill over the whole rotation: before the reset, between reset and write, during the write, after.
    const killAfterMs = Math.floor(Math.random() * 30)
    t.test(`trial ${trial}: killed ${killAfterMs} ms after the rotation was asked for`, async (t) => {
      const { sim, simUrl } = await startSimulator(t)
      const original = JSON.stringify({ ...DEMO_CREDENTIALS, note: `trial ${trial}` }, null, 2)
      const dir = t.testdir({ 'credentials.json': original })
      const { child, adminUrl } = await startProxyProcess(t, simUrl, dir)
      const exited = new Promise((resolve) => child.once('exit', resolve))
      fetch(`${adminUrl}/admin/password/rotate`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` }
      }).catch(() => {})
      await sleep(killAfterMs)
      child.kill('SIGKILL')
      await exited
      const file = path.join(dir, 'credentials.json')
      const content = fs.readFileSync(file, 'utf8')
      let document: Record<string, unknown> | undefined
      try {
        document = JSON.parse(content) as Record<string, unknown>
      } catch {
        document = undefined
      }
      t.ok(document !== undefined, `parsable (${content.length} bytes)`)
      t.match(
        document,
        {
          username: DEMO_CREDENTIALS.username,
          clientId: DEMO_CREDENTIALS.clientId,
          clientSecret: DEMO_CREDENTIALS.clientSecret,
          note: `trial ${trial}`
        },
        'every field kept'
      )
      const password = document?.password
      t.ok(password === DEMO_CREDENTIALS.password || password === sim.password, 'the old or the new password, whole')
      // The one window no local write can close: killed after ThingSpace answered, before the file was written.
      if (password === DEMO_CREDENTIALS.password && sim.stats.passwordResets > 0) {
        t.comment('ThingSpace reset the password, the kill came before the file was written')
      }
      if (content !== original) t.equal(fs.statSync(file).mode & 0o777, 0o600, 'a rewritten file is 0600')
    })
  }
})
