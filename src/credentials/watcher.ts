// Notices changes to the credentials file (an operator's edit, a secret-manager sidecar) by polling its metadata.

import fs from 'node:fs'

/**
 * Polls with fs.watchFile rather than fs.watch: it follows the path through renames and the symlink
 * swaps of mounted secrets, where inode-based watches go silent. Returns a function that stops it.
 */
export function watchCredentialsFile (file: string, intervalMs: number, onChange: () => void): () => void {
  const listener = (current: fs.Stats, previous: fs.Stats): void => {
    if (current.mtimeMs !== previous.mtimeMs || current.ino !== previous.ino || current.size !== previous.size) {
      onChange()
    }
  }
  fs.watchFile(file, { interval: intervalMs, persistent: false }, listener)
  return () => fs.unwatchFile(file, listener)
}
