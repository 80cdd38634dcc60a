// One proxy per state directory (fs/state-dir-lock.ts): a live holder refuses the start, a dead or silent one's lock
// is taken over, release removes only this process's own lock.

import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { hostname } from 'node:os'
import { spawnSync } from 'node:child_process'
import { STATE_LOCK_FILE, STATE_LOCK_TOUCH_MS, StateDirLock } from '../../src/fs/state-dir-lock.js'
import { uninstrumented } from '../helpers/uninstrumented.js'

function writeLock (dir: string, holder: { pid: number, host: string, start?: string }, ageMs = 0): void {
  const file = path.join(dir, STATE_LOCK_FILE)
  fs.writeFileSync(file, JSON.stringify({ ...holder, startedAt: '2026-01-01T00:00:00.000Z' }))
  const at = new Date(Date.now() - ageMs)
  fs.utimesSync(file, at, at)
}

/** A pid that no process has any more. */
function deadPid (): number {
  const child = spawnSync(...uninstrumented(process.execPath, ['-e', '']))
  return child.pid as number
}

t.test('taken, refused to a live holder, released', async (t) => {
  const dir = t.testdir({})
  const lock = StateDirLock.acquire(dir)
  const file = path.join(dir, STATE_LOCK_FILE)
  t.same(JSON.parse(fs.readFileSync(file, 'utf8')).pid, process.pid)
  lock.release()
  t.notOk(fs.existsSync(file), 'released: removed')
  lock.release()

  // The parent of this test is a live process on this host: it holds the directory.
  writeLock(dir, { pid: process.ppid, host: hostname() })
  t.throws(() => StateDirLock.acquire(dir), {
    name: 'ConfigError',
    setting: 'M2M_PROXY_STATE_DIR',
    message: new RegExp(`is in use by another m2m-session-proxy \\(pid ${process.ppid} on ${hostname()}, since 2026-01-01T00:00:00.000Z\\).*delete ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`)
  })
  t.equal(JSON.parse(fs.readFileSync(file, 'utf8')).pid, process.ppid, "the holder's lock is left alone")
})

t.test('taken over: a dead pid, a lock untouched for 3 intervals, this very pid, a garbled file', async (t) => {
  for (const [name, prepare] of [
    ['a dead pid', (dir: string) => { writeLock(dir, { pid: deadPid(), host: hostname() }) }],
    ['a live pid, untouched for 3 intervals (reused)', (dir: string) => { writeLock(dir, { pid: process.ppid, host: hostname() }, 3 * STATE_LOCK_TOUCH_MS + 1000) }],
    ['another host, untouched for 3 intervals', (dir: string) => { writeLock(dir, { pid: 1, host: 'elsewhere' }, 3 * STATE_LOCK_TOUCH_MS + 1000) }],
    ['this pid (a container restarted on its volume)', (dir: string) => { writeLock(dir, { pid: process.pid, host: hostname() }) }],
    ['a garbled file', (dir: string) => { fs.writeFileSync(path.join(dir, STATE_LOCK_FILE), '{"pid":') }]
  ] as const) {
    const dir = t.testdir({})
    prepare(dir)
    const lock = StateDirLock.acquire(dir)
    t.equal(JSON.parse(fs.readFileSync(path.join(dir, STATE_LOCK_FILE), 'utf8')).pid, process.pid, name)
    lock.release()
  }
})

t.test('another host, touched lately: refused (its pid cannot be checked from here)', async (t) => {
  const dir = t.testdir({})
  writeLock(dir, { pid: 1, host: 'other-node' })
  t.throws(() => StateDirLock.acquire(dir), { message: /pid 1 on other-node/ })
})

t.test("release leaves another process's lock alone", async (t) => {
  const dir = t.testdir({})
  const lock = StateDirLock.acquire(dir)
  writeLock(dir, { pid: process.ppid, host: hostname() }) // someone deleted ours and another proxy took the directory
  lock.release()
  t.ok(fs.existsSync(path.join(dir, STATE_LOCK_FILE)))
})

t.test('a state directory that cannot be made: a ConfigError naming it', async (t) => {
  const dir = t.testdir({ file: 'not a directory' })
  t.throws(() => StateDirLock.acquire(path.join(dir, 'file', 'state')), {
    name: 'ConfigError',
    message: /M2M_PROXY_STATE_DIR: .*state cannot be created \((ENOTDIR|EEXIST)\)/
  })
})

