// Unit tests of the credentials file: parsing, validation, and error messages that never reveal the file's content.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { CREDENTIAL_FIELDS, credentialsWhitespace, loadCredentials, parseCredentials } from '../../src/credentials/credentials.js'
import { CredentialsFile, credentialsExposure } from '../../src/credentials/credentials-file.js'
import { configErrorOf, printed } from '../helpers/config-error.js'

const GOOD = {
  username: 'uws-user@example.com',
  password: 'P@ssw0rd-9d3f1c',
  clientId: 'app-key-4b1e77',
  clientSecret: 'app-secret-8a6c02'
}

t.test('parseCredentials returns the four fields of a good file', async (t) => {
  t.same(parseCredentials(JSON.stringify(GOOD), 'creds.json'), GOOD)
  t.same(CREDENTIAL_FIELDS, ['username', 'password', 'clientId', 'clientSecret'])
})

t.test('parseCredentials ignores extra fields', async (t) => {
  const parsed = parseCredentials(JSON.stringify({ ...GOOD, comment: 'demo account' }), 'creds.json')
  t.same(parsed, GOOD)
  t.notOk('comment' in parsed)
})

t.test('loadCredentials reads a good file', async (t) => {
  const dir = t.testdir({ 'credentials.json': JSON.stringify(GOOD, null, 2) })
  t.same(loadCredentials(path.join(dir, 'credentials.json')), GOOD)
})

t.test('a missing file says it does not exist and names the setting and path', async (t) => {
  const dir = t.testdir({})
  const file = path.join(dir, 'nope.json')
  const error = configErrorOf(() => loadCredentials(file))
  t.equal(error.setting, 'M2M_PROXY_CREDENTIALS_FILE')
  t.match(error.message, 'does not exist')
  t.match(error.message, file)
})

t.test('a directory instead of a file is reported, not thrown raw', async (t) => {
  const dir = t.testdir({ 'creds.json': {} })
  const error = configErrorOf(() => loadCredentials(path.join(dir, 'creds.json')))
  t.equal(error.setting, 'M2M_PROXY_CREDENTIALS_FILE')
  t.match(error.message, 'EISDIR')
})

t.test(
  'an unreadable file says so (skipped as root, where permissions do not stop reads)',
  { skip: process.getuid?.() === 0 ? 'running as root' : false },
  async (t) => {
    const dir = t.testdir({ 'creds.json': JSON.stringify(GOOD) })
    const file = path.join(dir, 'creds.json')
    fs.chmodSync(file, 0o000)
    t.teardown(() => fs.chmodSync(file, 0o600))
    const error = configErrorOf(() => loadCredentials(file))
    t.match(error.message, 'not readable')
  }
)

t.test('malformed JSON: the message names the file but contains no part of its content', async (t) => {
  const secret = 'Zq9-SECRET-xK2mW7vT'
  const contents = [
    `{"username": "bob", "password": ${secret}}`,
    `${secret}`,
    `{"username": "bob", "password": "${secret}", }`,
    `{"password": "${secret}`,
    `{'password': '${secret}'}`
  ]
  for (const content of contents) {
    const dir = t.testdir({ 'creds.json': content })
    const file = path.join(dir, 'creds.json')
    for (const error of [
      configErrorOf(() => loadCredentials(file)),
      configErrorOf(() => parseCredentials(content, file))
    ]) {
      t.equal(error.setting, 'M2M_PROXY_CREDENTIALS_FILE')
      t.match(error.message, file)
      t.match(error.message, 'not valid JSON')
      const text = printed(error)
      for (let start = 0; start + 4 <= secret.length; start++) {
        const piece = secret.slice(start, start + 4)
        if (text.includes(piece)) t.fail(`the message contains "${piece}" from the file: ${error.message}`)
      }
      t.notOk(text.includes('bob'), 'no user name either')
      t.equal(error.cause, undefined, 'no parser error attached as cause')
    }
  }
})

