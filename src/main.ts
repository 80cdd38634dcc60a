// Process edge of `npm start`: configuration, listeners, signals. Configuration errors exit 1 with one line.

import fs from 'node:fs'
import { createConfig } from './config/load.js'
import { ConfigError } from './config/errors.js'
import { loadCredentials } from './credentials/credentials.js'
import { createLogger } from './logging.js'
import { ListenError, startProxy } from './server.js'
import { messageOf } from './errors.js'

function fail (message: string): never {
  process.stderr.write(`m2m-session-proxy: ${message}\n`)
  process.exit(1)
}

async function main (): Promise<void> {
  let config
  let credentials
  try {
    config = createConfig({ env: process.env, readTextFile: (file) => fs.readFileSync(file, 'utf8'), cwd: process.cwd() })
    credentials = loadCredentials(config.credentialsFile)
  } catch (error) {
    if (error instanceof ConfigError) fail(`configuration error: ${error.message}`)
    throw error
  }
  const logger = createLogger(config.logLevel, { bufferBytes: config.logBufferBytes, maxBufferedBytes: config.logMaxBufferedBytes })
  let running
  try {
    running = await startProxy(config, credentials, logger)
  } catch (error) {
    if (error instanceof ConfigError) fail(`configuration error: ${error.message}`)
    if (error instanceof ListenError) fail(`cannot listen: ${error.message}`)
    throw error
  }
  let stopping = false
  const stop = (signal: string): void => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting at once')
      process.exit(1)
    }
    stopping = true
    logger.info({ signal, graceMs: config.shutdownGraceMs }, 'shutting down')
    logger.flush()
    running.shutdown().then(() => process.exit(0), (error: unknown) => {
      logger.error({ err: error }, 'shutdown failed')
      process.exit(1)
    })
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
}

main().catch((error: unknown) => fail(`failed to start: ${messageOf(error)}`))
