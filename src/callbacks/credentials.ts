// The username and password ThingSpace sends in every callback, when the operator gives no file of them
// (M2M_PROXY_CALLBACK_CREDENTIALS_FILE): made once, at random, and kept in the state directory, so that what was
// registered with ThingSpace still holds after a restart. Single process only (config/load.ts).

import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { CALLBACK_PASSWORD_MIN_LENGTH, type CallbackCredentials } from '../config/load.js'
import { ConfigError } from '../config/errors.js'
import { writeFileAtomicSync } from '../fs/atomic-write.js'
import { errorCode } from '../errors.js'

export const GENERATED_CREDENTIALS_FILE = 'callback-credentials.json'
export const GENERATED_USERNAME = 'm2m-session-proxy'

/** Reads the pair kept in `stateDir`, or makes and keeps one (mode 0600, written atomically). */
export function loadOrCreateCallbackCredentials (stateDir: string): CallbackCredentials {
  const file = path.join(stateDir, GENERATED_CREDENTIALS_FILE)
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (error) {
    if (errorCode(error) !== 'ENOENT') {
      throw new ConfigError('M2M_PROXY_CALLBACK_CREDENTIALS_FILE', `is not set, and ${file} cannot be read (${errorCode(error)})`)
    }
    const made = { username: GENERATED_USERNAME, password: randomBytes(24).toString('hex') }
    writeFileAtomicSync(file, `${JSON.stringify(made)}\n`)
    return made
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    parsed = undefined
  }
  const { username, password } = (typeof parsed === 'object' && parsed !== null ? parsed : {}) as Record<string, unknown>
  if (typeof username !== 'string' || typeof password !== 'string' || password.length < CALLBACK_PASSWORD_MIN_LENGTH) {
    // Never replaced silently: ThingSpace may hold the old pair. The message names the file, never its content.
    throw new ConfigError(
      'M2M_PROXY_CALLBACK_CREDENTIALS_FILE',
      `is not set, and the pair the proxy made, ${file}, does not hold {"username","password"} (a password of at least ${CALLBACK_PASSWORD_MIN_LENGTH} ` +
        'characters): remove it to have a new pair made, then register the callbacks again'
    )
  }
  return { username, password }
}
