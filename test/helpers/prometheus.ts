// What the proxy exposes to Prometheus, and what a PromQL query uses of it: for the tests of the dashboard and the
// alert rules that ship in deploy/.

import type { Registry } from 'prom-client'
import { ProxyMetrics, type MetricSources } from '../../src/metrics.js'

/** Labels Prometheus adds when it scrapes. */
export const SCRAPE_LABELS = new Set(['instance', 'job', 'pod', 'namespace'])

/** A registry with every metric the proxy can expose: fleet mode, throttling, admission, callbacks. */
export function fullRegistry (): Registry {
  const session = {
    snapshot: () => ({ state: 'none', loggedInAt: null, lastUsedAt: null, oauthExpiresAt: null, maxLoginFailures: 2, consecutiveLoginFailures: 0 }),
    fleetStoreConnected: true,
    guardEngaged: false,
    loginAttemptsLeft: 2
  } as unknown as MetricSources['session']
  const metrics = new ProxyMetrics({
    session,
    fleet: true,
    passwordAgeSeconds: () => 1,
    passwordGeneration: () => 1,
    gate: { paused: false, learnedRate: 0 }
  })
  metrics.trackAdmission({ inFlight: 0, queued: 0, bodyBytesHeld: 0, waited: 0 })
  metrics.trackCallbacks({ stats: () => ({ count: 0, bytes: 0, oldestAgeSeconds: 0 }) }, () => 0)
  return metrics.registry as Registry
}

/** Every metric the proxy can expose, with its label names (a histogram as its _bucket, _sum and _count series). */
export function registryMetrics (): Map<string, Set<string>> {
  const registry = fullRegistry()
  const found = new Map<string, Set<string>>()
  for (const metric of registry.getMetricsAsArray()) {
    const named = metric as unknown as { name: string; type?: string; labelNames?: string[]; labelName?: string }
    const labels = new Set(named.labelNames ?? (named.labelName === undefined ? [] : [named.labelName]))
    const isHistogram = named.type === 'histogram' || (metric as { constructor: { name: string } }).constructor.name === 'Histogram'
    if (isHistogram) {
      found.set(`${named.name}_bucket`, new Set([...labels, 'le']))
      found.set(`${named.name}_sum`, labels)
      found.set(`${named.name}_count`, labels)
    } else {
      found.set(named.name, labels)
    }
  }
  return found
}

/** What a PromQL query uses: its metrics, the labels each selector matches on, the labels it groups by. */
export interface QueryUse {
  metrics: string[]
  /** Per metric, the labels of its `{...}` matchers. */
  matchers: Map<string, string[]>
  /** The labels of `by (...)`, `without (...)`, `on (...)` and `ignoring (...)`. */
  grouping: string[]
}

const labelList = (text: string): string[] => text.split(',').map((label) => label.trim()).filter((label) => label !== '')

export function queryUses (expr: string): QueryUse {
  const matchers = new Map<string, string[]>()
  for (const match of expr.matchAll(/\b((?:m2m_proxy|process|nodejs)_[a-z_]+)\b(?:\{([^}]*)\})?/g)) {
    const metric = match[1] as string
    const labels = labelList(match[2] ?? '').map((matcher) => (matcher.split(/[=!~]/, 1)[0] as string).trim())
    matchers.set(metric, [...new Set([...(matchers.get(metric) ?? []), ...labels])])
  }
  const grouping = [...expr.matchAll(/\b(?:by|without|on|ignoring)\s*\(([^)]*)\)/g)].flatMap((match) => labelList(match[1] as string))
  return { metrics: [...matchers.keys()], matchers, grouping: [...new Set(grouping)] }
}

/**
 * What a query uses that the proxy does not expose: unknown metrics, matchers on labels their metric lacks, grouping
 * labels no metric of the query has (Prometheus's own labels aside).
 */
export function unknownUses (expr: string, known: Map<string, Set<string>>): string[] {
  const { matchers, grouping } = queryUses(expr)
  const problems: string[] = []
  for (const [metric, labels] of matchers) {
    const labelNames = known.get(metric)
    if (labelNames === undefined) {
      problems.push(`no metric ${metric}`)
      continue
    }
    for (const label of labels) {
      if (!SCRAPE_LABELS.has(label) && !labelNames.has(label)) problems.push(`${metric} has no label ${label}`)
    }
  }
  for (const label of grouping) {
    const somewhere = [...matchers.keys()].some((metric) => known.get(metric)?.has(label) === true)
    if (!SCRAPE_LABELS.has(label) && !somewhere) problems.push(`no metric of the query has a label ${label}`)
  }
  return problems
}
