// Checks of the state files that keep the login failure count (the login guard, the fleet ledger), for the cases where
// the usual reading would start the count again from 0 and so risk the lockout.

import fs from 'node:fs'
import { ConfigError } from '../config/errors.js'

// State files carry the version of their format. One of a newer version than this build reads comes from a newer
// release run on the same directory (and then rolled back): deleting it, as the advice for a corrupt file says, would
// throw away the login failure count that release kept, so it gets its own message.

/** Throws a ConfigError when `parsed` is a state of a format newer than `readable`; returns otherwise. */
export function refuseNewerFormat (parsed: unknown, readable: number, file: string): void {
  if (typeof parsed !== 'object' || parsed === null) return
  const { version } = parsed as { version?: unknown }
  if (typeof version !== 'number' || !Number.isSafeInteger(version) || version <= readable) return
  throw new ConfigError(
    'M2M_PROXY_STATE_DIR',
    `${file} was written by a newer release of m2m-session-proxy (format ${version}; this one reads ${readable}): ` +
      'run that release again, which keeps the login failure count in it. Do not delete the file to run this one: ' +
      'the count would start again from 0 and could let ThingSpace lock the account'
  )
}

/**
 * For a state file found missing: throws a ConfigError when `file` is a symbolic link whose target does not exist (a
 * volume not mounted, a path mistyped). Read as missing, the count would start again from 0.
 */
export function refuseDanglingLink (file: string): void {
  let target: string
  try {
    if (!fs.lstatSync(file).isSymbolicLink()) return
    target = fs.readlinkSync(file)
  } catch {
    return // truly missing
  }
  throw new ConfigError(
    'M2M_PROXY_STATE_DIR',
    `${file} is a symbolic link to ${target}, which does not exist (a volume not mounted?): read as missing, the login ` +
      'failure count would start again from 0. Mount what it leads to, or replace the link with the file itself'
  )
}
