// The checkout's root, found from here whether the tests run as TypeScript (test/) or compiled (.build/test/).

import fs from 'node:fs'
import path from 'node:path'

function findRoot (start: string): string {
  for (let dir = start; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir
    if (path.dirname(dir) === dir) throw new Error(`no package.json above ${start}`)
  }
}

export const ROOT = findRoot(import.meta.dirname)
