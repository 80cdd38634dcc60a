// Crash-safe file replacement: write a temporary file beside the target, fsync, rename over it, fsync the directory.

import fs from 'node:fs'
import path from 'node:path'
import { randomBytes } from 'node:crypto'

/**
 * After a crash at any point the target holds either the old or the new content, never a mix
 * or an empty file: rename(2) within one directory is atomic, and the fsyncs order the writes.
 */
export function writeFileAtomicSync (
  file: string,
  /** The content, or its pieces in order (written one by one: never joined into one string in memory). */
  content: string | Iterable<string | Uint8Array>,
  mode = 0o600,
  owner?: { uid: number; gid: number }
): void {
  const directory = path.dirname(file)
  const temporary = path.join(directory, `${temporaryPrefix(file)}${randomBytes(6).toString('hex')}.tmp`)
  const fd = fs.openSync(temporary, 'wx', mode)
  try {
    if (owner !== undefined) fs.fchownSync(fd, owner.uid, owner.gid)
    fs.fchmodSync(fd, mode) // the umask may have narrowed or the owner change widened nothing: be exact
    for (const piece of typeof content === 'string' ? [content] : content) {
      // Two calls for one: writeSync's overloads take a string or a buffer, not the union of both.
      if (typeof piece === 'string') fs.writeSync(fd, piece)
      else fs.writeSync(fd, piece)
    }
    fs.fsyncSync(fd)
  } catch (error) {
    fs.closeSync(fd)
    fs.rmSync(temporary, { force: true })
    throw error
  }
  fs.closeSync(fd)
  try {
    fs.renameSync(temporary, file)
  } catch (error) {
    fs.rmSync(temporary, { force: true })
    throw error
  }
  fsyncDirectory(directory)
}

/** The temporary files of `file` are `.<name>.<12 hex digits>.tmp` beside it. */
function temporaryPrefix (file: string): string {
  return `.${path.basename(file)}.`
}

/**
 * The temporary files that writes of `file` cut short (killed, or a power cut, between writing and renaming) left
 * beside it. Throws when its directory cannot be read.
 */
export function leftTemporaryFiles (file: string): string[] {
  const directory = path.dirname(file)
  const prefix = temporaryPrefix(file)
  return fs
    .readdirSync(directory)
    .filter((name) => name.startsWith(prefix) && /^[0-9a-f]{12}\.tmp$/.test(name.slice(prefix.length)))
    .map((name) => path.join(directory, name))
}

/** Makes the names in `directory` (a rename, a new file) survive a crash. */
export function fsyncDirectory (directory: string): void {
  const directoryFd = fs.openSync(directory, 'r')
  try {
    fs.fsyncSync(directoryFd)
  } finally {
    fs.closeSync(directoryFd)
  }
}
