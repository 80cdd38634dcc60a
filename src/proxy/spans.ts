// The proxy's own spans, through the OpenTelemetry API: no-ops unless tracing.ts started the SDK (then children of the
// request's span). Only on the slow paths (a login waited for, a renewal, a wait in the queue or for a throttling
// pause), never on every request. Attributes are codes and flags: never a token.

import { trace, SpanStatusCode, type Attributes } from '@opentelemetry/api'

const tracer = trace.getTracer('m2m-session-proxy')

/** Runs `work` in a span of its own, ended when it settles; a failure marks it. */
export async function inSpan<T> (name: string, attributes: Attributes, work: () => Promise<T>): Promise<T> {
  return await tracer.startActiveSpan(name, { attributes }, async (span) => {
    try {
      return await work()
    } catch (error) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.name : 'error' })
      throw error
    } finally {
      span.end()
    }
  })
}

/**
 * A moment worth seeing in the trace (a replay): a span without duration, since the step it marks goes on in callbacks
 * where the request's span is no longer the active one.
 */
export function markSpan (name: string, attributes: Attributes): void {
  tracer.startSpan(name, { attributes }).end()
}

/** A wait that is over (in the queue, for a throttling pause): a span from when it began to now. */
export function waitedSpan (name: string, waitedMs: number): void {
  tracer.startSpan(name, { startTime: Date.now() - waitedMs }).end()
}
