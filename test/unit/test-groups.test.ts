// Every in-process test file runs in exactly one group, and `npm test` runs the groups and the process tier: a test
// file added to test/integration but to no group would otherwise never run in CI.

import fs from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import t from 'tap'
import { ROOT } from '../helpers/root.js'
import { filesOf, GROUPED_FOLDERS, TEST_GROUPS } from '../helpers/test-groups.js'

const TEST_DIR = pathToFileURL(path.join(ROOT, 'test') + '/')

const relative = (url: URL): string => path.relative(path.join(ROOT, 'test'), url.pathname)

t.test('each in-process test file belongs to exactly one group', async (t) => {
  const grouped = Object.values(TEST_GROUPS).flat().flatMap((entry) => filesOf(entry, TEST_DIR, '.ts')).map(relative)
  const onDisk = GROUPED_FOLDERS.flatMap((folder) => filesOf(`${folder}/`, TEST_DIR, '.ts')).map(relative)
  t.ok(onDisk.length > 50, `the folders hold the test files (${onDisk.length})`)
  t.same([...grouped].sort(), [...onDisk].sort(), 'every file in a group, no group naming a missing file')
  t.equal(new Set(grouped).size, grouped.length, 'no file in two groups')
})

t.test('each group has its runner file, and npm test runs those and the process tier', async (t) => {
  const runners = fs.readdirSync(path.join(ROOT, 'test', 'groups')).map((name) => name.replace(/\.test\.ts$/, ''))
  t.same(runners.sort(), Object.keys(TEST_GROUPS).sort())
  for (const name of runners) {
    const source = fs.readFileSync(path.join(ROOT, 'test', 'groups', `${name}.test.ts`), 'utf8')
    t.match(source, `runGroup('${name}', import.meta.url)`, `${name} runs its own group`)
  }
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { tap: { include: string[] } }
  t.same(pkg.tap.include, ['.build/test/groups/*.test.js', '.build/test/process/*.test.js'])
})
