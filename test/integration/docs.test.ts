// The documentation says what the code does: README.md and docs/*.md link only to what exists; the configuration
// reference lists every setting with its default; the errors and metrics reference match the catalogue and the
// registry; every shell block marked `sh demo` runs as written against `npm run demo` (process tier: see
// test/process/docs-commands.test.ts).

import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { ROOT } from '../helpers/root.js'
import { fullRegistry } from '../helpers/prometheus.js'
import { SETTINGS } from '../../src/config/settings.js'
import { PROXY_ERRORS } from '../../src/proxy/errors.js'

const DOCS = ['README.md', ...fs.readdirSync(path.join(ROOT, 'docs')).filter((name) => name.endsWith('.md')).map((name) => `docs/${name}`)]

const read = (file: string): string => fs.readFileSync(path.join(ROOT, file), 'utf8')

/** Text outside fenced code blocks. */
function prose (text: string): string {
  return text.replace(/^```[\s\S]*?^```/gm, '')
}

/** GitHub's anchor for a heading. */
function slug (heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-')
}

function anchorsOf (file: string): Set<string> {
  const anchors = new Set<string>()
  for (const match of prose(read(file)).matchAll(/^#{1,6} (.+)$/gm)) anchors.add(slug(match[1] as string))
  return anchors
}

t.test('README and docs/: every relative link reaches a file, and a heading of it', async (t) => {
  t.ok(DOCS.length >= 12, `${DOCS.length} files read`)
  const broken: string[] = []
  let checked = 0
  for (const file of DOCS) {
    for (const match of prose(read(file)).matchAll(/\]\(([^)\s]+)\)/g)) {
      const target = match[1] as string
      if (/^(https?:|mailto:)/.test(target)) continue
      checked++
      const [pathPart = '', anchor] = target.split('#')
      const targetFile = pathPart === '' ? file : path.normalize(path.join(path.dirname(file), pathPart))
      if (!fs.existsSync(path.join(ROOT, targetFile))) broken.push(`${file}: ${target} (no such file)`)
      else if (anchor !== undefined && targetFile.endsWith('.md') && !anchorsOf(targetFile).has(anchor)) {
        broken.push(`${file}: ${target} (no such heading in ${targetFile})`)
      }
    }
  }
  t.ok(checked > 20, `${checked} links checked`)
  t.same(broken, [], 'broken links')
})

t.test('the README stays a front page: at most 300 lines, the two commands first', async (t) => {
  const readme = read('README.md')
  t.ok(readme.split('\n').length <= 300, `${readme.split('\n').length} lines`)
  t.match(readme, /npm ci && npm run demo[\s\S]*npm ci && npm test/)
  t.ok(readme.split('\n').findIndex((line) => line.startsWith('npm ci && npm run demo')) < 40, 'the two commands near the top')
})

