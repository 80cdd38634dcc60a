// SIGKILL at random moments of a password rotation never leaves the credentials file empty, truncated or unparsable.

import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { DEMO_CREDENTIALS } from '../../src/simulator/app.js'
import { ADMIN_TOKEN, startSimulator } from '../helpers/simulator.js'
import { startProxyProcess } from '../helpers/process.js'
import { until } from '../helpers/fleet.js'

const TRIALS = 24

t.test(`SIGKILL during ${TRIALS} rotations: the credentials file always holds a whole, valid document`, async (t) => {
  // Independent trials, a few at a time: each has its own simulator, directory and process.
  t.jobs = 4
  for (let trial = 0; trial < TRIALS; trial++) {
    // Spread the kills over the whole rotation. Half are timed from the request: mostly before ThingSpace's reset. The
    // file is written a few milliseconds after the reset, but the reset comes more or less late after the request on a
    // busy machine, so the other half are timed from the reset itself (the simulator runs in this process): between
    // reset and write, during the write, after it.
    const fromReset = trial % 2 === 1
    const killAfterMs = Math.floor(Math.random() * (fromReset ? 12 : 30))
    const moment = `${killAfterMs} ms after ${fromReset ? "ThingSpace's reset" : 'the rotation was asked for'}`
    t.test(`trial ${trial}: killed ${moment}`, async (t) => {
      const { sim, simUrl } = await startSimulator(t)
      const original = JSON.stringify({ ...DEMO_CREDENTIALS, note: `trial ${trial}` }, null, 2)
      const dir = t.testdir({ 'credentials.json': original })
      const { child, adminUrl, exit, waitFor } = await startProxyProcess({
        M2M_PROXY_UPSTREAM: simUrl,
        M2M_PROXY_CREDENTIALS_FILE: 'credentials.json',
        M2M_PROXY_ADMIN_TOKEN: ADMIN_TOKEN
      }, dir)
      t.teardown(() => {
        child.kill('SIGKILL')
      })
      await waitFor((line) => line.msg === 'logged in to ThingSpace')
      fetch(`${adminUrl}/admin/password/rotate`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` }
      }).catch(() => {})
      if (fromReset) await until(() => sim.stats.passwordResets > 0, 10_000, "ThingSpace's reset", 1)
      await sleep(killAfterMs)
      child.kill('SIGKILL')
      await exit
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
