// One proxy per state directory: two would keep two lockout counts for one account (and overwrite each other's
// files). A lock file names the holder (pid, host, and where /proc tells it, the process's start); a live holder's
// start is refused with one line, a dead one's lock is taken over, and a holder that finds its lock taken over stops.

import fs from 'node:fs'
import path from 'node:path'
import { hostname } from 'node:os'
import { ConfigError } from '../config/errors.js'
import { errorCode } from '../errors.js'

export const STATE_LOCK_FILE = 'proxy.lock'
/**
 * The holder touches the file this often, and checks that it is still its own. On another host (whose pids cannot be
 * checked from here), or where the process's start cannot be read, a lock untouched for three times as long is stale.
 * On this host, a live pid with the holder's start is the holder, however long ago it touched the file: a process
 * paused (SIGSTOP, a frozen container) for a minute still holds the directory, and resumes sending logins.
 */
export const STATE_LOCK_TOUCH_MS = 10_000

interface Holder {
  pid: number
  host: string
  startedAt: string
  /** The process's start on this host's clock since boot (processStart): tells the holder from a reuser of its pid. */
  start?: string
}

/**
 * `pid`'s start: the boot's id and the start time in clock ticks after boot (/proc/PID/stat's 22nd field), which no
 * other process of this boot has with the same pid. Undefined without /proc (or when the process is gone).
 */
function processStart (pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command's name (field 2) is in parentheses and may hold spaces: field 3 comes after its last ')'.
    const starttime = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[22 - 3]
    const boot = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
    return starttime === undefined ? undefined : `${boot}/${starttime}`
  } catch {
    return undefined
  }
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
    throw new ConfigError('M2M_PROXY_STATE_DIR', `${file} cannot be read (${errorCode(error)})`)
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
  if (holder === undefined) return false
  const touchedLately = now - mtimeMs <= 3 * STATE_LOCK_TOUCH_MS
  if (holder.host !== hostname()) return touchedLately
  // This very pid: a container restarted on its volume, where the proxy is always pid 1.
  if (holder.pid === process.pid || !processAlive(holder.pid)) return false
  const start = holder.start === undefined ? undefined : processStart(holder.pid)
  return start === undefined ? touchedLately : start === holder.start
}

/** What a holder that lost its lock says: a ConfigError, so that the process stops with one line (main.ts). */
function lostLock (file: string, found: string): ConfigError {
  return new ConfigError(
    'M2M_PROXY_STATE_DIR',
    `${file} was taken over by another process (it now holds ${found.slice(0, 200)}): two proxies on one state ` +
      'directory would keep two lockout counts for one account, so this one stops. Give each proxy a state directory ' +
      'of its own'
  )
}

export class StateDirLock {
  private readonly timer: NodeJS.Timeout
  private released = false
  private reportLost: (error: ConfigError) => void = () => {}
  /**
   * Settles if another process takes the lock over (it judged this one gone: after a pause longer than three touches
   * where the start cannot be checked, or by hand); never otherwise. The holder must then stop sending logins.
   */
  readonly lost = new Promise<ConfigError>((resolve) => { this.reportLost = resolve })

  private constructor (
    private readonly file: string,
    private readonly content: string,
    touchMs: number
  ) {
    this.timer = setInterval(() => { this.touch() }, touchMs).unref()
  }

  /**
   * Touches the file if it is still this process's; taken back if it was removed (by hand); reported lost only when
   * another process's lock is in its place. A directory removed or unmounted is no other holder: the logins pause for
   * it (their count cannot be written), and this process keeps its place.
   */
  private touch (): void {
    let found: string
    try {
      found = fs.readFileSync(this.file, 'utf8')
    } catch (error) {
      if (errorCode(error) !== 'ENOENT') return // unreadable for now: checked again at the next touch
      try {
        fs.writeFileSync(this.file, this.content, { flag: 'wx', mode: 0o600 })
        return
      } catch (writeError) {
        if (errorCode(writeError) !== 'EEXIST') return // the directory gone or unwritable: checked again next time
        try {
          found = fs.readFileSync(this.file, 'utf8') // another process wrote it in between
        } catch {
          return
        }
      }
    }
    if (found === this.content) {
      const now = new Date()
      try {
        fs.utimesSync(this.file, now, now)
      } catch {
        // checked again at the next touch
      }
      return
    }
    clearInterval(this.timer)
    this.released = true // what is there now is another's: never removed by release()
    this.reportLost(lostLock(this.file, found))
  }

  /**
   * Takes the state directory for this process, or throws a ConfigError naming the live holder. `touchMs`: how often
   * the lock is touched and checked (tests).
   */
  static acquire (stateDir: string, touchMs = STATE_LOCK_TOUCH_MS): StateDirLock {
    const file = path.join(stateDir, STATE_LOCK_FILE)
    const content = JSON.stringify({
      pid: process.pid,
      host: hostname(),
      startedAt: new Date().toISOString(),
      start: processStart(process.pid)
    })
    try {
      fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 })
    } catch (error) {
      throw new ConfigError('M2M_PROXY_STATE_DIR', `${stateDir} cannot be created (${errorCode(error)})`)
    }
    for (let attempt = 0; ; attempt++) {
      try {
        fs.writeFileSync(file, content, { flag: 'wx', mode: 0o600 })
        return new StateDirLock(file, content, touchMs)
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
