// OpenTelemetry traces, opt-in through the standard OTEL_* variables: nothing of OpenTelemetry is loaded unless an OTLP
// endpoint is set (so start-up and memory do not move when tracing is off); then tracing-sdk.ts starts the SDK. See
// docs/observability.md.

import type { FastifyPluginCallback } from 'fastify'

export interface Tracing {
  /** Registered first on the proxy listener: a span per request, the incoming traceparent as its parent. */
  fastifyPlugin: () => FastifyPluginCallback
  /** Sends the spans still buffered. */
  shutdown: () => Promise<void>
}

/** Whether the environment asks for traces: an OTLP endpoint, and neither the SDK nor its traces turned off. */
export function tracingRequested (env: NodeJS.ProcessEnv): boolean {
  if (env.OTEL_SDK_DISABLED === 'true' || env.OTEL_TRACES_EXPORTER === 'none') return false
  return (env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? env.OTEL_EXPORTER_OTLP_ENDPOINT ?? '') !== ''
}

/** Starts tracing when the environment asks for it; undefined otherwise (and nothing loaded). */
export async function startTracing (env: NodeJS.ProcessEnv = process.env): Promise<Tracing | undefined> {
  if (!tracingRequested(env)) return undefined
  return (await import('./tracing-sdk.js')).startTracingSdk(env)
}
