// The house's layers: every import in src/ goes to its own folder, or down. A folder never imports one above it, so
// ports are owned by the modules that use them and the adapters (fleet/) implement them from above.

import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { ROOT } from '../helpers/root.js'

const SRC = path.join(ROOT, 'src')

/** Bottom first. Root modules are either leaves (used from anywhere) or the composition root, above everything. */
const LAYERS: ReadonlyArray<readonly string[]> = [
  ['errors.ts', 'clock.ts', 'log-destination.ts', 'log-pretty.ts'],
  ['config'],
  ['logging.ts', 'fs'],
  ['session'],
  ['credentials'],
  ['proxy'],
  ['callbacks'],
  ['fleet'],
  ['listener', 'admin', 'cli'],
  ['simulator'],
  ['<root>']
]

function layerOf (file: string): number {
  const relative = path.relative(SRC, file)
  const [first] = relative.split(path.sep) as [string]
  const index = LAYERS.findIndex((layer) => layer.includes(first))
  return index === -1 ? LAYERS.length - 1 : index
}

function sourceFiles (dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name)
    if (entry.isDirectory()) return sourceFiles(full)
    return entry.name.endsWith('.ts') ? [full] : []
  })
}

/** Relative imports and re-exports, static or dynamic. */
function importsOf (file: string): string[] {
  const text = fs.readFileSync(file, 'utf8')
  const targets = [...text.matchAll(/(?:from|import\()\s*'(\.{1,2}\/[^']+)'/g)].map((match) => match[1] as string)
  return targets.map((target) => path.resolve(path.dirname(file), target.replace(/\.js$/, '.ts')))
}

t.test('no import in src/ runs up the layers', async (t) => {
  const files = sourceFiles(SRC)
  t.ok(files.length > 50, `${files.length} files read`)
  const upward: string[] = []
  for (const file of files) {
    for (const target of importsOf(file)) {
      if (layerOf(target) > layerOf(file)) upward.push(`${path.relative(SRC, file)} -> ${path.relative(SRC, target)}`)
    }
  }
  t.same(upward, [], 'imports that run back up')
})

t.test('the check sees an upward import', async (t) => {
  t.ok(layerOf(path.join(SRC, 'fleet', 'store.ts')) > layerOf(path.join(SRC, 'session', 'session-manager.ts')))
  t.ok(layerOf(path.join(SRC, 'app.ts')) > layerOf(path.join(SRC, 'admin', 'plugin.ts')), 'the composition root is on top')
  t.ok(layerOf(path.join(SRC, 'errors.ts')) < layerOf(path.join(SRC, 'config', 'load.ts')), 'errors.ts is a leaf')
  const sample = importsOf(path.join(SRC, 'fleet', 'store.ts'))
  t.ok(sample.some((target) => target.endsWith(path.join('session', 'shared-session.ts'))), 'imports are resolved to files')
})
