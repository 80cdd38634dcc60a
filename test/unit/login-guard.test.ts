// Unit tests of the lockout guard: a persisted count of consecutive possibly-rejected logins.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { LOGIN_GUARD_FILE, LoginGuard } from '../../src/session/login-guard.js'
import { configErrorOf } from '../helpers/config-error.js'

const ALICE = { username: 'alice@example.com', password: 'Wh0a1545a84d-initial' }

/** Counts one rejected login the way the session manager does: counted before sending, kept after a 4xx. */
function reject (guard: LoginGuard, times = 1): void {
  for (let i = 0; i < times; i++) guard.beginAttempt()
}

t.test('a fresh guard starts at zero and creates its state file', async (t) => {
  const dir = t.testdir({})
  const guard = LoginGuard.open(dir, 2, ALICE)
  t.equal(guard.consecutiveRejections, 0)
  t.equal(guard.maxFailures, 2)
  t.notOk(guard.engaged)
  t.ok(fs.existsSync(path.join(dir, LOGIN_GUARD_FILE)), 'state file written at open')
})

t.test('a missing state directory is created', async (t) => {
  const dir = path.join(t.testdir({}), 'nested', 'state')
  const guard = LoginGuard.open(dir, 2, ALICE)
  t.equal(guard.consecutiveRejections, 0)
  t.ok(fs.statSync(dir).isDirectory())
})

t.test('the count persists across a new open() of the same directory', async (t) => {
  const dir = t.testdir({})
  const first = LoginGuard.open(dir, 3, ALICE)
  reject(first)
  t.equal(first.consecutiveRejections, 1)
  const second = LoginGuard.open(dir, 3, ALICE)
  t.equal(second.consecutiveRejections, 1, 'survives a restart')
  reject(second)
  const third = LoginGuard.open(dir, 3, { ...ALICE })
  t.equal(third.consecutiveRejections, 2)
  t.notOk(third.engaged)
})

t.test('engaged once the count reaches maxFailures, also after a restart', async (t) => {
  for (const max of [1, 2, 4]) {
    const dir = t.testdir({})
    const guard = LoginGuard.open(dir, max, ALICE)
    for (let i = 1; i < max; i++) {
      reject(guard)
      t.notOk(guard.engaged, `max ${max}: not engaged after ${i}`)
    }
    reject(guard)
    t.ok(guard.engaged, `max ${max}: engaged after ${max}`)
    t.ok(LoginGuard.open(dir, max, ALICE).engaged, `max ${max}: still engaged after a restart`)
  }
})

t.test('a lower maxFailures after a restart engages at once', async (t) => {
  const dir = t.testdir({})
  reject(LoginGuard.open(dir, 4, ALICE), 2)
  t.ok(LoginGuard.open(dir, 2, ALICE).engaged)
  t.notOk(LoginGuard.open(dir, 3, ALICE).engaged)
})

t.test('recordSuccess resets the count, on disk too', async (t) => {
  const dir = t.testdir({})
  const guard = LoginGuard.open(dir, 2, ALICE)
  reject(guard, 2)
  t.ok(guard.engaged)
  guard.recordSuccess()
  t.equal(guard.consecutiveRejections, 0)
  t.notOk(guard.engaged)
  t.equal(LoginGuard.open(dir, 2, ALICE).consecutiveRejections, 0)
})

t.test('attemptNotCounted undoes one beginAttempt, never below zero', async (t) => {
  const dir = t.testdir({})
  const guard = LoginGuard.open(dir, 2, ALICE)
  reject(guard)
  guard.beginAttempt()
  t.equal(guard.consecutiveRejections, 2)
  guard.attemptNotCounted()
  t.equal(guard.consecutiveRejections, 1)
  t.equal(LoginGuard.open(dir, 2, ALICE).consecutiveRejections, 1, 'persisted')
  guard.attemptNotCounted()
  guard.attemptNotCounted()
  t.equal(guard.consecutiveRejections, 0)
})