/** What a lock of this process records as its start (where /proc tells it). */
function ownStart (dir: string): string | undefined {
  const lock = StateDirLock.acquire(dir)
  const { start } = JSON.parse(fs.readFileSync(path.join(dir, STATE_LOCK_FILE), 'utf8')) as { start?: string }
  lock.release()
  return start
}

/** The start another live process on this host would record: its /proc entry read the same way. */
function startOf (pid: number): string {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  const boot = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
  return `${boot}/${stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]}`
}

// A proxy paused longer than three touches (SIGSTOP, a frozen container) is still the holder: before, a second proxy
// took the directory over, both ran, and each kept its own lockout count for one account until ThingSpace locked it.
const haveProc = fs.existsSync('/proc/self/stat')
t.test('a live holder paused past three touches is still the holder; a reuser of its pid is not', {
  skip: !haveProc && 'no /proc here: the age of the touch decides, as the test above checks'
}, async (t) => {
  const dir = t.testdir({})
  t.ok(ownStart(dir), 'the lock records its start')
  const stale = 3 * STATE_LOCK_TOUCH_MS + 60_000
  writeLock(dir, { pid: process.ppid, host: hostname(), start: startOf(process.ppid) }, stale)
  t.throws(() => StateDirLock.acquire(dir), { message: new RegExp(`in use by another m2m-session-proxy \\(pid ${process.ppid}`) })
  // The same pid with another start: a process that got the pid of a holder gone long ago.
  writeLock(dir, { pid: process.ppid, host: hostname(), start: `${startOf(process.ppid)}0` }, 0)
  const lock = StateDirLock.acquire(dir)
  t.equal(JSON.parse(fs.readFileSync(path.join(dir, STATE_LOCK_FILE), 'utf8')).pid, process.pid, 'taken over')
  lock.release()
})

t.test('a holder whose lock is taken over reports it and stops touching; one removed by hand is taken back', async (t) => {
  const dir = t.testdir({})
  const file = path.join(dir, STATE_LOCK_FILE)
  const lock = StateDirLock.acquire(dir, 20)
  const own = fs.readFileSync(file, 'utf8')
  fs.rmSync(file)
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.equal(fs.readFileSync(file, 'utf8'), own, 'removed by hand: written again')
  // Another proxy judged this one gone and took the directory.
  writeLock(dir, { pid: process.ppid, host: hostname() }, 0)
  const lost = await Promise.race([lock.lost, new Promise((resolve) => setTimeout(resolve, 5000, 'not reported'))])
  t.match(lost, {
    name: 'ConfigError',
    setting: 'M2M_PROXY_STATE_DIR',
    message: new RegExp(`was taken over by another process \\(it now holds .*"pid":${process.ppid}.*so this one stops`)
  })
  const before = fs.statSync(file).mtimeMs
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.equal(fs.statSync(file).mtimeMs, before, "the other's lock is no longer touched")
  lock.release()
  t.ok(fs.existsSync(file), 'nor removed at release')
})

t.test('a lock that cannot be read (a directory in its place): a ConfigError naming it', async (t) => {
  const dir = t.testdir({ [STATE_LOCK_FILE]: {} })
  t.throws(() => StateDirLock.acquire(dir), {
    name: 'ConfigError',
    setting: 'M2M_PROXY_STATE_DIR',
    message: /proxy\.lock cannot be (read|created) \((EISDIR|EEXIST)\)/
  })
})

// Deleted, renamed or unmounted: no other process holds it, so the proxy keeps its place (and its count in memory;
// logins pause while the count cannot be written) instead of stopping to be restarted with a count of 0.
t.test('a state directory removed under a holder is not a takeover: nothing reported, the lock is written back', async (t) => {
  const root = t.testdir({})
  const dir = path.join(root, 'state')
  const lock = StateDirLock.acquire(dir, 20)
  t.teardown(() => lock.release())
  fs.rmSync(dir, { recursive: true, force: true })
  const lost = await Promise.race([lock.lost, new Promise((resolve) => setTimeout(resolve, 200, 'not reported'))])
  t.equal(lost, 'not reported')
  fs.mkdirSync(dir)
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.equal(JSON.parse(fs.readFileSync(path.join(dir, STATE_LOCK_FILE), 'utf8')).pid, process.pid, 'back once it is there')
})
