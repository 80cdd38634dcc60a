// The credentials file as a place that can be rewritten: pre-flight checks and the atomic password update used by
// rotation.

import fs from 'node:fs'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { leftTemporaryFiles, writeFileAtomicSync } from '../fs/atomic-write.js'
import { errorCode } from '../errors.js'
import { loadCredentials, parseCredentials, withoutBom, type Credentials } from './credentials.js'

/** Who reads the files: this process, unless a test says otherwise. */
export interface FileReader {
  uid: number | undefined
  groups: number[]
}

function thisProcess (): FileReader {
  return { uid: process.getuid?.(), groups: [process.getegid?.() ?? -1, ...(process.getgroups?.() ?? [])] }
}

/**
 * A warning when a file holding a secret (`holds`, such as "the admin token") can be read or written by
 * its group or by others, undefined when only its owner has access or it cannot be checked.
 */
export function secretFileExposure (
  file: string,
  holds: string,
  reader: FileReader = thisProcess()
): string | undefined {
  let stats: fs.Stats
  try {
    stats = fs.statSync(file)
  } catch {
    return undefined // reading it reports the problem
  }
  const mode = stats.mode & 0o777
  // A file of another user that this process reads as a member of its group (a Kubernetes Secret mounted with
  // fsGroup: root's, group-readable, 0440 whatever defaultMode says) needs that group's read access: not counted.
  // Group write still is, and root, which reads any file, needs no group.
  const readThroughGroup = reader.uid !== 0 && stats.uid !== reader.uid && reader.groups.includes(stats.gid)
  const exposedTo = mode & (readThroughGroup ? 0o037 : 0o077)
  if (exposedTo === 0) return undefined
  const who = [(exposedTo & 0o070) !== 0 ? 'its group' : '', (exposedTo & 0o007) !== 0 ? 'other users' : '']
    .filter(Boolean)
    .join(' and ')
  return `the file ${file} is accessible to ${who} (mode ${mode.toString(8).padStart(4, '0')}); it holds ${holds}: chmod 600 ${file}`
}

/** See secretFileExposure: the credentials file holds the ThingSpace password and app secret. */
export function credentialsExposure (file: string, reader?: FileReader): string | undefined {
  return secretFileExposure(file, 'the ThingSpace password and app secret', reader)?.replace(
    /^the file /,
    'the credentials file '
  )
}

export class CredentialsFile {
  constructor (readonly path: string) {}

  /** See credentialsExposure. */
  exposure (): string | undefined {
    return credentialsExposure(this.path)
  }

  /** Reads and validates; throws ConfigError naming what is wrong (never quoting a value). */
  read (): Credentials {
    return loadCredentials(this.path)
  }

  /**
   * Why the file could not be rewritten right now, or undefined when it can: proven by creating a
   * probe file in the same directory, not guessed from mode bits (root, read-only mounts, ACLs).
   */
  rewriteProblem (): string | undefined {
    let stats: fs.Stats
    try {
      stats = fs.statSync(this.path)
      parseCredentials(fs.readFileSync(this.path, 'utf8'), this.path)
    } catch (error) {
      return `the credentials file ${this.path} cannot be read or is invalid (${errorCode(error)})`
    }
    const uid = process.getuid?.()
    if (uid !== undefined && uid !== 0 && stats.uid !== uid) {
      return `the credentials file ${this.path} is owned by uid ${stats.uid}, not by this process (uid ${uid})`
    }
    const target = this.#target()
    const directory = path.dirname(target)
    const probe = path.join(directory, `.${path.basename(target)}.probe-${randomBytes(4).toString('hex')}`)
    try {
      fs.closeSync(fs.openSync(probe, 'wx', 0o600))
      fs.rmSync(probe, { force: true })
    } catch (error) {
      return `the directory ${directory} is not writable (${errorCode(error)}); the credentials file is replaced by a rename within it`
    }
    return undefined
  }

  /**
   * Replaces the password, keeping every other field, owner and mode 0600; atomic and durable. A symbolic link (a
   * secret kept elsewhere) stays one: the file it leads to is replaced, not the link.
   */
  writePassword (newPassword: string): void {
    const target = this.#target()
    const document = JSON.parse(withoutBom(fs.readFileSync(target, 'utf8'))) as Record<string, unknown>
    const stats = fs.statSync(target)
    document.password = newPassword
    // Only root can (and must, to keep the file readable by its owner) hand the new file back to the owner.
    const owner = process.getuid?.() === 0 ? { uid: stats.uid, gid: stats.gid } : undefined
    const content = JSON.stringify(document, null, 2) + '\n'
    writeFileAtomicSync(target, content, 0o600, owner)
  }

  /**
   * A warning naming the temporary files a rewrite of this file left behind (killed or cut off by a power loss between
   * writing the new content and renaming it into place), undefined when there are none. After a password rotation such
   * a file may hold the only copy of the password ThingSpace now has, while the file itself holds the old one.
   */
  interruptedRewrites (): string | undefined {
    let left: string[]
    try {
      left = leftTemporaryFiles(this.#target())
    } catch {
      return undefined // reading the file reports the problem
    }
    if (left.length === 0) return undefined
    return (
      `${left.join(', ')} ${left.length === 1 ? 'was' : 'were'} left by a rewrite of the credentials file that did not ` +
      'finish (the process killed, or the power cut, during a password rotation?). If ThingSpace rejects the password ' +
      `in ${this.path}, the left file may hold the one ThingSpace has now: check it and move it into place; otherwise ` +
      'remove it (it may hold a password)'
    )
  }

  /** The file itself: where its symbolic links, if any, lead. */
  #target (): string {
    return fs.realpathSync(this.path)
  }
}

export function sameCredentials (a: Credentials, b: Credentials): boolean {
  return (
    a.username === b.username &&
    a.password === b.password &&
    a.clientId === b.clientId &&
    a.clientSecret === b.clientSecret
  )
}
