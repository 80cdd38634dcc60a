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
import {
  buildSimulator,
  compressionFromEnv,
  DEMO_ACCOUNT_NAME,
  DEMO_CREDENTIALS,
  type Simulator
} from './simulator/app.js'

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
    M2M_PROXY_ADMIN_TOKEN: adminToken,
    // The callback inbox, registered below with the simulator, which sends its callbacks there (docs/callbacks.md).
    M2M_PROXY_CALLBACK_PORT: process.env.M2M_DEMO_CALLBACK_PORT ?? '0',
    M2M_PROXY_ACCOUNT_NAME: DEMO_ACCOUNT_NAME,
    // For a person at a terminal, unless the environment asks for JSON.
    M2M_PROXY_LOG_FORMAT: process.env.M2M_PROXY_LOG_FORMAT ?? 'pretty',
    // Each line as it happens, between the tour's lines, rather than in 4 KiB batches.
    M2M_PROXY_LOG_BUFFER_BYTES: process.env.M2M_PROXY_LOG_BUFFER_BYTES ?? '0'
  }
  delete env.M2M_PROXY_ADMIN_TOKEN_FILE
  const config = createConfig({ env, readTextFile: (file) => fs.readFileSync(file, 'utf8'), cwd: process.cwd() })
  const running = await startProxy(
    config,
    loadCredentials(credentialsFile),
    createLogger(config.logLevel, {
      bufferBytes: config.logBufferBytes,
      maxBufferedBytes: config.logMaxBufferedBytes,
      format: config.logFormat
    })
  )
  await running.initialLogin
  // What an operator does once with `m2m-session-proxy callbacks register`: here the public URL is the local listener.
  const registered = await fetch(`${running.adminUrl}/admin/callbacks`, {
    method: 'POST',
    headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ url: running.callbackUrl })
  })
  if (registered.status !== 200) throw new Error(`registering the callback inbox failed: ${await registered.text()}`)

  const sim = simulatorUrl
  const activate = `curl -s -X POST ${running.proxyUrl}/api/m2m/v1/devices/actions/activate -H 'Content-Type: application/json' -d '{"devices":[{"deviceIds":[{"id":"990000862471854","kind":"imei"}]}],"servicePlan":"m2m_4G"}'`
  const deviceList = `curl -s -X POST ${running.proxyUrl}/api/m2m/v1/devices/actions/list -H 'Content-Type: application/json' -d '{"accountName":"${DEMO_ACCOUNT_NAME}"}'`
  const adminPort = new URL(running.adminUrl).port
  process.stdout.write(
    [
      '',
      'm2m-session-proxy demo',
      `  ThingSpace simulator  ${sim}   (demo account, no real credentials)`,
      `  proxy                 ${running.proxyUrl}`,
      `  admin                 ${running.adminUrl}/healthz`,
      `  callback inbox        ${running.callbackUrl ?? ''}   (registered with the simulator for CarrierService)`,
      `  credentials and state ${stateDir}`,
      '',
      'A tour (npm run demo -- --tour runs it by itself):',
      '  1. a device list through the proxy; no token needed: it logged in and attaches both tokens',
      `     ${deviceList}`,
      '  2. ThingSpace forgets every session, as after 20 idle minutes',
      `     curl -s -X POST ${sim}/simulator/control/sessions/expire`,
      '  3. the same call again: answered, no error; the log says "session renewed", one login more:',
      `     ${deviceList}`,
      `     curl -s ${sim}/simulator/control/stats`,
      '',
      'Asynchronous requests and their callbacks (docs/callbacks.md): activate a device, then wait for its result',
      `  ${activate}`,
      `  curl -s '${running.proxyUrl}/callbacks/requests/<the requestId>?wait=10'`,
      '',
      'The simulator fails logins on demand (see docs/simulator.md):',
      `  curl -s -X POST ${sim}/simulator/control/logins/fail -H 'Content-Type: application/json' -d '{"count":2,"status":503}'`,
      '',
      'The admin API (docs/admin.md), with a token made for this run only:',
      `  curl -s -H 'Authorization: Bearer ${adminToken}' ${running.adminUrl}/admin/session`,
      `  M2M_PROXY_ADMIN_PORT=${adminPort} M2M_PROXY_ADMIN_TOKEN=${adminToken} node dist/cli.js status`,
      '',
      "For the docs' examples, in another shell:",
      `  export PROXY=${running.proxyUrl} ADMIN=${running.adminUrl} SIMULATOR=${sim} M2M_PROXY_ADMIN_PORT=${adminPort} M2M_PROXY_ADMIN_TOKEN=${adminToken}`,
      '',
      'Ctrl-C stops both.',
      ''
    ].join('\n') + '\n'
  )
  if (process.argv.includes('--tour')) {
    const passed = await runTour(running.proxyUrl, simulator)
    void Promise.allSettled([running.app.close(), simulator.app.close()]).finally(() => {
      process.exit(passed ? 0 : 1)
    })
    return
  }

  stop = (): void => {
    // allSettled never rejects: `void` says nothing is lost.
    void Promise.allSettled([running.app.close(), simulator.app.close()]).finally(() => {
      process.exit(0)
    })
  }
}

/**
 * The tour, done and told: the session expires under a client, which never notices; then an activation's result
 * arrives by callback, without the client running a web server.
 */
async function runTour (proxyUrl: string, simulator: Simulator): Promise<boolean> {
  const say = (line: string): void => {
    process.stdout.write(`tour: ${line}\n`)
  }
  const listDevices = async (): Promise<string> => {
    const answer = await fetch(`${proxyUrl}/api/m2m/v1/devices/actions/list`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ accountName: DEMO_ACCOUNT_NAME })
    })
    const body = (await answer.json()) as { devices?: unknown[] }
    return `${answer.status}, ${Array.isArray(body.devices) ? body.devices.length : 0} devices`
  }
  const first = await listDevices()
  say(`1. device list through the proxy: ${first} (ThingSpace logins so far: ${simulator.stats.logins})`)
  simulator.expireSessions()
  say('2. the simulator expired every session, as 20 idle minutes would')
  const second = await listDevices()
  const logins = simulator.stats.logins
  say(`3. the same call: ${second}; the proxy logged in once more (logins: ${logins}) and replayed it: no error`)
  const renewed = first.startsWith('200,') && second.startsWith('200,') && logins === 2
  say(renewed ? 'one re-login, nothing for the client to do' : 'the re-login did not go as described: see the log above')
  const activation = await fetch(`${proxyUrl}/api/m2m/v1/devices/actions/activate`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ devices: [{ deviceIds: [{ id: '990000862471854', kind: 'imei' }] }], servicePlan: 'm2m_4G' })
  })
  const { requestId } = (await activation.json()) as { requestId?: string }
  say(`4. an activation through the proxy: ${activation.status}, requestId ${String(requestId)}`)
  const result = await fetch(`${proxyUrl}/callbacks/requests/${String(requestId)}?wait=10`)
  type Read = { callbacks: Array<{ body: { status?: string } }> }
  const callbacks = result.status === 200 ? ((await result.json()) as Read).callbacks : []
  const outcome = callbacks[0]?.body.status
  say(`5. its result, by callback, read from the proxy: ${result.status}, status ${String(outcome)}`)
  const passed = renewed && outcome === 'Success'
  say(passed ? 'done: renewed under the client, and the callback loop closed' : 'did not go as described: see the log above')
  return passed
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