t.test('each missing or empty field is named', async (t) => {
  for (const field of CREDENTIAL_FIELDS) {
    const missing: Record<string, unknown> = { ...GOOD }
    delete missing[field]
    for (const variant of [
      missing,
      { ...GOOD, [field]: '' },
      { ...GOOD, [field]: '   ' },
      { ...GOOD, [field]: 42 },
      { ...GOOD, [field]: null }
    ]) {
      const error = configErrorOf(() => parseCredentials(JSON.stringify(variant), 'creds.json'))
      t.equal(error.setting, 'M2M_PROXY_CREDENTIALS_FILE')
      t.match(error.message, `"${field}"`, `${field} named for ${JSON.stringify(variant[field])}`)
      for (const [other, value] of Object.entries(GOOD)) {
        if (other !== field) t.notOk(error.message.includes(value), `the value of ${other} is not printed`)
      }
    }
  }
})

t.test('the first missing field is named even when several are missing', async (t) => {
  const error = configErrorOf(() => parseCredentials(JSON.stringify({ clientId: 'a' }), 'creds.json'))
  t.match(error.message, '"username"')
})

t.test('non-object JSON is rejected', async (t) => {
  for (const content of ['[]', `["${GOOD.password}"]`, '"just a string"', '42', 'null', 'true']) {
    const error = configErrorOf(() => parseCredentials(content, 'creds.json'))
    t.equal(error.setting, 'M2M_PROXY_CREDENTIALS_FILE', content)
    t.match(error.message, 'JSON object')
    t.notOk(error.message.includes(GOOD.password))
  }
})

t.test('loadCredentials validates what it reads', async (t) => {
  const dir = t.testdir({ 'creds.json': JSON.stringify({ ...GOOD, clientSecret: '' }) })
  const error = configErrorOf(() => loadCredentials(path.join(dir, 'creds.json')))
  t.match(error.message, '"clientSecret"')
  t.notOk(printed(error).includes(GOOD.password))
})

t.test(
  'credentialsExposure: a warning when the group or others can read or write the file, none for 0600 or 0400',
  async (t) => {
    const dir = t.testdir({ 'creds.json': JSON.stringify(GOOD) })
    const file = path.join(dir, 'creds.json')
    const cases: Array<[number, string | undefined]> = [
      [0o600, undefined],
      [0o400, undefined],
      [0o640, 'its group'],
      [0o604, 'other users'],
      [0o644, 'its group and other users'],
      [0o620, 'its group']
    ]
    for (const [mode, who] of cases) {
      fs.chmodSync(file, mode)
      const warning = credentialsExposure(file)
      if (who === undefined) {
        t.equal(warning, undefined, mode.toString(8))
        continue
      }
      t.match(warning, `${file} is accessible to ${who} (mode 0${mode.toString(8)})`, mode.toString(8))
      t.match(warning, `chmod 600 ${file}`)
      t.notOk(warning?.includes(GOOD.password), 'no secret in it')
    }
    t.equal(
      credentialsExposure(path.join(dir, 'missing.json')),
      undefined,
      'a missing file is reported by the read, not here'
    )
  }
)

t.test(
  "credentialsExposure: another user's file read through the proxy's group (a Secret with fsGroup) is read access only",
  async (t) => {
    const dir = t.testdir({ 'creds.json': JSON.stringify(GOOD) })
    const file = path.join(dir, 'creds.json')
    const stats = fs.statSync(file)
    // A non-root proxy that is not the file's owner, in the file's group: as the kubelet mounts a Secret with fsGroup.
    const member = { uid: stats.uid + 54_321, groups: [stats.gid] }
    fs.chmodSync(file, 0o440)
    t.equal(credentialsExposure(file, member), undefined, '0440: the group is how the proxy reads it')
    fs.chmodSync(file, 0o460)
    t.match(credentialsExposure(file, member), `${file} is accessible to its group (mode 0460)`, 'group write counts')
    fs.chmodSync(file, 0o444)
    t.match(credentialsExposure(file, member), `${file} is accessible to other users (mode 0444)`, 'others count')
    fs.chmodSync(file, 0o440)
    const outsider = { uid: stats.uid + 54_321, groups: [stats.gid + 54_321] }
    t.match(credentialsExposure(file, outsider), `${file} is accessible to its group (mode 0440)`, 'not in its group')
    t.match(credentialsExposure(file, { uid: 0, groups: [stats.gid] }), 'its group', 'root needs no group to read it')
  }
)

