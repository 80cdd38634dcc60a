// The OpenTelemetry SDK, loaded by tracing.ts only when an OTLP endpoint is set: spans exported over OTLP/HTTP (the
// standard OTEL_EXPORTER_OTLP_* settings), a server span per request on the proxy listener (@fastify/otel, which takes
// the client's traceparent as parent), and a client span per upstream call (undici's diagnostics channels, which also
// sends traceparent to ThingSpace). No header is recorded, nor a query (scrubbed before export, below): no token or
// secret can reach an attribute.

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
    traceExporter: scrubbing(new OTLPTraceExporter()),
    instrumentations: [new UndiciInstrumentation(), fastify]
  })
  sdk.start()
  return {
    fastifyPlugin: () => fastify.plugin() as unknown as FastifyPluginCallback,
    shutdown: async () => { await sdk.shutdown() }
  }
}

type SpanExporter = NonNullable<NonNullable<ConstructorParameters<typeof NodeSDK>[0]>['traceExporter']>

/**
 * What the standard instrumentations record beyond codes and flags, taken out before a span leaves: the user agent
 * (a header), and the query of a URL (a client may put a credential there). The path stays.
 */
const DROPPED_ATTRIBUTES = ['url.query', 'user_agent.original', 'http.user_agent']
const URL_ATTRIBUTES = ['url.full', 'url.path', 'http.url', 'http.target']

function scrubbing (inner: SpanExporter): SpanExporter {
  return {
    export: (spans, done) => {
      for (const span of spans) {
        // An ended span's attributes are a plain object, no longer written by anyone.
        const attributes = span.attributes as Record<string, unknown>
        for (const name of DROPPED_ATTRIBUTES) Reflect.deleteProperty(attributes, name)
        for (const name of URL_ATTRIBUTES) {
          const value = attributes[name]
          if (typeof value === 'string' && value.includes('?')) attributes[name] = value.slice(0, value.indexOf('?'))
        }
      }
      inner.export(spans, done)
    },
    shutdown: async () => { await inner.shutdown() },
    forceFlush: async () => { await inner.forceFlush?.() }
  }
}