t.test('a crash between beginAttempt and the answer still counts the attempt', async (t) => {
  const dir = t.testdir({})
  LoginGuard.open(dir, 2, ALICE).beginAttempt() // process dies here
  t.equal(LoginGuard.open(dir, 2, ALICE).consecutiveRejections, 1)
})

t.test('different credentials reset the count: opening with another password', async (t) => {
  const dir = t.testdir({})
  reject(LoginGuard.open(dir, 2, ALICE), 2)
  const rotated = LoginGuard.open(dir, 2, { ...ALICE, password: 'Wh0a1545a84d-rotated' })
  t.equal(rotated.consecutiveRejections, 0)
  t.notOk(rotated.engaged)
  t.equal(LoginGuard.open(dir, 2, { ...ALICE, password: 'Wh0a1545a84d-rotated' }).consecutiveRejections, 0, 'the reset is persisted')
})

t.test('different credentials reset the count: another user name', async (t) => {
  const dir = t.testdir({})
  reject(LoginGuard.open(dir, 2, ALICE), 2)
  t.equal(LoginGuard.open(dir, 2, { ...ALICE, username: 'bob@example.com' }).consecutiveRejections, 0)
})

t.test('a user name mistyped and corrected: the account takes up its count, never a 5th failure in a row', async (t) => {
  const { ACCOUNT_FAILURE_CEILING } = await import('../../src/session/login-guard.js')
  const dir = t.testdir({})
  const sent = new Map<string, number>() // failed logins in a row reaching each account, as ThingSpace counts them
  /** What the proxy does with these credentials: logins until the guard stops it, each one rejected. */
  const tryUntilStopped = (guard: LoginGuard, username: string): void => {
    while (!guard.engaged) {
      guard.beginAttempt()
      sent.set(username, (sent.get(username) ?? 0) + 1)
    }
  }
  const guard = LoginGuard.open(dir, 2, { username: 'alice', password: 'wrong-1' })
  tryUntilStopped(guard, 'alice')
  guard.useCredentials({ username: 'alcie', password: 'wrong-1' }) // the typo, in the credentials file
  tryUntilStopped(guard, 'alcie')
  guard.useCredentials({ username: 'alice', password: 'wrong-2' }) // corrected, with a wrong password
  t.equal(guard.accountConsecutiveRejections, 2, "alice's two failures are still counted")
  tryUntilStopped(guard, 'alice')
  // Restarted with yet another wrong password: the count is on disk.
  const restarted = LoginGuard.open(dir, 2, { username: 'alice', password: 'wrong-3' })
  tryUntilStopped(restarted, 'alice')
  t.equal(sent.get('alice'), ACCOUNT_FAILURE_CEILING, 'alice: stopped at the ceiling')
  t.equal(sent.get('alcie'), 2)
  t.ok(restarted.atAccountCeiling)
  // Back to the typo after a restart: its own count, where it was left.
  const typo = LoginGuard.open(dir, 2, { username: 'alcie', password: 'wrong-4' })
  t.equal(typo.accountConsecutiveRejections, 2)
  typo.beginAttempt()
  typo.recordSuccess()
  t.ok(typo.useCredentials({ username: 'alice', password: 'wrong-5' }))
  t.ok(typo.atAccountCeiling, "a success of another account does not reset alice's count")
  const state = JSON.parse(fs.readFileSync(path.join(dir, LOGIN_GUARD_FILE), 'utf8')) as Record<string, unknown>
  t.equal(state.version, 1, 'the file keeps its version: earlier versions still read it')
  t.same(Object.values(state.otherAccounts as object), [], 'an account with no failures left is not kept')
})

