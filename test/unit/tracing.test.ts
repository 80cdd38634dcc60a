// When OpenTelemetry is loaded at all: only with an OTLP endpoint, and not when the standard switches turn it off.

import t from 'tap'
import { startTracing, tracingRequested } from '../../src/tracing.js'

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
