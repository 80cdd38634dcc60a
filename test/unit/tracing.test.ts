// When OpenTelemetry is loaded at all: only with an OTLP endpoint, and not when the standard switches turn it off.

import t from 'tap'
import { startTracing, tracingRequested } from '../../src/tracing.js'
import { shutDownTracing, TRACING_SHUTDOWN_TIMEOUT_MS } from '../../src/core.js'
import { createLogger } from '../../src/logging.js'
import { LogCollector } from '../helpers/stack.js'

t.test('traces only with an endpoint, never when switched off', async (t) => {
  const endpoint = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }
  t.equal(tracingRequested({}), false, 'nothing set: off')
  t.equal(tracingRequested({ OTEL_SERVICE_NAME: 'x' }), false, 'other OTEL_* settings alone: off')
  t.equal(tracingRequested(endpoint), true)
  t.equal(tracingRequested({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://collector:4318/v1/traces' }), true)
  t.equal(tracingRequested({ OTEL_EXPORTER_OTLP_ENDPOINT: '' }), false, 'an empty endpoint: off')
  t.equal(tracingRequested({ ...endpoint, OTEL_SDK_DISABLED: 'true' }), false)
  t.equal(tracingRequested({ ...endpoint, OTEL_TRACES_EXPORTER: 'none' }), false)
  t.equal(await startTracing({}), undefined, 'off: nothing started')
})

t.test('at exit, a collector that hangs or fails costs a warning and at most the timeout, never a failed exit', async (t) => {
  for (const [name, shutdown, warned] of [
    ['answers', async () => {}, false],
    ['fails', async () => { throw new Error('Request timed out') }, true],
    ['hangs', async () => await new Promise<void>(() => {}), true]
  ] as const) {
    const logs = new LogCollector()
    const startedAt = performance.now()
    await shutDownTracing({ shutdown, fastifyPlugin: () => { throw new Error('not used') } }, createLogger('info', { bufferBytes: 0, destination: logs }))
    t.ok(performance.now() - startedAt < TRACING_SHUTDOWN_TIMEOUT_MS + 1000, `${name}: within the timeout`)
    const warnings = logs.entries().filter((entry) => entry.msg === 'the last spans were not sent: the OTLP collector did not take them in time')
    t.equal(warnings.length, warned ? 1 : 0, `${name}: ${warned ? 'a warning' : 'no warning'}`)
  }
})
