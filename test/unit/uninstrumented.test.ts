// The test helper that starts children without tap's hook: a child whose coverage counts writes Node's own coverage
// where tap's report reads it, and no child carries the hook's NODE_OPTIONS.

import t, { type Test } from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { nodeScript, tapCollectsCoverage } from '../helpers/uninstrumented.js'
import { ROOT } from '../helpers/root.js'

const run = promisify(execFile)

t.test('a bundle of its dependencies is refused: its coverage cannot be counted', async (t) => {
  const bundle = path.join(t.testdir({ 'main.js': '' }), 'main.js')
  fs.writeFileSync(`${bundle}.map`, JSON.stringify({ version: 3, sources: ['../src/main.ts', '../node_modules/pino/pino.js'] }))
  t.throws(() => nodeScript(bundle, [], { coverage: true }), /bundles its dependencies/)
  t.ok(nodeScript(bundle, []), 'without coverage, it runs')
  fs.writeFileSync(`${bundle}.map`, JSON.stringify({ version: 3, sources: ['../src/main.ts'] }))
  t.ok(nodeScript(bundle, [], { coverage: true }), 'a source map of its own files only')
})

interface ChildView { pid: number, options: string | null, coverage: string | null }

/** Runs, in a folder of `t`'s own, a script that prints its pid and the two variables as JSON. */
async function runChild (t: Test, coverage: boolean): Promise<ChildView> {
  const script = 'console.log(JSON.stringify({ pid: process.pid, options: process.env.NODE_OPTIONS ?? null, ' +
    'coverage: process.env.NODE_V8_COVERAGE ?? null }))\n'
  const { stdout } = await run(...nodeScript(path.join(t.testdir({ 'child.mjs': script }), 'child.mjs'), [], { coverage }))
  return JSON.parse(stdout)
}

t.test('a child without coverage: no hook, no coverage', async (t) => {
  const child = await runChild(t, false)
  t.equal(child.options, null, 'NODE_OPTIONS removed')
  t.equal(child.coverage, null)
})

t.test("a child whose coverage counts: Node's own, in tap's folder, only when tap collects it", async (t) => {
  const child = await runChild(t, true)
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
