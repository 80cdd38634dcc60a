// One proxy per state directory: two would keep two lockout counts for one account (and overwrite each other's
// files). A lock file names the holder (pid, host); a live holder's start is refused with one line, a dead one's
// lock is taken over.

import fs from 'node:fs'
import path from 'node:path'
import { hostname } from 'node:os'
import { ConfigError } from '../config/errors.js'
import { errorCode } from '../errors.js'

export const STATE_LOCK_FILE = 'proxy.lock'
/**
 * The holder touches the file this often; one untouched for three times as long is stale, whatever its pid says (a
 * crashed proxy's pid reused by another program; a holder on another host, whose pid cannot be checked from here).
 */
export const STATE_LOCK_TOUCH_MS = 10_000

interface Holder {
  pid: number
  host: string
  startedAt: string
}

function readHolder (file: string): { holder: Holder | undefined; text: string; mtimeMs: number } | undefined {
  try {
    const text = fs.readFileSync(file, 'utf8')
    const { mtimeMs } = fs.statSync(file)
    let holder: Holder | undefined
    try {
      const parsed = JSON.parse(text) as Partial<Holder>
      if (Number.isSafeInteger(parsed.pid) && typeof parsed.host === 'string') holder = parsed as Holder
    } catch {
      // half-written or foreign: not a holder
    }
    return { holder, text, mtimeMs }
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return undefined
    throw error
  }
}

function processAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return errorCode(error) === 'EPERM' // alive, another user's
  }
}

function isLive (holder: Holder | undefined, mtimeMs: number, now: number): holder is Holder {
  if (holder === undefined || now - mtimeMs > 3 * STATE_LOCK_TOUCH_MS) return false
  if (holder.host !== hostname()) return true
  // This very pid: a container restarted on its volume, where the proxy is always pid 1.
  return holder.pid !== process.pid && processAlive(holder.pid)
}

export class StateDirLock {
  private readonly timer: NodeJS.Timeout
  private released = false

  private constructor (
    private readonly file: string,
    private readonly content: string
  ) {
    this.timer = setInterval(() => {
      const now = new Date()
      try {
        fs.utimesSync(this.file, now, now)
      } catch {
        // removed by hand: the next start checks again
      }
    }, STATE_LOCK_TOUCH_MS).unref()
  }

  /** Takes the state directory for this process, or throws a ConfigError naming the live holder. */
  static acquire (stateDir: string): StateDirLock {
    const file = path.join(stateDir, STATE_LOCK_FILE)
    const content = JSON.stringify({ pid: process.pid, host: hostname(), startedAt: new Date().toISOString() })
    try {
      fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 })
    } catch (error) {
      throw new ConfigError('M2M_PROXY_STATE_DIR', `${stateDir} cannot be created (${errorCode(error)})`)
    }
    for (let attempt = 0; ; attempt++) {
      try {
        fs.writeFileSync(file, content, { flag: 'wx', mode: 0o600 })
        return new StateDirLock(file, content)
      } catch (error) {
        if (errorCode(error) !== 'EEXIST' || attempt > 0) {
          throw new ConfigError('M2M_PROXY_STATE_DIR', `${file} cannot be created (${errorCode(error)})`)
        }
      }
      const found = readHolder(file)
      if (isLive(found?.holder, found?.mtimeMs ?? 0, Date.now())) {
        const { pid, host, startedAt } = found?.holder as Holder
        throw new ConfigError(
          'M2M_PROXY_STATE_DIR',
          `${stateDir} is in use by another m2m-session-proxy (pid ${pid} on ${host}, since ${startedAt}): two proxies ` +
            'on one state directory would keep two lockout counts for one account. Give each proxy (each replica of a ' +
            `fleet) a state directory of its own, or stop the other one; if it is gone, delete ${file}`
        )
      }
      // A dead holder's: removed unless it changed meanwhile (another starter took it over first).
      let current: string | undefined
      try {
        current = fs.readFileSync(file, 'utf8')
      } catch {
        current = undefined
      }
      if (current === found?.text) fs.rmSync(file, { force: true })
    }
  }

  /** Removes the lock file if it is still this process's. */
  release (): void {
    if (this.released) return
    this.released = true
    clearInterval(this.timer)
    try {
      if (fs.readFileSync(this.file, 'utf8') === this.content) fs.rmSync(this.file, { force: true })
    } catch {
      // already gone
    }
  }
}
