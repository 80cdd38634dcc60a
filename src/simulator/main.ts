// `npm run simulator`: runs the ThingSpace simulator over plain HTTP with the demo credentials.
import { buildSimulator, compressionFromEnv, CONTROL_PREFIX, DEMO_ACCOUNT_NAME, DEMO_CREDENTIALS } from './app.js'

const DEFAULT_HOST = '127.0.0.1'
const DEFAULT_PORT = 8443
const DEFAULT_SESSION_IDLE_SECONDS = 1200

function wholeNumberFromEnv (name: string, fallback: number, min: number, max: number): number {
  const text = process.env[name]
  if (text === undefined || text.trim() === '') return fallback
  const value = Number(text)
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new Error(`${name}=${JSON.stringify(text)} is not valid: set it to a whole number from ${min} to ${max}, or unset it for ${fallback}`)
  }
  return value
}

async function main (): Promise<void> {
  const host = process.env.SIMULATOR_HOST?.trim() || DEFAULT_HOST
  const port = wholeNumberFromEnv('SIMULATOR_PORT', DEFAULT_PORT, 0, 65535)
  const sessionIdleSeconds = wholeNumberFromEnv('SIMULATOR_SESSION_IDLE_SECONDS', DEFAULT_SESSION_IDLE_SECONDS, 1, 86_400 * 365)

  const compression = compressionFromEnv(process.env.SIMULATOR_COMPRESSION)

  const simulator = buildSimulator({ ...DEMO_CREDENTIALS, sessionIdleSeconds, compression, logger: false })
  const address = await simulator.app.listen({ host, port })

  console.log(`ThingSpace simulator listening on ${address} (plain HTTP)`)
  console.log(`  OAuth token:  POST ${address}/api/ts/v1/oauth2/token  (Basic ${DEMO_CREDENTIALS.clientId}:${DEMO_CREDENTIALS.clientSecret})`)
  console.log(`  M2M login:    POST ${address}/api/m2m/v1/session/login  {"username":"${DEMO_CREDENTIALS.username}","password":"${DEMO_CREDENTIALS.password}"}`)
  console.log(`  Account:      ${DEMO_ACCOUNT_NAME}`)
  console.log(`  Control:      ${address}${CONTROL_PREFIX}/stats  (unauthenticated; docs/simulator.md)`)
  console.log(`  Session idle expiry: ${sessionIdleSeconds} s. Compression: ${compression ? 'on' : 'off'}. These are demo credentials for the simulator only.`)

  let closing = false
  const stop = (signal: NodeJS.Signals): void => {
    if (closing) return
    closing = true
    console.log(`${signal} received: closing the simulator`)
    simulator.app.close().then(
      () => process.exit(0),
      (error: unknown) => {
        console.error('Simulator did not close cleanly:', error)
        process.exit(1)
      }
    )
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error)
  process.exit(1)
})
