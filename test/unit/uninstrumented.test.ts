// The test helper that starts children without tap's hook: a child whose coverage counts writes Node's own coverage
// where tap's report reads it, and no child carries the hook's NODE_OPTIONS.

import t from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { nodeScript } from '../helpers/uninstrumented.js'
import { ROOT } from '../helpers/root.js'

const run = promisify(execFile)
const tapCollectsCoverage = process.env.TAP_DISABLE_COVERAGE !== '1'

t.test('a bundle of its dependencies is refused: its coverage cannot be counted', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-uninstrumented-'))
  t.teardown(() => { fs.rmSync(dir, { recursive: true, force: true }) })
  const bundle = path.join(dir, 'main.js')
  fs.writeFileSync(bundle, '')
  fs.writeFileSync(`${bundle}.map`, JSON.stringify({ version: 3, sources: ['../src/main.ts', '../node_modules/pino/pino.js'] }))
  t.throws(() => nodeScript(bundle, [], { coverage: true }), /bundles its dependencies/)
  t.ok(nodeScript(bundle, []), 'without coverage, it runs')
  fs.writeFileSync(`${bundle}.map`, JSON.stringify({ version: 3, sources: ['../src/main.ts'] }))
  t.ok(nodeScript(bundle, [], { coverage: true }), 'a source map of its own files only')
})

/** A script that prints its pid and the two variables, as JSON. */
function scriptFile (): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-uninstrumented-'))
  t.teardown(() => { fs.rmSync(dir, { recursive: true, force: true }) })
  const file = path.join(dir, 'child.mjs')
  fs.writeFileSync(file, 'console.log(JSON.stringify({ pid: process.pid, options: process.env.NODE_OPTIONS ?? null, ' +
    'coverage: process.env.NODE_V8_COVERAGE ?? null }))\n')
  return file
}

async function runChild (coverage: boolean): Promise<{ pid: number, options: string | null, coverage: string | null }> {
  const { stdout } = await run(...nodeScript(scriptFile(), [], { coverage }))
  return JSON.parse(stdout)
}

t.test('a child without coverage: no hook, no coverage', async (t) => {
  const child = await runChild(false)
  t.equal(child.options, null, 'NODE_OPTIONS removed')
  t.equal(child.coverage, null)
})

t.test("a child whose coverage counts: Node's own, in tap's folder, only when tap collects it", async (t) => {
  const child = await runChild(true)
  t.equal(child.options, null, 'NODE_OPTIONS removed: not the hook')
  if (!tapCollectsCoverage) {
    t.equal(child.coverage, null, 'tap --disable-coverage: nothing to collect')
    return
  }
  const folder = path.join(ROOT, '.tap', 'coverage')
  t.equal(child.coverage, folder)
  const written = fs.readdirSync(folder).filter((name) => name.startsWith(`coverage-${child.pid}-`))
  t.equal(written.length, 1, 'the coverage file written at exit')
  const file = path.join(folder, written[0] ?? '')
  const report = JSON.parse(fs.readFileSync(file, 'utf8')) as { result: Array<{ url: string }> }
  // Not left for tap's report: the script is a temporary file, gone by then.
  fs.rmSync(file)
  t.ok(report.result.some((script) => script.url.endsWith('/child.mjs')), "the child's script is in it")
})
