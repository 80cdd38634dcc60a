// The OpenTelemetry SDK, loaded by tracing.ts only when an OTLP endpoint is set: spans exported over OTLP/HTTP (the
// standard OTEL_EXPORTER_OTLP_* settings), a server span per request on the proxy listener (@fastify/otel, which takes
// the client's traceparent as parent), and a client span per upstream call (undici's diagnostics channels, which also
// sends traceparent to ThingSpace). No header is recorded: no token or secret can reach an attribute.

import { FastifyOtelInstrumentation } from '@fastify/otel'
import { NodeSDK } from '@opentelemetry/sdk-node'
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http'
import { UndiciInstrumentation } from '@opentelemetry/instrumentation-undici'
import type { FastifyPluginCallback } from 'fastify'
import type { Tracing } from './tracing.js'

export function startTracingSdk (env: NodeJS.ProcessEnv): Tracing {
  // Traces only: the proxy's metrics are Prometheus's (GET /metrics), its logs stdout's.
  env.OTEL_METRICS_EXPORTER ??= 'none'
  env.OTEL_LOGS_EXPORTER ??= 'none'
  env.OTEL_SERVICE_NAME ??= 'm2m-session-proxy'
  const fastify = new FastifyOtelInstrumentation({ registerOnInitialization: false })
  const sdk = new NodeSDK({
    traceExporter: new OTLPTraceExporter(),
    instrumentations: [new UndiciInstrumentation(), fastify]
  })
  sdk.start()
  return {
    fastifyPlugin: () => fastify.plugin() as unknown as FastifyPluginCallback,
    shutdown: async () => { await sdk.shutdown() }
  }
}
