// Children started without tap's process instrumentation; those whose coverage counts get Node's own instead.
//
// tap adds its process hook to every child a test spawns, whatever environment the test gives it
// (@tapjs/processinfo puts `--import` of the hook in NODE_OPTIONS), to collect the child's coverage. Loading it costs
// each Node process about 0.8 CPU-seconds (a proxy's bad-configuration exit: 0.2 s without, 1.0 s with), and the
// process tier starts more than a hundred children, most of them running code that the in-process tests cover
// already. So a child runs without it. A child whose test is the one that runs a file no in-process test loads (the
// CLI, the healthcheck, the demo: `coverage: true`) gets Node's built-in coverage instead (NODE_V8_COVERAGE, source
// maps included), written where tap's report reads every process's coverage: the same lines counted at a fraction of
// the cost (the CLI's test: 41 CPU-seconds with the hook, 32 with this; its coverage report the same, file by file).
// The proxy's bundle (dist/main.js) cannot be counted either way: its source map lists its dependencies, for which
// tap's hook dropped the whole bundle and Node's own would count the dependencies' lines; nodeScript refuses it.
// Either way a child's coverage is written when it exits, never when it is killed with SIGKILL: a child stopped that
// way gains nothing from it. A run without coverage (`tap --disable-coverage`, as `npm run test:process` runs) has
// nothing to count: there every child runs without it.

import fs from 'node:fs'
import path from 'node:path'
import { ROOT } from './root.js'

/** Whether tap collects coverage in this run: `--disable-coverage` sets TAP_DISABLE_COVERAGE=1 in the test's env. */
export const tapCollectsCoverage = process.env.TAP_DISABLE_COVERAGE !== '1'

/** Where tap's report reads every process's V8 coverage from (@tapjs/run: `.tap/coverage` in the project root). */
const TAP_COVERAGE_DIR = path.join(ROOT, '.tap', 'coverage')

export interface ChildOptions {
  /** The child's coverage counts in the report (when tap collects coverage). */
  coverage?: boolean
}

/**
 * The command line that runs `command` with `args` without NODE_OPTIONS, so that the child and every process it starts
 * run as they would outside tap; with `coverage` (and tap collecting it), Node's own coverage on. `env` execs the
 * command in its own place (the same pid), so signals reach it.
 */
export function uninstrumented (
  command: string,
  args: readonly string[] = [],
  options: ChildOptions = {}
): [string, string[]] {
  if (options.coverage === true && tapCollectsCoverage) {
    return ['/usr/bin/env', ['-u', 'NODE_OPTIONS', `NODE_V8_COVERAGE=${TAP_COVERAGE_DIR}`, command, ...args]]
  }
  return ['/usr/bin/env', ['-u', 'NODE_OPTIONS', command, ...args]]
}

/** Whether `script`'s source map (if it has one) maps it to this project's files only, not to node_modules. */
function countable (script: string): boolean {
  let map: { sources?: string[] }
  try {
    map = JSON.parse(fs.readFileSync(`${script}.map`, 'utf8')) as { sources?: string[] }
  } catch {
    return true // no source map: its own lines
  }
  return !(map.sources ?? []).some((source) => source.includes('node_modules/'))
}

/** `uninstrumented` for a Node script run by this test's own Node. */
export function nodeScript (
  script: string,
  args: readonly string[] = [],
  options: ChildOptions = {}
): [string, string[]] {
  if (options.coverage === true && !countable(script)) {
    throw new Error(`${script} bundles its dependencies: its coverage cannot be counted (test/helpers/uninstrumented.ts)`)
  }
  return uninstrumented(process.execPath, [script, ...args], options)
}
