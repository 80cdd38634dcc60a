// State files carry the version of their format. One of a newer version than this build reads comes from a newer
// release run on the same directory (and then rolled back): deleting it, as the advice for a corrupt file says, would
// throw away the login failure count that release kept, so it gets its own message.

import { ConfigError } from '../config/errors.js'

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
