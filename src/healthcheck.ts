// Container HEALTHCHECK: exit 0 when the admin listener answers /healthz, 1 otherwise. Used without a shell. The
// address comes from the proxy's own settings (environment, M2M_PROXY_CONFIG file, defaults).

import fs from 'node:fs'
import { resolveAdminEndpoint } from './config/load.js'
import { messageOf } from './errors.js'

try {
  const { url } = resolveAdminEndpoint({
    env: process.env,
    readTextFile: (file) => fs.readFileSync(file, 'utf8'),
    cwd: process.cwd()
  })
  fetch(`${url}/healthz`, { signal: AbortSignal.timeout(3000) })
    .then((response) => process.exit(response.ok ? 0 : 1))
    .catch(() => process.exit(1))
} catch (error) {
  process.stderr.write(`m2m-session-proxy healthcheck: ${messageOf(error)}\n`)
  process.exit(1)
}
