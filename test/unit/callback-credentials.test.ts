// The callback credentials the proxy makes when the operator gives none: made once, kept, never replaced silently.

import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { GENERATED_CREDENTIALS_FILE, GENERATED_USERNAME, loadOrCreateCallbackCredentials } from '../../src/callbacks/credentials.js'
import { ConfigError } from '../../src/config/errors.js'

t.test('made once, then read back', async (t) => {
  const dir = t.testdir({})
  const made = loadOrCreateCallbackCredentials(dir)
  t.equal(made.username, GENERATED_USERNAME)
  t.match(made.password, /^[0-9a-f]{48}$/)
  t.same(loadOrCreateCallbackCredentials(dir), made, 'the same pair on the next start')
  t.not(loadOrCreateCallbackCredentials(t.testdir({})).password, made.password, 'another directory, another pair')
})

t.test('a damaged file is an error naming the file, never its content, and is left as it is', async (t) => {
  for (const content of ['{"username":"u","password":"short-secret"}', 'not json hunter2-0123456789abcdef', '[]']) {
    const dir = t.testdir({ [GENERATED_CREDENTIALS_FILE]: content })
    const error = t.throws(() => loadOrCreateCallbackCredentials(dir)) as ConfigError
    t.ok(error instanceof ConfigError, content)
    t.match(error.message, /^M2M_PROXY_CALLBACK_CREDENTIALS_FILE: is not set, and the pair the proxy made, .*callback-credentials\.json, does not hold/)
    t.notMatch(error.message, /short-secret|hunter2/, 'no content echoed')
    t.equal(fs.readFileSync(path.join(dir, GENERATED_CREDENTIALS_FILE), 'utf8'), content, 'not replaced')
  }
})

t.test('a file that cannot be read (a directory in its place): an error naming the file and the code', async (t) => {
  const dir = t.testdir({ [GENERATED_CREDENTIALS_FILE]: {} })
  const error = t.throws(() => loadOrCreateCallbackCredentials(dir)) as ConfigError
  t.ok(error instanceof ConfigError)
  t.match(error.message, /M2M_PROXY_CALLBACK_CREDENTIALS_FILE: is not set, and .*callback-credentials\.json cannot be read \(EISDIR\)/)
})
