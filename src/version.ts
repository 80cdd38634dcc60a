// The proxy's version, from the package.json shipped beside the code (dist/ in a checkout, /app in the image). Read at
// run time: the bundle's chunks sit one folder deeper than dist/*.js, so the nearest package.json of this name wins.

import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

function readVersion (): string {
  let dir = path.dirname(fileURLToPath(import.meta.url))
  for (let depth = 0; depth < 3; depth++) {
    dir = path.dirname(dir)
    try {
      const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as Record<string, unknown>
      if (manifest.name === 'm2m-session-proxy' && typeof manifest.version === 'string') return manifest.version
    } catch {
      // not there: one level up
    }
  }
  return 'unknown'
}

export const VERSION = readVersion()
