// `npm run demo`: the embedded ThingSpace simulator plus the proxy pointed at it with demo credentials. No account needed.

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createConfig } from './config/load.js'
import { ConfigError } from './config/errors.js'
import { loadCredentials } from './credentials/credentials.js'
import { createLogger } from './logging.js'
import { startProxy } from './server.js'
import { buildSimulator, DEMO_CREDENTIALS } from './simulator/app.js'

async function demo (): Promise<void> {
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-session-proxy-demo-'))
  const credentialsFile = path.join(stateDir, 'credentials.json')
  fs.writeFileSync(credentialsFile, JSON.stringify(DEMO_CREDENTIALS, null, 2) + '\n', { mode: 0o600 })

  const simulator = buildSimulator({ ...DEMO_CREDENTIALS })
  const simulatorPort = Number(process.env.M2M_DEMO_SIMULATOR_PORT ?? 0)
  await simulator.app.listen({ host: '127.0.0.1', port: simulatorPort })
  const address = simulator.app.server.address()
  const simulatorUrl = typeof address === 'object' && address !== null ? `http://127.0.0.1:${address.port}` : String(address)

  const env = { ...process.env, M2M_PROXY_UPSTREAM: simulatorUrl, M2M_PROXY_CREDENTIALS_FILE: credentialsFile }
  const config = createConfig({ env, readTextFile: (file) => fs.readFileSync(file, 'utf8'), cwd: process.cwd() })
  const running = await startProxy(config, loadCredentials(credentialsFile), createLogger(config.logLevel, { bufferBytes: config.logBufferBytes }))
  await running.initialLogin

  process.stdout.write([
    '',
    'm2m-session-proxy demo',
    `  ThingSpace simulator  ${simulatorUrl}   (demo account, no real credentials)`,
    `  proxy                 ${running.proxyUrl}`,
    `  admin                 ${running.adminUrl}/healthz`,
    `  credentials and state ${stateDir}`,
    '',
    'Try it (no token needed: the proxy logs in and attaches both tokens):',
    `  curl -s -X POST ${running.proxyUrl}/api/m2m/v1/devices/actions/list -H 'Content-Type: application/json' -d '{"accountName":"TestAccount-1"}'`,
    '',
    'Ctrl-C stops both.',
    ''
  ].join('\n') + '\n')

  const stop = (): void => {
    Promise.allSettled([running.close(), simulator.app.close()])
      .finally(() => {
        fs.rmSync(stateDir, { recursive: true, force: true })
        process.exit(0)
      })
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
}

demo().catch((error: unknown) => {
  const message = error instanceof ConfigError ? `configuration error: ${error.message}` : error instanceof Error ? error.message : String(error)
  process.stderr.write(`m2m-session-proxy demo: ${message}\n`)
  process.exit(1)
})
