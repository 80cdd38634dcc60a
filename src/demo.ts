// `npm run demo`: the embedded ThingSpace simulator plus the proxy pointed at it with demo credentials. No account
// needed.

import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createConfig } from './config/load.js'
import { ConfigError } from './config/errors.js'
import { loadCredentials } from './credentials/credentials.js'
import { createLogger } from './logging.js'
import { ListenError, listenOn, startProxy } from './server.js'
import { buildSimulator, compressionFromEnv, DEMO_ACCOUNT_NAME, DEMO_CREDENTIALS } from './simulator/app.js'

async function demo (): Promise<void> {
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-session-proxy-demo-'))
  // It holds a credentials file: removed on every exit, a start-up failure (a port taken) included.
  process.once('exit', () => {
    fs.rmSync(stateDir, { recursive: true, force: true })
  })
  // Until both are up, a signal just ends the process; a second signal while stopping too. The exit
  // handler above runs either way (a signal without a handler would skip it).
  let stop = (): void => {
    process.exit(1)
  }
  const onSignal = (): void => {
    const current = stop
    stop = () => {
      process.exit(1)
    }
    current()
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  const credentialsFile = path.join(stateDir, 'credentials.json')
  fs.writeFileSync(credentialsFile, JSON.stringify(DEMO_CREDENTIALS, null, 2) + '\n', { mode: 0o600 })

  const simulator = buildSimulator({
    ...DEMO_CREDENTIALS,
    compression: compressionFromEnv(process.env.SIMULATOR_COMPRESSION)
  })
  const simulatorPort = Number(process.env.M2M_DEMO_SIMULATOR_PORT ?? 0)
  await listenOn(simulator.app, {
    host: '127.0.0.1',
    port: simulatorPort,
    listener: 'demo simulator',
    portSetting: 'M2M_DEMO_SIMULATOR_PORT'
  })
  const address = simulator.app.server.address()
  const simulatorUrl =
    typeof address === 'object' && address !== null ? `http://127.0.0.1:${address.port}` : String(address)

  // Made for this run, so that the admin API is on and its curl below works. Printed on the demo's own
  // screen text below, never in a log line: a throwaway for a simulator, gone when the demo stops.
  const adminToken = randomBytes(24).toString('hex')
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    M2M_PROXY_UPSTREAM: simulatorUrl,
    M2M_PROXY_CREDENTIALS_FILE: credentialsFile,
    M2M_PROXY_ADMIN_TOKEN: adminToken
  }
  delete env.M2M_PROXY_ADMIN_TOKEN_FILE
  const config = createConfig({ env, readTextFile: (file) => fs.readFileSync(file, 'utf8'), cwd: process.cwd() })
  const running = await startProxy(
    config,
    loadCredentials(credentialsFile),
    createLogger(config.logLevel, { bufferBytes: config.logBufferBytes, maxBufferedBytes: config.logMaxBufferedBytes })
  )
  await running.initialLogin

  process.stdout.write(
    [
      '',
      'm2m-session-proxy demo',
      `  ThingSpace simulator  ${simulatorUrl}   (demo account, no real credentials)`,
      `  proxy                 ${running.proxyUrl}`,
      `  admin                 ${running.adminUrl}/healthz`,
      `  credentials and state ${stateDir}`,
      '',
      'Try it (no token needed: the proxy logs in and attaches both tokens):',
      `  curl -s -X POST ${running.proxyUrl}/api/m2m/v1/devices/actions/list -H 'Content-Type: application/json' -d '{"accountName":"${DEMO_ACCOUNT_NAME}"}'`,
      '',
      'The admin API (README, "Admin API"), with a token made for this run only:',
      `  curl -s -H 'Authorization: Bearer ${adminToken}' ${running.adminUrl}/admin/session`,
      '',
      'Ctrl-C stops both.',
      ''
    ].join('\n') + '\n'
  )

  stop = (): void => {
    // allSettled never rejects: `void` says nothing is lost.
    void Promise.allSettled([running.app.close(), simulator.app.close()]).finally(() => {
      process.exit(0)
    })
  }
}

demo().catch((error: unknown) => {
  const message =
    error instanceof ConfigError
      ? `configuration error: ${error.message}`
      : error instanceof ListenError
        ? `cannot listen: ${error.message}`
        : error instanceof Error
          ? error.message
          : String(error)
  process.stderr.write(`m2m-session-proxy demo: ${message}\n`)
  process.exit(1)
})
