// The Grafana dashboard that ships in deploy/grafana: importable (a datasource input and variable, unique panel ids, a
// place for each panel), and every metric and label its queries use exists in the proxy's registry (Grafana itself
// cannot be installed here, so this is how the dashboard is checked).

import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { ROOT } from '../helpers/root.js'
import { queryUses, registryMetrics, unknownUses } from '../helpers/prometheus.js'

/** Grafana's reference to the dashboard's data source variable. */
const DATASOURCE_VARIABLE = '$' + '{datasource}'

interface Panel {
  id: number
  type: string
  title: string
  gridPos?: { h: number; w: number; x: number; y: number }
  datasource?: { uid?: string }
  targets?: Array<{ expr: string; datasource?: { uid?: string } }>
}

t.test('the Grafana dashboard: importable, a datasource chosen at import, a replica variable', async (t) => {
  const dashboard = JSON.parse(fs.readFileSync(path.join(ROOT, 'deploy/grafana/m2m-session-proxy.json'), 'utf8')) as {
    __inputs: Array<{ type: string; pluginId: string }>
    templating: { list: Array<{ name: string; type: string; query?: unknown }> }
    panels: Panel[]
    uid: string
  }
  t.match(dashboard.__inputs, [{ type: 'datasource', pluginId: 'prometheus' }])
  t.match(dashboard.templating.list.map((variable) => [variable.name, variable.type]), [['datasource', 'datasource'], ['instance', 'query']])
  const ids = dashboard.panels.map((panel) => panel.id)
  t.equal(new Set(ids).size, ids.length, 'panel ids are unique')
  const drawn = dashboard.panels.filter((panel) => panel.type !== 'row')
  t.ok(drawn.length >= 15, `${drawn.length} panels`)
  for (const panel of drawn) {
    t.ok(panel.gridPos !== undefined && panel.gridPos.x + panel.gridPos.w <= 24, `${panel.title}: placed within the grid`)
    t.equal(panel.datasource?.uid, DATASOURCE_VARIABLE, `${panel.title}: the chosen data source`)
    t.ok((panel.targets ?? []).length > 0, `${panel.title}: queries something`)
  }
})

t.test('the Grafana dashboard: every metric and label it queries exists in the registry', async (t) => {
  const known = registryMetrics()
  const dashboard = JSON.parse(fs.readFileSync(path.join(ROOT, 'deploy/grafana/m2m-session-proxy.json'), 'utf8')) as {
    panels: Panel[]
  }
  const expressions = dashboard.panels.flatMap((panel) =>
    (panel.targets ?? []).map((target) => ({ panel: panel.title, expr: target.expr })))
  t.ok(expressions.length >= 30, `${expressions.length} queries`)
  const unknown: string[] = []
  const used = new Set<string>()
  for (const { panel, expr } of expressions) {
    const { metrics } = queryUses(expr)
    t.ok(metrics.length > 0, `${panel}: ${expr} names a metric`)
    for (const metric of metrics) used.add(metric.replace(/_(bucket|sum|count)$/, ''))
    unknown.push(...unknownUses(expr, known).map((problem) => `${panel}: ${problem}`))
  }
  t.same(unknown, [], 'nothing queried that the proxy does not expose')
  // What the issue asks the dashboard to show.
  for (const wanted of ['m2m_proxy_login_attempts_left', 'm2m_proxy_session_age_seconds', 'm2m_proxy_oauth_token_expires_in_seconds',
    'm2m_proxy_logins_total', 'm2m_proxy_upstream_duration_seconds', 'm2m_proxy_wait_seconds', 'm2m_proxy_upstream_paused',
    'm2m_proxy_requests_queued', 'm2m_proxy_fleet_store_up', 'm2m_proxy_password_age_seconds',
    'm2m_proxy_password_rotation_period_seconds', 'm2m_proxy_log_lines_dropped_total']) {
    t.ok(used.has(wanted), `shows ${wanted}`)
  }
})

t.test('the query check itself: it finds metrics and labels, and misses none', async (t) => {
  const use = queryUses('sum by (outcome, le) (rate(m2m_proxy_logins_total{instance=~"$i",job!="x"}[5m])) / process_cpu_seconds_total')
  t.same(use.metrics, ['m2m_proxy_logins_total', 'process_cpu_seconds_total'])
  t.same(use.matchers.get('m2m_proxy_logins_total'), ['instance', 'job'])
  t.same(use.grouping, ['outcome', 'le'])
  const known = registryMetrics()
  t.same(unknownUses('m2m_proxy_logins_total{stage="x"} and on (outcome) m2m_proxy_wait_seconds_bucket{le="1"}', known), [
    'm2m_proxy_logins_total has no label stage'
  ], 'a matcher is judged on its own metric; a grouping label on any of the query\'s')
  t.same(unknownUses('sum by (nothing) (m2m_proxy_nope)', known), ['no metric m2m_proxy_nope', 'no metric of the query has a label nothing'])
  t.same([...(known.get('m2m_proxy_logins_total') ?? [])], ['outcome'])
  t.same([...(known.get('m2m_proxy_upstream_duration_seconds_bucket') ?? [])].sort(), ['le', 'status_class'])
  t.same([...(known.get('m2m_proxy_wait_seconds_bucket') ?? [])].sort(), ['le', 'stage'])
  t.notOk(known.has('m2m_proxy_no_such_metric'))
})