t.test('a rotation through a symbolic link replaces the file it leads to, and the link stays', async (t) => {
  const dir = t.testdir({ secrets: { 'creds.json': JSON.stringify({ ...GOOD, note: 'kept' }) }, state: {} })
  const target = path.join(dir, 'secrets', 'creds.json')
  const link = path.join(dir, 'state', 'credentials.json')
  fs.symlinkSync(path.relative(path.dirname(link), target), link)
  const file = new CredentialsFile(link)
  t.equal(file.rewriteProblem(), undefined, 'rewritable: the directory of the file itself is')
  file.writePassword('rotated-7f2e')
  t.ok(fs.lstatSync(link).isSymbolicLink(), 'still a link')
  t.same(JSON.parse(fs.readFileSync(target, 'utf8')), { ...GOOD, note: 'kept', password: 'rotated-7f2e' }, 'the file it leads to')
  t.equal(loadCredentials(link).password, 'rotated-7f2e', 'read through the link')
  t.equal(fs.statSync(target).mode & 0o777, 0o600)
  t.same(fs.readdirSync(path.join(dir, 'state')), ['credentials.json'], 'nothing left beside the link')
})

t.test('a rewrite cut short (killed before the rename) is named at start-up, never quoted', async (t) => {
  const newPassword = 'Wh0a1545a84d-new'
  const dir = t.testdir({
    'credentials.json': JSON.stringify(GOOD),
    // What writeFileAtomicSync leaves when killed between its fsync and its rename: the rotated password, whole.
    '.credentials.json.0123456789ab.tmp': JSON.stringify({ ...GOOD, password: newPassword }),
    '.login-guard.json.0123456789ab.tmp': '{}',
    '.credentials.json.probe-01234567': ''
  })
  const file = new CredentialsFile(path.join(dir, 'credentials.json'))
  const warning = file.interruptedRewrites() ?? ''
  t.match(warning, path.join(dir, '.credentials.json.0123456789ab.tmp'), 'names the file left behind')
  t.notMatch(warning, 'login-guard', 'only the credentials file\'s own')
  t.notMatch(warning, 'probe', 'not the rotation\'s probe')
  t.notMatch(warning, newPassword, 'never its content')
  fs.rmSync(path.join(dir, '.credentials.json.0123456789ab.tmp'))
  t.equal(file.interruptedRewrites(), undefined, 'nothing to say without one')
})

t.test('a byte order mark (Windows editors) is read past, and a rotation writes the file without it', async (t) => {
  const dir = t.testdir({ 'credentials.json': '\ufeff' + JSON.stringify(GOOD) })
  const file = path.join(dir, 'credentials.json')
  t.same(loadCredentials(file), GOOD)
  new CredentialsFile(file).writePassword('rotated-91ab')
  t.same(loadCredentials(file), { ...GOOD, password: 'rotated-91ab' })
  t.equal(fs.readFileSync(file, 'utf8').charCodeAt(0), '{'.charCodeAt(0))
})

t.test('white space around a value is kept, and named in a warning that never quotes it', async (t) => {
  t.equal(credentialsWhitespace(GOOD, 'creds.json'), undefined)
  const padded = { ...GOOD, password: `${GOOD.password} `, clientSecret: `\n${GOOD.clientSecret}` }
  t.same(parseCredentials(JSON.stringify(padded), 'creds.json'), padded, 'sent as written')
  const warning = credentialsWhitespace(padded, 'creds.json') ?? ''
  t.match(warning, /^password and clientSecret in creds\.json begin or end with white space/)
  t.notOk(warning.includes(GOOD.password) || warning.includes(GOOD.clientSecret), 'no value quoted')
  t.match(credentialsWhitespace({ ...GOOD, username: ' x' }, 'f') ?? '', /^username in f begins or ends/)
})