t.test('user names that differ in case only count as one account', async (t) => {
  const dir = t.testdir({})
  const guard = LoginGuard.open(dir, 2, { username: 'Alice@Example.com', password: 'wrong-1' })
  reject(guard, 2)
  t.ok(guard.useCredentials({ username: 'alice@example.com', password: 'wrong-1' }))
  t.equal(guard.accountConsecutiveRejections, 2)
  t.equal(guard.consecutiveRejections, 0, 'other credentials all the same')
})

t.test('a state file written before the counts per account: the count of its account is kept', async (t) => {
  const dir = t.testdir({})
  const identity = { username: 'Alice', password: 'wrong-1' }
  const guard = LoginGuard.open(dir, 2, identity)
  reject(guard, 3)
  // As earlier versions wrote it: the account id of the user name as written, no other accounts.
  const file = path.join(dir, LOGIN_GUARD_FILE)
  const state = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>
  const { createHmac } = await import('node:crypto')
  const legacyId = createHmac('sha256', state.salt as string).update('Alice').update('\0').digest('hex').slice(0, 32)
  t.not(legacyId, state.accountId, 'the id differs from the case-folded one')
  fs.writeFileSync(file, JSON.stringify({ ...state, accountId: legacyId, otherAccounts: undefined }))
  t.equal(LoginGuard.open(dir, 2, { username: 'Alice', password: 'wrong-2' }).accountConsecutiveRejections, 3)
  const away = LoginGuard.open(dir, 2, { username: 'bob', password: 'x' })
  fs.writeFileSync(file, JSON.stringify({
    ...JSON.parse(fs.readFileSync(file, 'utf8')) as object,
    otherAccounts: { [legacyId]: 3 }
  }))
  t.equal(away.accountConsecutiveRejections, 0)
  t.equal(LoginGuard.open(dir, 2, { username: 'Alice', password: 'wrong-3' }).accountConsecutiveRejections, 3, 'also from the other accounts')
})

t.test('user name and password are not confused by concatenation', async (t) => {
  const dir = t.testdir({})
  reject(LoginGuard.open(dir, 2, { username: 'ab', password: 'c' }), 2)
  t.equal(LoginGuard.open(dir, 2, { username: 'a', password: 'bc' }).consecutiveRejections, 0)
})

t.test('useCredentials releases the guard only when the credentials differ', async (t) => {
  const dir = t.testdir({})
  const guard = LoginGuard.open(dir, 2, ALICE)
  reject(guard, 2)
  t.equal(guard.useCredentials({ ...ALICE }), false, 'same credentials: no change')
  t.ok(guard.engaged)
  t.equal(guard.useCredentials({ ...ALICE, password: 'new-password-1' }), true)
  t.equal(guard.consecutiveRejections, 0)
  t.notOk(guard.engaged)
  t.equal(LoginGuard.open(dir, 2, { ...ALICE, password: 'new-password-1' }).consecutiveRejections, 0, 'persisted for the new credentials')
  reject(guard)
  t.equal(LoginGuard.open(dir, 2, ALICE).consecutiveRejections, 0, 'going back to the old credentials starts afresh too')
})

t.test('a corrupt state file is a ConfigError naming M2M_PROXY_STATE_DIR', async (t) => {
  const corrupt = [
    'not json',
    '',
    '[]',
    'null',
    JSON.stringify({ version: 2, credentialsId: 'x', salt: 'y', consecutiveRejections: 0 }),
    JSON.stringify({ version: 1, salt: 'y', consecutiveRejections: 0 }),
    JSON.stringify({ version: 1, credentialsId: 'x', consecutiveRejections: 0 }),
    JSON.stringify({ version: 1, credentialsId: 'x', salt: 'y', consecutiveRejections: -1 }),
    JSON.stringify({ version: 1, credentialsId: 'x', salt: 'y', consecutiveRejections: 1.5 }),
    JSON.stringify({ version: 1, credentialsId: 'x', salt: 'y', consecutiveRejections: '1' }),
    JSON.stringify({ version: 1, credentialsId: 'x', accountId: 'z', salt: 'y', consecutiveRejections: 0, accountConsecutiveRejections: 0, otherAccounts: { a: -1 } }),
    JSON.stringify({ version: 1, credentialsId: 'x', accountId: 'z', salt: 'y', consecutiveRejections: 0, accountConsecutiveRejections: 0, otherAccounts: [1] })
  ]
  for (const content of corrupt) {
    const dir = t.testdir({ [LOGIN_GUARD_FILE]: content })
    const error = configErrorOf(() => LoginGuard.open(dir, 2, ALICE))
    t.equal(error.setting, 'M2M_PROXY_STATE_DIR', JSON.stringify(content))
    t.match(error.message, LOGIN_GUARD_FILE)
    t.equal(fs.readFileSync(path.join(dir, LOGIN_GUARD_FILE), 'utf8'), content, 'a corrupt file is left for the operator, not reset')
  }
})

