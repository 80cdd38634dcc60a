// The Prometheus alert rules that ship in deploy/prometheus: valid for promtool, their unit tests (alerts.test.yml)
// passing, every metric and label they query exposed by the proxy, and every runbook link a section of the docs.
// promtool comes from Debian's prometheus package, which .ci/run installs when it is missing.

import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { parse } from 'yaml'
import { ROOT } from '../helpers/root.js'
import { queryUses, registryMetrics, unknownUses } from '../helpers/prometheus.js'

const execFileAsync = promisify(execFile)
const RULES = path.join(ROOT, 'deploy/prometheus/alerts.yml')
const RULE_TESTS = path.join(ROOT, 'deploy/prometheus/alerts.test.yml')

interface Rule {
  alert: string
  expr: string
  labels?: Record<string, string>
  annotations?: Record<string, string>
}

const rules = (parse(fs.readFileSync(RULES, 'utf8')) as { groups: Array<{ rules: Rule[] }> }).groups.flatMap((group) => group.rules)

const promtool = await execFileAsync('promtool', ['--version']).then(() => true, () => false)

t.test('promtool: the rules are valid and their unit tests pass', async (t) => {
  if (!promtool) {
    if (process.env.CI === 'true') t.fail('promtool is missing: .ci/run installs Debian\'s prometheus package')
    else t.skip('promtool is missing: apt-get install prometheus (Debian) to run this test', () => {})
    return
  }
  const checked = await execFileAsync('promtool', ['check', 'rules', RULES])
  t.match(checked.stdout, `SUCCESS: ${rules.length} rules found`)
  const tested = await execFileAsync('promtool', ['test', 'rules', RULE_TESTS], { cwd: path.dirname(RULE_TESTS) })
  t.match(tested.stdout, /SUCCESS/)
  const testText = fs.readFileSync(RULE_TESTS, 'utf8')
  for (const rule of rules) {
    const firing = new RegExp(`alertname: ${rule.alert}\\n\\s+exp_alerts:\\n(\\s+#.*\\n)*\\s+- exp_labels`)
    t.match(testText, firing, `${rule.alert} is tested firing`)
  }
})

t.test('every alert: known metrics and labels, a severity, a runbook section in docs/observability.md', async (t) => {
  const known = registryMetrics()
  const docs = fs.readFileSync(path.join(ROOT, 'docs/observability.md'), 'utf8')
  const anchors = new Set([...docs.matchAll(/^#{2,4} (.+)$/gm)].map((heading) =>
    (heading[1] as string).trim().toLowerCase().replace(/[^a-z0-9 -]/g, '').replace(/ /g, '-')))
  const wanted = ['M2MProxyLoginGuardEngaged', 'M2MProxyOneAttemptFromCeiling', 'M2MProxyLoginsFailing', 'M2MProxySessionNotRenewed',
    'M2MProxyOAuthTokenExpiringUnrenewed', 'M2MProxyFleetStoreDown', 'M2MProxyPasswordOlderThanRotation',
    'M2MProxyReplicasDisagreeOnGeneration', 'M2MProxyThrottled', 'M2MProxyLogLinesDropped', 'M2MProxyNotReady']
  t.same(rules.map((rule) => rule.alert).sort(), [...wanted].sort(), 'the alerts the issue asks for')
  for (const rule of rules) {
    t.ok(queryUses(rule.expr).metrics.length > 0, `${rule.alert}: queries a metric`)
    t.same(unknownUses(rule.expr, known), [], `${rule.alert}: every metric and label it uses is exposed`)
    t.ok(['critical', 'warning'].includes(rule.labels?.severity ?? ''), `${rule.alert}: a severity`)
    const runbook = rule.annotations?.runbook_url ?? ''
    t.equal(runbook, `docs/observability.md#${rule.alert.toLowerCase()}`, `${rule.alert}: its runbook`)
    t.ok(anchors.has(rule.alert.toLowerCase()), `${rule.alert}: a section of docs/observability.md`)
  }
})
