// The in-process tests (unit, simulator, integration) run grouped: each group is one test process that imports its
// files one after the other. Under tap a test process costs one to three CPU-seconds before its first assertion (tap's
// hooks, this project's modules loaded again, its coverage written and merged); the 56 files paid that 56 times, the
// groups pay it 8 times (docs/development.md, "Where the suite's time goes"). Each file still runs alone with
// `npx tap .build/test/FOLDER/FILE.test.js`. The process tier keeps one test process per file.

import fs from 'node:fs'
import t from 'tap'

/**
 * Each group: folders (ending in `/`, every test file in them) or files (without `.test.ts`), relative to `test/`.
 * The integration groups are balanced by their files' wall time (about 45 s each on a busy 2-CPU machine) so that each
 * stays well inside tap's 120 s per test process.
 */
export const TEST_GROUPS: Readonly<Record<string, readonly string[]>> = {
  unit: ['unit/', 'simulator/'],
  'integration-1': ['integration/admission', 'integration/docs', 'integration/observability-assets',
    'integration/config-example'],
  'integration-2': ['integration/throttling', 'integration/deploy', 'integration/failure-causes',
    'integration/location-callbacks', 'integration/refused-sessions', 'integration/log-secrets'],
  'integration-3': ['integration/background-login', 'integration/fleet-redis-store', 'integration/fleet-callback-inbox'],
  'integration-4': ['integration/graceful-shutdown', 'integration/streaming', 'integration/metrics',
    'integration/request-id'],
  'integration-5': ['integration/compressed-errors', 'integration/forwarding', 'integration/listener-attacks'],
  'integration-6': ['integration/failures', 'integration/api-families', 'integration/callbacks',
    'integration/sdk-requests', 'integration/status-page'],
  'integration-7': ['integration/callback-registration', 'integration/fuzz', 'integration/families-through-simulator']
}

/** The folders whose test files run in groups. */
export const GROUPED_FOLDERS = ['unit', 'simulator', 'integration'] as const

const TEST_FILE = /\.test\.(ts|js)$/

/** The test files of one group entry, as URLs under `testDir` (test/ or .build/test/), with the given extension. */
export function filesOf (entry: string, testDir: URL, extension: string): URL[] {
  if (!entry.endsWith('/')) return [new URL(`${entry}.test${extension}`, testDir)]
  const folder = new URL(entry, testDir)
  return fs.readdirSync(folder).filter((name) => TEST_FILE.test(name) && name.endsWith(extension)).sort()
    .map((name) => new URL(name, folder))
}

/**
 * Imports the group's test files one after the other. Their tests land on tap's root test in that order and run one
 * after the other, as they did one file to a process. A file that cannot be loaded fails the group and the rest still
 * run.
 */
export async function runGroup (name: string, groupFile: string): Promise<void> {
  const entries = TEST_GROUPS[name]
  if (entries === undefined) throw new Error(`no test group ${name}`)
  const extension = groupFile.endsWith('.ts') ? '.ts' : '.js'
  const testDir = new URL('../', groupFile)
  for (const url of entries.flatMap((entry) => filesOf(entry, testDir, extension))) {
    try {
      await import(url.href)
    } catch (error) {
      t.fail(`${url.pathname} did not load`, { error })
    }
  }
}