// Rolled back after a newer release ran on the directory: deleting the file, as a corrupt one's advice says,
// would throw away the count that release kept.
t.test('a state file of a newer format: run that release again, never "delete the file"', async (t) => {
  const content = JSON.stringify({ version: 2, accountId: 'z', consecutiveRejections: 3 })
  const dir = t.testdir({ [LOGIN_GUARD_FILE]: content })
  const error = configErrorOf(() => LoginGuard.open(dir, 2, ALICE))
  t.equal(error.setting, 'M2M_PROXY_STATE_DIR')
  t.match(error.message, /login-guard\.json was written by a newer release of m2m-session-proxy \(format 2; this one/)
  t.match(error.message, /this one reads 1\)/)
  t.match(error.message, /run that release again.*Do not delete the file/)
  t.notMatch(error.message, /corrupt/)
  t.equal(fs.readFileSync(path.join(dir, LOGIN_GUARD_FILE), 'utf8'), content, 'left as it is')
})

t.test('a state file that is a link to nothing (a volume not mounted): refused, never read as a count of 0', async (t) => {
  const dir = t.testdir({})
  const file = path.join(dir, LOGIN_GUARD_FILE)
  fs.symlinkSync(path.join(dir, 'unmounted', 'login-guard.json'), file)
  const error = configErrorOf(() => LoginGuard.open(dir, 2, ALICE))
  t.equal(error.setting, 'M2M_PROXY_STATE_DIR')
  t.match(error.message, /login-guard\.json is a symbolic link to .*unmounted.*, which does not exist/)
  t.ok(fs.lstatSync(file).isSymbolicLink(), 'the link is left as it is')
  // A link whose file was removed: refused the same way.
  fs.rmSync(file)
  fs.writeFileSync(path.join(dir, 'kept.json'), '')
  fs.symlinkSync(path.join(dir, 'kept.json'), file)
  fs.rmSync(path.join(dir, 'kept.json'))
  t.throws(() => LoginGuard.open(dir, 2, ALICE), { message: /symbolic link/ }, 'its target removed: refused too')
})

t.test('the state file never holds the user name or password in clear', async (t) => {
  const identity = { username: 'carol.uws.user@example.com', password: 'Pw-7c1e9a0b3d' }
  const dir = t.testdir({})
  const guard = LoginGuard.open(dir, 2, identity)
  reject(guard)
  guard.useCredentials({ ...identity, password: 'Pw-second-44e1' })
  reject(guard)
  const files = fs.readdirSync(dir)
  t.same(files, [LOGIN_GUARD_FILE], 'no temporary files left behind')
  const content = fs.readFileSync(path.join(dir, LOGIN_GUARD_FILE), 'utf8')
  for (const secret of [identity.username, identity.password, 'Pw-second-44e1', 'carol', Buffer.from(identity.password).toString('base64'), Buffer.from(identity.password).toString('hex')]) {
    t.notOk(content.includes(secret), `state file does not contain ${secret.slice(0, 3)}…`)
  }
  const state = JSON.parse(content) as Record<string, unknown>
  t.equal(state.consecutiveRejections, 1)
  if (process.platform !== 'win32') t.equal(fs.statSync(path.join(dir, LOGIN_GUARD_FILE)).mode & 0o077, 0, 'not readable by others')
})

