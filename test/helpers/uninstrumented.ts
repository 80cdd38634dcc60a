// Children started without tap's process instrumentation, unless a test needs their coverage.
//
// tap adds its process hook to every child a test spawns, whatever environment the test gives it
// (@tapjs/processinfo puts `--import` of the hook in NODE_OPTIONS), to collect the child's coverage. Loading it costs
// each Node process about 0.8 CPU-seconds (a proxy's bad-configuration exit: 0.2 s without, 1.0 s with), and the
// process tier starts more than a hundred children, most of them running code that the in-process tests cover
// already. So a child runs without it, unless its test is the one that runs a file no in-process test loads (the
// entry points, the CLI, stdout's destination): `coverage: true`. The hook writes a child's coverage when the child
// exits, never when it is killed with SIGKILL: a child stopped that way gains nothing from it. A run without
// coverage (`tap --disable-coverage`, as `npm run test:process` runs) has nothing to count: there every child runs
// without it.

/** Whether tap collects coverage in this run: `--disable-coverage` sets TAP_DISABLE_COVERAGE=1 in the test's env. */
const tapCollectsCoverage = process.env.TAP_DISABLE_COVERAGE !== '1'

export interface ChildOptions {
  /** Keep tap's hook, so that the child's coverage counts in the report (when tap collects coverage). */
  coverage?: boolean
}

/**
 * The command line that runs `command` with `args`; without NODE_OPTIONS unless `coverage` (and tap collects it), so
 * that the child and every process it starts run as they would outside tap. `env` execs the command in its own place
 * (the same pid), so signals reach it.
 */
export function uninstrumented (
  command: string,
  args: readonly string[] = [],
  options: ChildOptions = {}
): [string, string[]] {
  if (options.coverage === true && tapCollectsCoverage) return [command, [...args]]
  return ['/usr/bin/env', ['-u', 'NODE_OPTIONS', command, ...args]]
}

/** `uninstrumented` for a Node script run by this test's own Node. */
export function nodeScript (
  script: string,
  args: readonly string[] = [],
  options: ChildOptions = {}
): [string, string[]] {
  return uninstrumented(process.execPath, [script, ...args], options)
}
