// Process edge of `npm start`: configuration, listeners, signals (close-with-grace). Configuration errors exit 1 with
// one line.

import fs from 'node:fs'
import { createConfig } from './config/load.js'
import { ConfigError } from './config/errors.js'
import { loadCredentials } from './credentials/credentials.js'
import { createLogger } from './logging.js'
import closeWithGrace from 'close-with-grace'
import { ListenError, startProxy, type RunningProxy } from './server.js'
import { shutdownBudgetMs } from './app.js'
import { messageOf } from './errors.js'
import { startTracing } from './tracing.js'

function fail (message: string): never {
  process.stderr.write(`m2m-session-proxy: ${message}\n`)
  process.exit(1)
}

async function main (): Promise<void> {
  let config
  let credentials
  try {
    config = createConfig({
      env: process.env,
      readTextFile: (file) => fs.readFileSync(file, 'utf8'),
      cwd: process.cwd()
    })
    credentials = loadCredentials(config.credentialsFile)
  } catch (error) {
    if (error instanceof ConfigError) fail(`configuration error: ${error.message}`)
    throw error
  }
  const logger = createLogger(config.logLevel, {
    bufferBytes: config.logBufferBytes,
    maxBufferedBytes: config.logMaxBufferedBytes,
    format: config.logFormat
  })
  let running: RunningProxy
  try {
    // Before anything listens, so that the first request is traced; loaded only when an OTLP endpoint is set.
    const tracing = await startTracing()
    if (tracing !== undefined) logger.info('OpenTelemetry traces on (OTEL_EXPORTER_OTLP_*)')
    running = await startProxy(config, credentials, logger, undefined, tracing)
  } catch (error) {
    if (error instanceof ConfigError) fail(`configuration error: ${error.message}`)
    if (error instanceof ListenError) fail(`cannot listen: ${error.message}`)
    throw error
  }
  // close-with-grace (Fastify's own): the first SIGTERM, SIGINT or SIGHUP, or an error nothing caught, shuts down
  // gracefully; a second one, or a shutdown past its budget, exits at once with 1. Signals that mean a broken process
  // (SIGSEGV and the like) or that nothing here sends (SIGUSR2, SIGQUIT) keep Node's own handling.
  let fatal: ConfigError | undefined
  const grace = closeWithGrace(
    {
      delay: shutdownBudgetMs(config),
      logger: false,
      skip: ['SIGQUIT', 'SIGILL', 'SIGTRAP', 'SIGABRT', 'SIGBUS', 'SIGFPE', 'SIGSEGV', 'SIGUSR2', 'beforeExit'],
      onSecondSignal: (signal) => {
        logger.warn({ signal }, 'second signal: exiting at once')
      },
      onSecondError: (error) => {
        logger.error({ err: error }, 'another error while shutting down: exiting at once')
      },
      onTimeout: (delayMs) => {
        logger.error({ delayMs }, 'shutdown took too long: exiting')
      }
    },
    async ({ signal, err }) => {
      if (fatal !== undefined) {
        // Requests in flight finish first (bounded by the grace): cut off, an activation ThingSpace is carrying out
        // would leave its client a reset connection, which it may send again.
        await running.app.drain()
        throw fatal // exit code 1
      }
      if (err !== undefined) logger.fatal({ err }, 'unexpected error: shutting down')
      else logger.info({ signal, graceMs: config.shutdownGraceMs }, 'shutting down')
      logger.flush()
      try {
        await running.app.shutdown()
      } catch (error) {
        logger.error({ err: error }, 'shutdown failed')
        throw error
      }
    }
  )
  // A setting that turns out wrong only once used (Redis refusing the URL's password), or the state directory taken
  // over by another proxy: one line, exit 1.
  void running.fatal.then((error) => {
    fatal = error
    logger.fatal({ setting: error.setting }, error.message)
    logger.flush()
    process.stderr.write(`m2m-session-proxy: configuration error: ${error.message}\n`)
    void grace.close()
  })
}

main().catch((error: unknown) => fail(`failed to start: ${messageOf(error)}`))
