// The shipped config/example.json stays loadable: every key it sets is a real setting.

import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { createConfig } from '../../src/config/load.js'
import { ROOT } from '../helpers/root.js'

const EXAMPLE = path.join(ROOT, 'config', 'example.json')

t.test('config/example.json loads, and its values win over the defaults', async (t) => {
  const files: Record<string, string> = { [EXAMPLE]: fs.readFileSync(EXAMPLE, 'utf8'), '/run/secrets/m2m-proxy-admin-token': 'x'.repeat(32) + '\n' }
  const config = createConfig({
    env: { M2M_PROXY_CONFIG: EXAMPLE, M2M_PROXY_PORT: '8181' },
    readTextFile: (file) => {
      const content = files[file]
      if (content === undefined) throw Object.assign(new Error('missing'), { code: 'ENOENT' })
      return content
    },
    cwd: '/'
  })
  t.equal(config.credentialsFile, '/var/lib/m2m-session-proxy/credentials.json')
  t.equal(config.stateDir, '/var/lib/m2m-session-proxy')
  t.equal(config.adminToken, 'x'.repeat(32))
  t.equal(config.port, 8181, 'the environment overrides the file')
  t.equal(config.maxLoginFailures, 2)
  t.equal(config.passwordRotationDays, 0)
  t.equal(config.fleet, undefined, 'no Redis URL in the file: single-process mode')
})