/** Rows of the configuration table: the names in the first cell, the second cell. */
function configurationRows (): Array<{ names: string[]; defaultCell: string }> {
  return [...read('docs/configuration.md').matchAll(/^\| (`M2M_PROXY_[^|]+)\| ([^|]*) \|/gm)].map((match) => ({
    names: [...(match[1] as string).matchAll(/`(M2M_PROXY_[A-Z0-9_]+)`/g)].map((name) => name[1] as string),
    defaultCell: match[2] as string
  }))
}

t.test('configuration reference: every setting once, nothing else, each default as the code has it', async (t) => {
  const rows = configurationRows()
  const documented = rows.flatMap((row) => row.names)
  const settings = Object.values(SETTINGS).map((setting) => setting.env)
  t.same([...documented].sort(), [...new Set(documented)].sort(), 'each setting in one row only')
  t.same(settings.filter((name) => !documented.includes(name)), [], 'settings missing from docs/configuration.md')
  t.same(documented.filter((name) => !settings.includes(name)), [], 'rows for settings the proxy does not have')
  for (const setting of Object.values(SETTINGS)) {
    const row = rows.find((candidate) => candidate.names.includes(setting.env))
    if (row === undefined || setting.default === undefined) continue
    const value = Array.isArray(setting.default) ? setting.default.join(',') : String(setting.default)
    const shown = [...row.defaultCell.matchAll(/`([^`]*)`/g)].map((code) => code[1])
    if (Array.isArray(setting.default) && setting.default.length === 0) {
      t.match(row.defaultCell, /none|empty/i, `${setting.env}: no default value`)
    } else if (Array.isArray(setting.default) && value.length > 40) {
      t.ok(shown.length > 0, `${setting.env}: its default is shown`)
    } else t.ok(shown.includes(value), `${setting.env}: default \`${value}\` (the row says ${row.defaultCell})`)
  }
})

/** Every `Proxy.…` code in the errors table of docs/reference.md. */
function documentedErrorCodes (): string[] {
  const reference = read('docs/reference.md')
  const errors = reference.slice(reference.indexOf('## Errors'), reference.indexOf('## Metrics'))
  return [...errors.matchAll(/^\| \d{3} \| ([^|]+)\|/gm)].flatMap((row) =>
    [...(row[1] as string).matchAll(/`(Proxy\.[A-Za-z.]+)`/g)].map((code) => code[1] as string))
}

t.test('errors reference: every code of the catalogue, and only codes the code can answer', async (t) => {
  const documented = documentedErrorCodes()
  t.ok(documented.length > 20, `${documented.length} codes documented`)
  const bases = Object.values(PROXY_ERRORS).map((error) => error.code)
  t.same(bases.filter((code) => !documented.includes(code) && !documented.some((doc) => doc.startsWith(`${code}.`))), [], 'catalogue codes missing')
  const source = fs.readdirSync(path.join(ROOT, 'src'), { recursive: true })
    .filter((file) => String(file).endsWith('.ts'))
    .map((file) => fs.readFileSync(path.join(ROOT, 'src', String(file)), 'utf8'))
    .join('\n')
  const unknown: string[] = []
  for (const code of documented) {
    const base = bases.find((candidate) => code === candidate || code.startsWith(`${candidate}.`))
    if (base === undefined) {
      // Not an answer's code but a part's (a service's outcome in a callback registration): a literal in the source.
      if (!source.includes(`'${code}'`)) unknown.push(code)
      continue
    }
    const suffix = code.slice(base.length + 1)
    if (suffix === '') continue
    // A suffix is a literal in the source, or the PascalCase of a kebab-case reason ('fleet-key-mismatch').
    const kebab = suffix.replace(/(?<=[a-z])(?=[A-Z])/g, '-').toLowerCase()
    if (!source.includes(`'${suffix}'`) && !source.includes(`'${kebab}'`)) unknown.push(code)
  }
  t.same(unknown, [], 'documented codes the code never answers')
})

t.test('metrics reference: every metric of the registry, and no other', async (t) => {
  // prom-client's default process metrics (process_*, nodejs_*) are documented as such, not one by one.
  const registered = (await fullRegistry().getMetricsAsJSON())
    .map((metric) => metric.name)
    .filter((name) => name.startsWith('m2m_proxy_'))
    .sort()
  const reference = read('docs/reference.md')
  const table = reference.slice(reference.indexOf('## Metrics'), reference.indexOf('## Logging'))
  const documented = [...new Set([...table.matchAll(/`(m2m_proxy_[a-z_]+)`/g)].map((match) => match[1] as string))]
    .map((name) => name.replace(/_(bucket|sum|count)$/, ''))
  t.ok(registered.length > 15, `${registered.length} metrics registered`)
  t.same(registered.filter((name) => !documented.includes(name)), [], 'metrics missing from docs/reference.md')
  t.same([...new Set(documented)].filter((name) => !registered.includes(name)), [], 'documented metrics that do not exist')
})