t.test('the credentials id is salted: the same credentials give different ids in different directories', async (t) => {
  const root = t.testdir({ a: {}, b: {} })
  const a = path.join(root, 'a')
  const b = path.join(root, 'b')
  LoginGuard.open(a, 2, ALICE)
  LoginGuard.open(b, 2, ALICE)
  const idA = (JSON.parse(fs.readFileSync(path.join(a, LOGIN_GUARD_FILE), 'utf8')) as { credentialsId: string }).credentialsId
  const idB = (JSON.parse(fs.readFileSync(path.join(b, LOGIN_GUARD_FILE), 'utf8')) as { credentialsId: string }).credentialsId
  t.not(idA, idB)
})

t.test('a state dir that cannot be created (under a regular file) is a ConfigError naming M2M_PROXY_STATE_DIR', async (t) => {
  const dir = t.testdir({ 'plain-file': 'x' })
  const stateDir = path.join(dir, 'plain-file', 'state')
  const error = configErrorOf(() => LoginGuard.open(stateDir, 2, ALICE))
  t.equal(error.setting, 'M2M_PROXY_STATE_DIR')
  t.notOk(error.message.includes(ALICE.password))
})

t.test('an unwritable state dir is a ConfigError naming M2M_PROXY_STATE_DIR', { skip: process.getuid?.() === 0 ? 'running as root: chmod does not stop writes' : false }, async (t) => {
  const dir = t.testdir({ state: {} })
  const stateDir = path.join(dir, 'state')
  fs.chmodSync(stateDir, 0o500)
  t.teardown(() => fs.chmodSync(stateDir, 0o700))
  const error = configErrorOf(() => LoginGuard.open(stateDir, 2, ALICE))
  t.equal(error.setting, 'M2M_PROXY_STATE_DIR')
  t.match(error.message, 'not writable')
})

t.test('a state file path that is a directory is a ConfigError naming M2M_PROXY_STATE_DIR', async (t) => {
  const dir = t.testdir({ [LOGIN_GUARD_FILE]: {} })
  const error = configErrorOf(() => LoginGuard.open(dir, 2, ALICE))
  t.equal(error.setting, 'M2M_PROXY_STATE_DIR')
})

t.test('new passwords for the same account never add up to the 5th failed login', async (t) => {
  const { ACCOUNT_FAILURE_CEILING } = await import('../../src/session/login-guard.js')
  const dir = t.testdir({})
  const user = 'ceiling-user'
  const guard = LoginGuard.open(dir, 2, { username: user, password: 'first' })
  guard.beginAttempt()
  guard.beginAttempt()
  t.ok(guard.engaged, 'engaged after two with the first password')
  t.ok(guard.useCredentials({ username: user, password: 'second' }))
  t.notOk(guard.engaged, 'a new password gets its own tries')
  guard.beginAttempt()
  guard.beginAttempt()
  t.equal(guard.accountConsecutiveRejections, ACCOUNT_FAILURE_CEILING)
  t.ok(guard.useCredentials({ username: user, password: 'third' }))
  t.ok(guard.engaged, 'at the account ceiling even new credentials wait')
  t.ok(guard.atAccountCeiling)
  const reopened = LoginGuard.open(dir, 2, { username: user, password: 'fourth' })
  t.ok(reopened.engaged, 'the ceiling survives a restart with yet another password')
  t.ok(reopened.useCredentials({ username: 'another-account', password: 'x' }))
  t.notOk(reopened.engaged, 'another account starts from zero')
  reopened.beginAttempt()
  reopened.recordSuccess()
  t.equal(reopened.accountConsecutiveRejections, 0, 'a success resets the account count')
})
