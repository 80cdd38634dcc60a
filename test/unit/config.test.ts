// Unit tests of the configuration loader: defaults < config file < environment, and every validation rule.
import path from 'node:path'
import t from 'tap'
import { ConfigError } from '../../src/config/errors.js'
import { ADMIN_TOKEN_MIN_LENGTH, createConfig, KNOWN_ENV_NAMES, type ProxyConfig } from '../../src/config/load.js'
import { configErrorOf, printed } from '../helpers/config-error.js'

const CWD = '/srv/proxy'
const CREDS = { M2M_PROXY_CREDENTIALS_FILE: 'secrets/credentials.json' }

interface FakeFs {
  readTextFile: (file: string) => string
  reads: string[]
}

/** A file reader over an in-memory map of absolute paths; missing files throw ENOENT like fs does. */
function fakeFs (files: Record<string, string> = {}): FakeFs {
  const reads: string[] = []
  return {
    reads,
    readTextFile: (file: string) => {
      reads.push(file)
      const content = files[file]
      if (content === undefined) {
        throw Object.assign(new Error(`ENOENT: no such file or directory, open '${file}'`), { code: 'ENOENT' })
      }
      return content
    }
  }
}

function load (env: Record<string, string>, files: Record<string, string> = {}): ProxyConfig {
  return createConfig({ env, readTextFile: fakeFs(files).readTextFile, cwd: CWD })
}

/** Runs `fn`, which must throw a ConfigError, and returns that error. */
function withConfigFile (
  content: unknown,
  env: Record<string, string> = CREDS
): { env: Record<string, string>; files: Record<string, string> } {
  return {
    env: { ...env, M2M_PROXY_CONFIG: 'proxy.json' },
    files: { [path.join(CWD, 'proxy.json')]: typeof content === 'string' ? content : JSON.stringify(content) }
  }
}

t.test('M2M_PROXY_LOG_BUFFER_BYTES is 0 to 16383 (sonic-boom writes at most 16 KiB at once)', async (t) => {
  for (const bad of ['-1', '16384', '4k']) {
    t.equal(
      configErrorOf(() => load({ ...CREDS, M2M_PROXY_LOG_BUFFER_BYTES: bad })).setting,
      'M2M_PROXY_LOG_BUFFER_BYTES',
      `value ${bad}`
    )
  }
  t.equal(load({ ...CREDS, M2M_PROXY_LOG_BUFFER_BYTES: '0' }).logBufferBytes, 0)
  t.equal(load({ ...CREDS, M2M_PROXY_LOG_BUFFER_BYTES: '16383' }).logBufferBytes, 16383)
})

t.test('defaults apply when only the credentials file is given', async (t) => {
  const fs = fakeFs()
  const config = createConfig({ env: { ...CREDS }, readTextFile: fs.readTextFile, cwd: CWD })
  t.equal(config.upstream, 'https://thingspace.verizon.com')
  t.equal(config.host, '127.0.0.1')
  t.equal(config.port, 8080)
  t.equal(config.adminHost, '127.0.0.1')
  t.equal(config.adminPort, 9090)
  t.equal(config.sessionIdleSeconds, 1200)
  t.equal(config.upstreamTimeoutMs, 30000)
  t.equal(config.bodyLimitBytes, 1048576)
  t.equal(config.maxLoginFailures, 2)
  t.equal(config.logLevel, 'info')
  t.equal(config.logBufferBytes, 4096)
  t.equal(config.logRequests, true, 'a line per request')
  t.same(config.allowedHosts, [])
  t.same(config.forwardPrefixes, ['/api/'], 'every ThingSpace API family on the upstream host')
  t.equal(config.requestTimeoutMs, 30000)
  t.equal(config.maxConnections, 4096)
  t.same(
    [
      config.maxInFlight,
      config.maxQueued,
      config.queueTimeoutMs,
      config.bodyMemoryBytes,
      config.maxPipelined,
      config.upstreamConnections
    ],
    [128, 4096, 30000, 32 * 1024 * 1024, 8, 128],
    'the admission defaults'
  )
  t.equal(config.adminMaxConnections, 256)
  t.equal(config.idleConnectionTimeoutMs, 5000, 'a connection that sends nothing is closed after seconds')
  t.equal(config.adminToken, undefined)
  t.equal(config.credentialsFile, path.join(CWD, 'secrets/credentials.json'))
  t.equal(config.stateDir, path.join(CWD, 'secrets'))
  t.same(fs.reads, [], 'no file is read without M2M_PROXY_CONFIG')
  t.notOk('adminTokenFile' in config, 'the token file path is not part of the resolved config')
})

t.test('environment overrides the config file, which overrides defaults', async (t) => {
  const { env, files } = withConfigFile(
    {
      '// about': 'comment keys start with //',
      '//port': 'also a comment',
      port: 8081,
      sessionIdleSeconds: 600,
      logLevel: 'debug',
      upstream: 'http://127.0.0.1:9999',
      maxLoginFailures: 3
    },
    { ...CREDS, M2M_PROXY_PORT: '8082', M2M_PROXY_MAX_LOGIN_FAILURES: '1' }
  )
  const fs = fakeFs(files)
  const config = createConfig({ env, readTextFile: fs.readTextFile, cwd: CWD })
  t.equal(config.port, 8082, 'environment wins over the file')
  t.equal(config.maxLoginFailures, 1, 'environment wins over the file')
  t.equal(config.sessionIdleSeconds, 600, 'file wins over the default')
  t.equal(config.logLevel, 'debug', 'file wins over the default')
  t.equal(config.upstream, 'http://127.0.0.1:9999', 'file wins over the default')
  t.equal(config.adminPort, 9090, 'default when neither sets it')
  t.equal(config.bodyLimitBytes, 1048576, 'default when neither sets it')
  t.same(fs.reads, [path.join(CWD, 'proxy.json')], 'the config file is resolved against cwd')
})

t.test('the config file can name the credentials file; an empty environment value does not override', async (t) => {
  const { env, files } = withConfigFile({ credentialsFile: '/etc/m2m/creds.json', port: 8181 }, { M2M_PROXY_PORT: '' })
  const config = load(env, files)
  t.equal(config.credentialsFile, '/etc/m2m/creds.json')
  t.equal(config.stateDir, '/etc/m2m')
  t.equal(config.port, 8181)
})

t.test('the config file accepts numbers written as strings and an absolute path', async (t) => {
  const config = createConfig({
    env: { ...CREDS, M2M_PROXY_CONFIG: '/etc/m2m/proxy.json' },
    readTextFile: fakeFs({ '/etc/m2m/proxy.json': JSON.stringify({ upstreamTimeoutMs: '5000' }) }).readTextFile,
    cwd: CWD
  })
  t.equal(config.upstreamTimeoutMs, 5000)
})

t.test('an unknown key in the config file is a ConfigError naming M2M_PROXY_CONFIG and the key', async (t) => {
  const { env, files } = withConfigFile({ port: 8081, sesionIdleSeconds: 600 })
  const error = configErrorOf(() => load(env, files))
  t.equal(error.setting, 'M2M_PROXY_CONFIG')
  t.match(error.message, 'sesionIdleSeconds')
  t.match(error.message, 'M2M_PROXY_CONFIG')
})

t.test('names of the object prototype are unknown keys, and "__proto__" sets nothing', async (t) => {
  for (const content of [
    '{"__proto__": {"port": 1, "adminPort": 0}}',
    '{"constructor": 1}',
    '{"hasOwnProperty": 1}',
    '{"toString": "x"}'
  ]) {
    const { env, files } = withConfigFile(content)
    const error = configErrorOf(() => load(env, files))
    t.equal(error.setting, 'M2M_PROXY_CONFIG', content)
    t.match(error.message, /has unknown key "(__proto__|constructor|hasOwnProperty|toString)"/, content)
  }
})

t.test('environment-style names are not config-file keys', async (t) => {
  const { env, files } = withConfigFile({ M2M_PROXY_PORT: 8081 })
  const error = configErrorOf(() => load(env, files))
  t.equal(error.setting, 'M2M_PROXY_CONFIG')
  t.match(error.message, 'M2M_PROXY_PORT')
})

t.test('a config file that is not a JSON object is rejected', async (t) => {
  for (const content of ['[1, 2]', '"port"', '42', 'null']) {
    const { env, files } = withConfigFile(content)
    const error = configErrorOf(() => load(env, files))
    t.equal(error.setting, 'M2M_PROXY_CONFIG', `content ${content}`)
  }
})

t.test('malformed config-file JSON is a ConfigError naming M2M_PROXY_CONFIG', async (t) => {
  const { env, files } = withConfigFile('{ "port": 8081, ')
  const error = configErrorOf(() => load(env, files))
  t.equal(error.setting, 'M2M_PROXY_CONFIG')
  t.match(error.message, /^M2M_PROXY_CONFIG: /)
  t.match(error.message, 'proxy.json')
  t.match(error.message, /not valid JSON/)
})

t.test('malformed config-file JSON does not echo the file content (it may hold the admin token)', async (t) => {
  const secret = 'tok_live_9f8e7d6c5b4a39281706'
  const { env, files } = withConfigFile(`{\n  "port": 8081,\n  "adminToken": ${secret}\n}\n`)
  const error = configErrorOf(() => load(env, files))
  t.equal(error.setting, 'M2M_PROXY_CONFIG')
  for (let start = 0; start + 6 <= secret.length; start++) {
    const piece = secret.slice(start, start + 6)
    t.notOk(printed(error).includes(piece), `no part of the token (${piece}) is printed`)
  }
})

t.test('a config file that cannot be read is a ConfigError naming M2M_PROXY_CONFIG', async (t) => {
  const error = configErrorOf(() => load({ ...CREDS, M2M_PROXY_CONFIG: 'missing.json' }))
  t.equal(error.setting, 'M2M_PROXY_CONFIG')
  t.match(error.message, 'missing.json')
  t.match(error.message, 'ENOENT')
})

t.test('bad ports are rejected naming the setting', async (t) => {
  for (const bad of ['abc', '70000', '-1', '65536', '80.5', '8080x', '0x1F90']) {
    const error = configErrorOf(() => load({ ...CREDS, M2M_PROXY_PORT: bad }))
    t.equal(error.setting, 'M2M_PROXY_PORT', `M2M_PROXY_PORT=${bad}`)
    t.match(error.message, /^M2M_PROXY_PORT: /)
  }
  for (const bad of ['abc', '70000', '-1']) {
    const error = configErrorOf(() => load({ ...CREDS, M2M_PROXY_ADMIN_PORT: bad }))
    t.equal(error.setting, 'M2M_PROXY_ADMIN_PORT', `M2M_PROXY_ADMIN_PORT=${bad}`)
  }
  const { env, files } = withConfigFile({ port: 70000 })
  const fromFile = configErrorOf(() => load(env, files))
  t.match(fromFile.setting, /^M2M_PROXY_PORT\b/, 'a bad port in the file names the variable')
  t.match(fromFile.setting, '"port"', 'and the file key')
})

t.test('ports 0 (ephemeral) and 65535 are accepted', async (t) => {
  t.equal(load({ ...CREDS, M2M_PROXY_PORT: '0' }).port, 0)
  t.equal(load({ ...CREDS, M2M_PROXY_PORT: '65535' }).port, 65535)
  t.equal(load({ ...CREDS, M2M_PROXY_ADMIN_PORT: '0' }).adminPort, 0)
})

t.test('a missing credentials file setting says how to configure and points to npm run demo', async (t) => {
  const envs: Array<Record<string, string>> = [
    {},
    { M2M_PROXY_CREDENTIALS_FILE: '' },
    { M2M_PROXY_CREDENTIALS_FILE: '   ' }
  ]
  for (const env of envs) {
    let error: ConfigError
    try {
      error = configErrorOf(() => load(env))
    } catch (unexpected) {
      t.fail(`unexpected error for ${JSON.stringify(env)}: ${String(unexpected)}`)
      continue
    }
    t.equal(error.setting, 'M2M_PROXY_CREDENTIALS_FILE', JSON.stringify(env))
    if (env.M2M_PROXY_CREDENTIALS_FILE !== '   ') t.match(error.message, 'npm run demo')
  }
})

t.test('M2M_PROXY_MAX_LOGIN_FAILURES must be 1 to 4', async (t) => {
  for (const bad of ['0', '5', '-1', 'two', '2.5']) {
    const error = configErrorOf(() => load({ ...CREDS, M2M_PROXY_MAX_LOGIN_FAILURES: bad }))
    t.equal(error.setting, 'M2M_PROXY_MAX_LOGIN_FAILURES', `value ${bad}`)
  }
  for (const good of [1, 2, 3, 4]) {
    t.equal(load({ ...CREDS, M2M_PROXY_MAX_LOGIN_FAILURES: String(good) }).maxLoginFailures, good)
  }
  const { env, files } = withConfigFile({ maxLoginFailures: 5 })
  t.match(configErrorOf(() => load(env, files)).setting, /^M2M_PROXY_MAX_LOGIN_FAILURES\b/)
})

t.test('an upstream URL with user info is rejected without echoing the password', async (t) => {
  const password = 'Sup3rS3cretPassw0rd'
  for (const upstream of [
    `https://alice:${password}@thingspace.verizon.com`,
    `https://:${password}@thingspace.verizon.com/`
  ]) {
    const error = configErrorOf(() => load({ ...CREDS, M2M_PROXY_UPSTREAM: upstream }))
    t.equal(error.setting, 'M2M_PROXY_UPSTREAM')
    t.notOk(printed(error).includes(password), 'the password is not printed')
  }
  const userOnly = configErrorOf(() => load({ ...CREDS, M2M_PROXY_UPSTREAM: 'https://alice@thingspace.verizon.com' }))
  t.equal(userOnly.setting, 'M2M_PROXY_UPSTREAM', 'a user name alone is rejected too')
  const { env, files } = withConfigFile({ upstream: `https://bob:${password}@example.com` })
  const fromFile = configErrorOf(() => load(env, files))
  t.match(fromFile.setting, /^M2M_PROXY_UPSTREAM\b/)
  t.notOk(printed(fromFile).includes(password), 'the password from the file is not printed')
})

t.test('an unparseable upstream URL with user info does not echo the password', async (t) => {
  const password = 'Sup3rS3cretPassw0rd'
  for (const upstream of [
    `https://alice:${password}@thingspace.verizon.com:99999`,
    `https://alice:${password}@`,
    `https://alice:${password}@thing space.com`
  ]) {
    const error = configErrorOf(() => load({ ...CREDS, M2M_PROXY_UPSTREAM: upstream }))
    t.equal(error.setting, 'M2M_PROXY_UPSTREAM')
    t.notOk(printed(error).includes(password), `the password is not printed for ${upstream.replace(password, '***')}`)
  }
})

t.test('an upstream with a path, query or fragment, or not http(s), is rejected', async (t) => {
  for (const bad of [
    'https://thingspace.verizon.com/api',
    'https://thingspace.verizon.com/api/m2m/',
    'https://thingspace.verizon.com?x=1',
    'https://thingspace.verizon.com/#top',
    'ftp://thingspace.verizon.com',
    'thingspace.verizon.com',
    'not a url'
  ]) {
    const error = configErrorOf(() => load({ ...CREDS, M2M_PROXY_UPSTREAM: bad }))
    t.equal(error.setting, 'M2M_PROXY_UPSTREAM', bad)
  }
})

t.test('a valid upstream is normalised to its origin', async (t) => {
  t.equal(
    load({ ...CREDS, M2M_PROXY_UPSTREAM: 'https://staging.thingspace.verizon.com/' }).upstream,
    'https://staging.thingspace.verizon.com'
  )
  t.equal(load({ ...CREDS, M2M_PROXY_UPSTREAM: 'http://127.0.0.1:4010' }).upstream, 'http://127.0.0.1:4010')
  t.equal(
    load({ ...CREDS, M2M_PROXY_UPSTREAM: 'HTTPS://ThingSpace.Verizon.com:443' }).upstream,
    'https://thingspace.verizon.com'
  )
})

t.test('stateDir defaults to the credentials file directory, absolute; M2M_PROXY_STATE_DIR overrides', async (t) => {
  const relative = load({ M2M_PROXY_CREDENTIALS_FILE: '../keys/creds.json' })
  t.equal(relative.credentialsFile, '/srv/keys/creds.json')
  t.equal(relative.stateDir, '/srv/keys')
  t.ok(path.isAbsolute(relative.stateDir))
  const bare = load({ M2M_PROXY_CREDENTIALS_FILE: 'creds.json' })
  t.equal(bare.stateDir, CWD)
  const explicit = load({ ...CREDS, M2M_PROXY_STATE_DIR: 'state' })
  t.equal(explicit.stateDir, path.join(CWD, 'state'))
  t.ok(path.isAbsolute(explicit.stateDir))
  t.equal(load({ ...CREDS, M2M_PROXY_STATE_DIR: '/var/lib/m2m' }).stateDir, '/var/lib/m2m')
})

t.test('a short admin token is a ConfigError that does not print the token', async (t) => {
  const short = 'x'.repeat(ADMIN_TOKEN_MIN_LENGTH - 1)
  t.equal(ADMIN_TOKEN_MIN_LENGTH, 24)
  for (const token of ['hunter2-short-tok', short, 'abcdefghijkl mnopqrstuvwxyz0123']) {
    const error = configErrorOf(() => load({ ...CREDS, M2M_PROXY_ADMIN_TOKEN: token }))
    t.equal(error.setting, 'M2M_PROXY_ADMIN_TOKEN')
    t.notOk(printed(error).includes(token), 'the token is not printed')
    t.notOk(printed(error).includes(token.slice(0, 8)), 'nor its beginning')
  }
  const exact = 'y'.repeat(ADMIN_TOKEN_MIN_LENGTH)
  t.equal(load({ ...CREDS, M2M_PROXY_ADMIN_TOKEN: exact }).adminToken, exact, 'exactly 24 characters is enough')
})

t.test('a short admin token in the config file is not printed either', async (t) => {
  const token = 'shorty-admin-tok'
  const { env, files } = withConfigFile({ adminToken: token })
  const error = configErrorOf(() => load(env, files))
  t.notOk(printed(error).includes(token))
})

t.test('the admin token file is read relative to cwd and trimmed', async (t) => {
  const token = 'a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6'
  const fs = fakeFs({ [path.join(CWD, 'admin.token')]: `  ${token}\n\n` })
  const config = createConfig({
    env: { ...CREDS, M2M_PROXY_ADMIN_TOKEN_FILE: 'admin.token' },
    readTextFile: fs.readTextFile,
    cwd: CWD
  })
  t.equal(config.adminToken, token)
  t.same(fs.reads, [path.join(CWD, 'admin.token')])
})

t.test('a short token in the admin token file names M2M_PROXY_ADMIN_TOKEN_FILE and is not printed', async (t) => {
  const token = 'too-short-token'
  const error = configErrorOf(() =>
    load({ ...CREDS, M2M_PROXY_ADMIN_TOKEN_FILE: '/run/secrets/admin' }, { '/run/secrets/admin': `${token}\n` })
  )
  t.equal(error.setting, 'M2M_PROXY_ADMIN_TOKEN_FILE')
  t.notOk(printed(error).includes(token))
})

t.test('an unreadable admin token file names M2M_PROXY_ADMIN_TOKEN_FILE', async (t) => {
  const error = configErrorOf(() => load({ ...CREDS, M2M_PROXY_ADMIN_TOKEN_FILE: '/run/secrets/missing' }))
  t.equal(error.setting, 'M2M_PROXY_ADMIN_TOKEN_FILE')
  t.match(error.message, '/run/secrets/missing')
})

t.test('setting both the admin token and the token file is an error', async (t) => {
  const token = 'c'.repeat(32)
  const error = configErrorOf(() =>
    load(
      { ...CREDS, M2M_PROXY_ADMIN_TOKEN: token, M2M_PROXY_ADMIN_TOKEN_FILE: 'admin.token' },
      { [path.join(CWD, 'admin.token')]: 'd'.repeat(32) }
    )
  )
  t.match(error.setting, /^M2M_PROXY_ADMIN_TOKEN/)
  t.match(error.message, 'M2M_PROXY_ADMIN_TOKEN_FILE')
  t.notOk(printed(error).includes(token))
})

t.test('log level: pino levels accepted, others rejected', async (t) => {
  for (const level of ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']) {
    t.equal(load({ ...CREDS, M2M_PROXY_LOG_LEVEL: level }).logLevel, level)
  }
  t.equal(load({ ...CREDS, M2M_PROXY_LOG_LEVEL: 'DEBUG' }).logLevel, 'debug', 'case-insensitive')
  for (const bad of ['verbose', 'warning', 'information', '10']) {
    const error = configErrorOf(() => load({ ...CREDS, M2M_PROXY_LOG_LEVEL: bad }))
    t.equal(error.setting, 'M2M_PROXY_LOG_LEVEL', bad)
  }
  const { env, files } = withConfigFile({ logLevel: 30 })
  t.match(configErrorOf(() => load(env, files)).setting, /^M2M_PROXY_LOG_LEVEL\b/, 'a non-string level in the file')
})

t.test('other numeric settings are range-checked', async (t) => {
  const cases: Array<[string, string]> = [
    ['M2M_PROXY_SESSION_IDLE_SECONDS', '0'],
    ['M2M_PROXY_SESSION_IDLE_SECONDS', 'soon'],
    ['M2M_PROXY_UPSTREAM_TIMEOUT_MS', '-5'],
    ['M2M_PROXY_BODY_LIMIT_BYTES', '0'],
    ['M2M_PROXY_BODY_LIMIT_BYTES', '1mb'],
    ['M2M_PROXY_REQUEST_TIMEOUT_MS', '0'],
    ['M2M_PROXY_REQUEST_TIMEOUT_MS', '30s'],
    ['M2M_PROXY_MAX_CONNECTIONS', '0'],
    ['M2M_PROXY_ADMIN_MAX_CONNECTIONS', 'many']
  ]
  for (const [name, value] of cases) {
    t.equal(configErrorOf(() => load({ ...CREDS, [name]: value })).setting, name, `${name}=${value}`)
  }
  t.equal(load({ ...CREDS, M2M_PROXY_SESSION_IDLE_SECONDS: '60' }).sessionIdleSeconds, 60)
  t.equal(load({ ...CREDS, M2M_PROXY_BODY_LIMIT_BYTES: '2048' }).bodyLimitBytes, 2048)
})

t.test(
  'M2M_PROXY_ALLOWED_HOSTS: comma-separated host names, lower-cased; ports, schemes and wildcards refused',
  async (t) => {
    t.same(
      load({ ...CREDS, M2M_PROXY_ALLOWED_HOSTS: ' m2m-session-proxy , Proxy.Internal.,my_service,' }).allowedHosts,
      ['m2m-session-proxy', 'proxy.internal', 'my_service']
    )
    t.same(
      load(
        withConfigFile({ credentialsFile: 'c.json', allowedHosts: ['a.example', 'b'] }, {}).env,
        withConfigFile({ credentialsFile: 'c.json', allowedHosts: ['a.example', 'b'] }, {}).files
      ).allowedHosts,
      ['a.example', 'b'],
      'a JSON array in the config file'
    )
    for (const value of ['proxy:8080', 'http://proxy', '*.example.com', 'a b', 'proxy/x', '-proxy.example']) {
      const error = configErrorOf(() => load({ ...CREDS, M2M_PROXY_ALLOWED_HOSTS: value }), value)
      t.equal(error.setting, 'M2M_PROXY_ALLOWED_HOSTS', value)
      t.match(error.problem, /host names without port or scheme/)
    }
  }
)

t.test(
  'M2M_PROXY_FORWARD_PREFIXES: comma-separated prefixes under /api/, put in one spelling at start-up',
  async (t) => {
    t.same(load({ ...CREDS, M2M_PROXY_FORWARD_PREFIXES: ' /api/m2m , /api/loc/v1/,/api/fota/v3,' }).forwardPrefixes, [
      '/api/m2m/',
      '/api/loc/v1/',
      '/api/fota/v3/'
    ])
    t.same(
      load({ ...CREDS, M2M_PROXY_FORWARD_PREFIXES: '/api/m2m/,/api/m2m/v1,/api/m2m' }).forwardPrefixes,
      ['/api/m2m/'],
      'duplicates and nested prefixes dropped'
    )
    t.same(load({ ...CREDS, M2M_PROXY_FORWARD_PREFIXES: '/api' }).forwardPrefixes, ['/api/'])
    const fromFile = withConfigFile(
      { credentialsFile: 'c.json', forwardPrefixes: ['/api/m2m', '/api/diagnostics/v1'] },
      {}
    )
    t.same(
      load(fromFile.env, fromFile.files).forwardPrefixes,
      ['/api/m2m/', '/api/diagnostics/v1/'],
      'a JSON array in the config file'
    )
    const refused: Array<[string, RegExp]> = [
      ['/', /not under \/api\//],
      ['/api/m2m,/admin', /"\/admin" is not under \/api\//],
      ['/apix', /not under \/api\//],
      ['api/m2m', /not under \/api\//],
      ['https://thingspace.verizon.com/api/m2m', /not under \/api\//],
      ['/api/m2m/../../admin', /contains "\.\."/],
      ['/api/%2e%2e', /% escape/],
      ['/api/m2m%2fv1', /% escape/],
      ['/api//m2m', /empty segment/],
      ['/api/m2m?x=1', /segments are made of/],
      ['/api/m2m;jsessionid=1', /segments are made of/],
      ['/api/ts/v1/oauth2/token', /answers itself/],
      [',', /at least one path prefix/],
      [' , ', /at least one path prefix/]
    ]
    for (const [value, problem] of refused) {
      const error = configErrorOf(() => load({ ...CREDS, M2M_PROXY_FORWARD_PREFIXES: value }), value)
      t.equal(error.setting, 'M2M_PROXY_FORWARD_PREFIXES', value)
      t.match(error.problem, problem, value)
      t.notMatch(error.message, /\n/, `${value}: one line`)
    }
    const badFile = withConfigFile({ credentialsFile: 'c.json', forwardPrefixes: ['/api/m2m', 42] }, {})
    t.match(
      configErrorOf(() => load(badFile.env, badFile.files)).setting,
      /^M2M_PROXY_FORWARD_PREFIXES \(key "forwardPrefixes"/,
      'a non-string in the file'
    )
    t.equal(
      load({ ...CREDS, M2M_PROXY_FORWARD_PREFIXES: '' }).forwardPrefixes[0],
      '/api/',
      'empty: the default, as for every setting'
    )
  }
)

t.test('ConfigError messages are one line: setting, then problem', async (t) => {
  const error = configErrorOf(() => load({ ...CREDS, M2M_PROXY_PORT: 'abc' }))
  t.equal(error.name, 'ConfigError')
  t.ok(error instanceof Error)
  t.equal(error.message, `${error.setting}: ${error.problem}`)
  t.notMatch(error.message, /\n/)
})

t.test(
  'an unknown M2M_PROXY_* variable is refused, naming the closest known name (a misspelling must not be ignored)',
  async (t) => {
    const cases: Array<[string, string, string]> = [
      ['M2M_PROXY_PORTT', '18000', 'M2M_PROXY_PORT'],
      ['M2M_PROXY_UPSTRAEM', 'https://staging.example.com', 'M2M_PROXY_UPSTREAM'],
      ['M2M_PROXY_LOGOUT_ON_SHUTDOWNN', 'off-please', 'M2M_PROXY_LOGOUT_ON_SHUTDOWN'],
      ['m2m_proxy_port', '18000', 'M2M_PROXY_PORT'],
      ['M2M_PROXY_CONFIG_FILE', 'proxy.json', 'M2M_PROXY_CONFIG'],
      ['M2M_PROXY_ADMINTOKEN', '', 'M2M_PROXY_ADMIN_TOKEN']
    ]
    for (const [name, value, closest] of cases) {
      const error = configErrorOf(() => load({ ...CREDS, [name]: value }), name)
      t.equal(error.setting, name, name)
      t.match(error.message, `unknown variable, did you mean ${closest}?`, name)
      t.notMatch(error.message, /\n/, 'one line')
      if (value !== '') t.notOk(printed(error).includes(value), 'the value is not echoed (it may be a secret)')
    }
    const both = configErrorOf(() => load({ ...CREDS, M2M_PROXY_PORTT: '1', M2M_PROXY_ADMIN_PROT: '2' }))
    t.equal(both.setting, 'M2M_PROXY_ADMIN_PROT, M2M_PROXY_PORTT', 'every unknown name is listed at once')
    t.match(both.message, 'M2M_PROXY_ADMIN_PROT: did you mean M2M_PROXY_ADMIN_PORT?')
    t.match(both.message, 'M2M_PROXY_PORTT: did you mean M2M_PROXY_PORT?')
  }
)

t.test('every documented variable is known, and other prefixes are left alone', async (t) => {
  const env: Record<string, string> = { ...CREDS, M2M_DEMO_SIMULATOR_PORT: '4010', HTTPS_PROXY: '', PATH: '/usr/bin' }
  for (const name of KNOWN_ENV_NAMES) env[name] ??= ''
  t.equal(load(env).port, 8080)
  t.ok(KNOWN_ENV_NAMES.includes('M2M_PROXY_CONFIG'))
  t.ok(KNOWN_ENV_NAMES.includes('M2M_PROXY_LOGOUT_ON_SHUTDOWN'))
})

/** What Kubernetes injects into every pod of the namespace for a Service named `service` (service links). */
function serviceLinks (service: string, port = 8080, ip = '10.0.0.7'): Record<string, string> {
  const prefix = service.toUpperCase().replaceAll('-', '_')
  return {
    [`${prefix}_SERVICE_HOST`]: ip,
    [`${prefix}_SERVICE_PORT`]: String(port),
    [`${prefix}_SERVICE_PORT_HTTP`]: String(port),
    [`${prefix}_PORT`]: `tcp://${ip}:${port}`,
    [`${prefix}_PORT_${port}_TCP`]: `tcp://${ip}:${port}`,
    [`${prefix}_PORT_${port}_TCP_PROTO`]: 'tcp',
    [`${prefix}_PORT_${port}_TCP_PORT`]: String(port),
    [`${prefix}_PORT_${port}_TCP_ADDR`]: ip
  }
}

t.test(
  'Kubernetes service links of a Service "m2m-proxy": M2M_PROXY_PORT=tcp://... is explained with both fixes',
  async (t) => {
    const error = configErrorOf(() => load({ ...CREDS, ...serviceLinks('m2m-proxy') }))
    t.equal(error.setting, 'M2M_PROXY_PORT')
    t.match(error.message, '"tcp://10.0.0.7:8080"')
    t.match(error.message, /Kubernetes .*Service "m2m-proxy"/)
    t.match(error.message, /service links: .*M2M_PROXY_SERVICE_HOST/)
    t.match(error.message, 'enableServiceLinks: false')
    t.match(error.message, /rename that Service .*m2m-proxy/)
    t.notMatch(error.message, /\n/, 'one line')
    const admin = configErrorOf(() => load({ ...CREDS, ...serviceLinks('m2m-proxy-admin', 9090) }))
    t.equal(admin.setting, 'M2M_PROXY_ADMIN_PORT', 'a Service "m2m-proxy-admin" collides with M2M_PROXY_ADMIN_PORT')
    t.match(admin.message, 'Service "m2m-proxy-admin"')
  }
)

t.test(
  'Kubernetes service links are ignored when M2M_PROXY_PORT is set by the pod spec (container env wins over links)',
  async (t) => {
    const config = load({
      ...CREDS,
      ...serviceLinks('m2m-proxy'),
      ...serviceLinks('m2m-proxy-metrics', 9102),
      M2M_PROXY_PORT: '8181'
    })
    t.equal(config.port, 8181)
    t.equal(config.adminPort, 9090)
    for (const proto of ['UDP', 'SCTP']) {
      const links = {
        M2M_PROXY_SERVICE_HOST: '10.0.0.7',
        M2M_PROXY_SERVICE_PORT: '53',
        [`M2M_PROXY_PORT_53_${proto}`]: `${proto.toLowerCase()}://10.0.0.7:53`,
        [`M2M_PROXY_PORT_53_${proto}_ADDR`]: '10.0.0.7'
      }
      t.equal(load({ ...CREDS, ...links }).port, 8080, proto)
    }
  }
)

t.test(
  'service-link-shaped names without the Service pair, and a tcp:// port without links, are not taken for links',
  async (t) => {
    const lone = configErrorOf(() => load({ ...CREDS, M2M_PROXY_SERVICE_PORT: '18000' }))
    t.equal(lone.setting, 'M2M_PROXY_SERVICE_PORT', 'M2M_PROXY_SERVICE_PORT alone is a misspelling, not a link')
    t.match(lone.message, 'unknown variable')
    const url = configErrorOf(() => load({ ...CREDS, M2M_PROXY_PORT: 'tcp://10.0.0.7:8080' }))
    t.equal(url.setting, 'M2M_PROXY_PORT')
    t.match(url.message, 'must be an integer')
  }
)

t.test(
  'M2M_PROXY_LOGOUT_ON_SHUTDOWN: one documented set of spellings, the same in the file, named in the message',
  async (t) => {
    for (const value of ['true', 'TRUE', 'yes', 'Yes', 'on', '1', ' true ']) {
      t.equal(load({ ...CREDS, M2M_PROXY_LOGOUT_ON_SHUTDOWN: value }).logoutOnShutdown, true, value)
    }
    for (const value of ['false', 'no', 'NO', 'off', '0']) {
      t.equal(load({ ...CREDS, M2M_PROXY_LOGOUT_ON_SHUTDOWN: value }).logoutOnShutdown, false, value)
    }
    for (const value of [false, 'no', 0, 'off']) {
      const { env, files } = withConfigFile({ logoutOnShutdown: value })
      t.equal(load(env, files).logoutOnShutdown, false, `file value ${JSON.stringify(value)}`)
    }
    for (const bad of ['maybe', 'y', 'enabled', '2']) {
      const error = configErrorOf(() => load({ ...CREDS, M2M_PROXY_LOGOUT_ON_SHUTDOWN: bad }), bad)
      t.equal(error.setting, 'M2M_PROXY_LOGOUT_ON_SHUTDOWN')
      t.match(error.problem, 'true, yes, on, 1', 'the accepted spellings are named')
      t.match(error.problem, 'false, no, off, 0')
    }
  }
)

t.test(
  'fleet mode: off without M2M_PROXY_REDIS_URL; the URL, the key, the key file and the Redis timeout are read and checked',
  async (t) => {
    t.equal(load({ ...CREDS }).fleet, undefined, 'single-process mode by default')
    const hexKey = 'a1'.repeat(32)
    const url = 'rediss://proxy:Sup3r%40secret@redis.internal:6380/2'
    const fleet = load({ ...CREDS, M2M_PROXY_REDIS_URL: url, M2M_PROXY_FLEET_KEY: hexKey }).fleet
    t.equal(fleet?.redisUrl, url)
    t.same(fleet?.fleetKey, Buffer.from(hexKey, 'hex'))
    t.equal(fleet?.keyPrefix, 'm2m-session-proxy:', 'the default prefix')
    t.equal(fleet?.commandTimeoutMs, 2000, 'the default Redis answer deadline')
    t.equal(
      load({ ...CREDS, M2M_PROXY_REDIS_URL: url, M2M_PROXY_FLEET_KEY: hexKey, M2M_PROXY_REDIS_TIMEOUT_MS: '500' }).fleet
        ?.commandTimeoutMs,
      500
    )
    for (const bad of ['50', '60001', 'soon']) {
      const env = { ...CREDS, M2M_PROXY_REDIS_URL: url, M2M_PROXY_FLEET_KEY: hexKey, M2M_PROXY_REDIS_TIMEOUT_MS: bad }
      const error = configErrorOf(() => load(env), bad)
      t.equal(error.setting, 'M2M_PROXY_REDIS_TIMEOUT_MS', `${bad} refused, naming the setting`)
    }
    const base64Key = Buffer.alloc(32, 7).toString('base64')
    const fromFile = load(
      {
        ...CREDS,
        M2M_PROXY_REDIS_URL: 'redis://127.0.0.1:6379',
        M2M_PROXY_FLEET_KEY_FILE: 'fleet.key',
        M2M_PROXY_REDIS_KEY_PREFIX: 'fleet-a:'
      },
      { [path.join(CWD, 'fleet.key')]: `${base64Key}\n` }
    ).fleet
    t.same(fromFile?.fleetKey, Buffer.alloc(32, 7), 'base64 from the key file, relative to the working directory')
    t.equal(fromFile?.keyPrefix, 'fleet-a:')
    const file = withConfigFile({ redisUrl: 'redis://r:6379', fleetKey: hexKey, redisKeyPrefix: 'p:', redisTimeoutMs: 800 })
    t.same(
      load(file.env, file.files).fleet,
      { redisUrl: 'redis://r:6379', fleetKey: Buffer.from(hexKey, 'hex'), keyPrefix: 'p:', commandTimeoutMs: 800 },
      'the config file keys'
    )
  }
)

t.test('a bad Redis URL is refused without echoing it (it may hold a password)', async (t) => {
  const password = 'Sup3rSecretPw'
  for (const [bad, expected] of [
    [`http://u:${password}@redis.internal:6379`, /must use redis:\/\/ or rediss:\/\/ \(TLS\) \(got http:\)/],
    [`redis//u:${password}@redis.internal`, /must be a URL such as/],
    [`redis://u:${password}@`, /must be a URL such as|must name a host/],
    ['   ', /non-empty/]
  ] as Array<[string, RegExp]>) {
    const error = configErrorOf(
      () => load({ ...CREDS, M2M_PROXY_REDIS_URL: bad, M2M_PROXY_FLEET_KEY: 'a1'.repeat(32) }),
      bad
    )
    t.equal(error.setting, 'M2M_PROXY_REDIS_URL')
    t.match(error.problem, expected, bad.replace(password, '***'))
    t.notOk(printed(error).includes(password), 'the password is not printed')
  }
})

t.test('the fleet key: exactly one of the key and the key file with a Redis URL, never echoed', async (t) => {
  const url = { ...CREDS, M2M_PROXY_REDIS_URL: 'redis://u:Pw-not-printed@redis.internal:6379' }
  const key = 'b2'.repeat(32)
  const missing = configErrorOf(() => load(url))
  t.equal(missing.setting, 'M2M_PROXY_FLEET_KEY')
  t.match(missing.problem, /required with M2M_PROXY_REDIS_URL.*openssl rand -hex 32/)
  const both = configErrorOf(() => load({ ...url, M2M_PROXY_FLEET_KEY: key, M2M_PROXY_FLEET_KEY_FILE: 'k' }))
  t.match(both.problem, /either M2M_PROXY_FLEET_KEY or M2M_PROXY_FLEET_KEY_FILE, not both/)
  const unreadable = configErrorOf(() => load({ ...url, M2M_PROXY_FLEET_KEY_FILE: '/run/secrets/fleet' }))
  t.equal(unreadable.setting, 'M2M_PROXY_FLEET_KEY_FILE')
  t.match(unreadable.problem, '/run/secrets/fleet cannot be read (ENOENT)')
  const shortKey = 'c3'.repeat(31)
  const wrong = configErrorOf(() => load({ ...url, M2M_PROXY_FLEET_KEY: shortKey }))
  t.equal(wrong.setting, 'M2M_PROXY_FLEET_KEY')
  t.match(wrong.problem, /64 hex digits \(got 62\)/)
  t.notOk(printed(wrong).includes(shortKey), 'the key is not printed')
  t.notOk(printed(wrong).includes('c3c3c3'), 'nor a part of it')
  const wrongInFile = configErrorOf(() =>
    load({ ...url, M2M_PROXY_FLEET_KEY_FILE: 'fleet.key' }, { [path.join(CWD, 'fleet.key')]: 'not-a-key' })
  )
  t.equal(wrongInFile.setting, 'M2M_PROXY_FLEET_KEY_FILE')
  t.notOk(printed(wrongInFile).includes('not-a-key'))
  for (const error of [missing, both, unreadable, wrong, wrongInFile]) {
    t.notOk(printed(error).includes('Pw-not-printed'), "the URL's password is not printed")
  }
  for (const alone of [{ M2M_PROXY_FLEET_KEY: key }, { M2M_PROXY_FLEET_KEY_FILE: 'fleet.key' }] as Array<
    Record<string, string>
  >) {
    const error = configErrorOf(() => load({ ...CREDS, ...alone }))
    t.match(
      error.problem,
      /M2M_PROXY_REDIS_URL is not: set both for fleet mode, or neither/,
      'a key without a URL is refused, not ignored'
    )
    t.notOk(printed(error).includes(key))
  }
})

t.test('the Redis key prefix is letters, digits and : _ . - only', async (t) => {
  for (const bad of ['has space', 'glob*', 'x'.repeat(101)]) {
    t.equal(
      configErrorOf(() => load({ ...CREDS, M2M_PROXY_REDIS_KEY_PREFIX: bad })).setting,
      'M2M_PROXY_REDIS_KEY_PREFIX',
      bad.slice(0, 12)
    )
  }
})

t.test("the fleet settings and the tests' Redis URL are known names", async (t) => {
  for (const name of [
    'M2M_PROXY_REDIS_URL',
    'M2M_PROXY_FLEET_KEY',
    'M2M_PROXY_FLEET_KEY_FILE',
    'M2M_PROXY_REDIS_KEY_PREFIX',
    'M2M_PROXY_TEST_REDIS_URL'
  ]) {
    t.ok(KNOWN_ENV_NAMES.includes(name), name)
  }
  t.equal(
    load({ ...CREDS, M2M_PROXY_TEST_REDIS_URL: 'redis://127.0.0.1:6379' }).fleet,
    undefined,
    "the tests' URL does not turn fleet mode on"
  )
})

t.test('M2M_PROXY_PASSWORD_ROTATION_DAYS: 0 (off, the default) or 1 to 3650 days, fractions allowed', async (t) => {
  t.equal(load({ ...CREDS }).passwordRotationDays, 0, 'off by default')
  t.equal(load({ ...CREDS, M2M_PROXY_PASSWORD_ROTATION_DAYS: '0' }).passwordRotationDays, 0)
  t.equal(load({ ...CREDS, M2M_PROXY_PASSWORD_ROTATION_DAYS: '30' }).passwordRotationDays, 30)
  t.equal(load({ ...CREDS, M2M_PROXY_PASSWORD_ROTATION_DAYS: '1.5' }).passwordRotationDays, 1.5)
  for (const bad of ['-1', '0.5', '3651', 'monthly', '1e3']) {
    const error = configErrorOf(() => load({ ...CREDS, M2M_PROXY_PASSWORD_ROTATION_DAYS: bad }))
    t.equal(error.setting, 'M2M_PROXY_PASSWORD_ROTATION_DAYS', `value ${bad}`)
    t.match(error.message, /0 \(off\) or a number of days from 1 to 3650/)
  }
  t.ok(KNOWN_ENV_NAMES.includes('M2M_PROXY_PASSWORD_ROTATION_DAYS'), 'a known name')
})

t.test(
  'M2M_PROXY_BODY_MEMORY_BYTES below M2M_PROXY_BODY_LIMIT_BYTES is refused: the largest body could never be admitted',
  async (t) => {
    t.throws(
      () =>
        createConfig({
          env: {
            M2M_PROXY_CREDENTIALS_FILE: 'c.json',
            M2M_PROXY_BODY_LIMIT_BYTES: '2000000',
            M2M_PROXY_BODY_MEMORY_BYTES: '1000000'
          },
          readTextFile: () => '',
          cwd: '/'
        }),
      { name: 'ConfigError', message: /M2M_PROXY_BODY_MEMORY_BYTES.*less than M2M_PROXY_BODY_LIMIT_BYTES/ }
    )
  }
)

t.test('plain http:// to another machine is refused: the password would cross the network in clear', async (t) => {
  for (const upstream of ['http://thingspace.verizon.com', 'http://10.0.0.5:8080', 'http://127.example.com']) {
    const error = configErrorOf(() => load({ ...CREDS, M2M_PROXY_UPSTREAM: upstream }), upstream)
    t.equal(error.setting, 'M2M_PROXY_UPSTREAM', upstream)
    t.match(error.message, /in clear.*https:\/\/.*M2M_PROXY_ALLOW_INSECURE_UPSTREAM=true/s)
  }
  for (const upstream of ['http://127.0.0.1:8443', 'http://localhost:9', 'http://[::1]:9', 'http://127.1.2.3:9']) {
    t.equal(load({ ...CREDS, M2M_PROXY_UPSTREAM: upstream }).upstream, upstream, `${upstream}: this machine`)
  }
  const allowed = load({ ...CREDS, M2M_PROXY_UPSTREAM: 'http://sim.internal:8443', M2M_PROXY_ALLOW_INSECURE_UPSTREAM: 'true' })
  t.equal(allowed.upstream, 'http://sim.internal:8443', 'allowed when asked for')
  t.equal(load({ ...CREDS }).allowInsecureUpstream, false, 'off by default')
})

t.test('both listeners on one port of one address: refused before listening, naming the admin port', async (t) => {
  const same = configErrorOf(() => load({ ...CREDS, M2M_PROXY_ADMIN_PORT: '8080' }), 'the default proxy port again')
  t.equal(same.setting, 'M2M_PROXY_ADMIN_PORT')
  t.match(same.message, /8080, the port of the proxy listener too \(M2M_PROXY_PORT, on 127\.0\.0\.1\)/)
  const wildcard = configErrorOf(
    () => load({ ...CREDS, M2M_PROXY_PORT: '9000', M2M_PROXY_ADMIN_PORT: '9000', M2M_PROXY_ADMIN_HOST: '0.0.0.0' }),
    'a wildcard admin host on the proxy port'
  )
  t.equal(wildcard.setting, 'M2M_PROXY_ADMIN_PORT')
  const apart = load({
    ...CREDS,
    M2M_PROXY_PORT: '9000',
    M2M_PROXY_ADMIN_PORT: '9000',
    M2M_PROXY_HOST: '127.0.0.1',
    M2M_PROXY_ADMIN_HOST: '127.0.0.2'
  })
  t.equal(apart.adminPort, 9000, 'one port on two addresses is fine')
  t.equal(load({ ...CREDS, M2M_PROXY_PORT: '0', M2M_PROXY_ADMIN_PORT: '0' }).port, 0, 'port 0 twice: two free ports')
})

t.test('the callback inbox: off by default; a credentials file with a real password, or made ones; valid sources', async (t) => {
  t.equal(load(CREDS).callbacks, undefined, 'off unless M2M_PROXY_CALLBACK_PORT is set')
  const file = '/srv/proxy/callback.json'
  const good = JSON.stringify({ username: 'thingspace', password: 'p'.repeat(24) })
  const on = { ...CREDS, M2M_PROXY_CALLBACK_PORT: '9443', M2M_PROXY_CALLBACK_CREDENTIALS_FILE: 'callback.json' }
  const config = load({ ...on, M2M_PROXY_CALLBACK_ALLOWED_SOURCES: '203.0.113.0/24, 2001:db8::/32,198.51.100.7' }, {
    [file]: good
  })
  t.match(config.callbacks, {
    host: '127.0.0.1',
    port: 9443,
    credentials: { username: 'thingspace' },
    publicUrl: undefined,
    allowedSources: ['203.0.113.0/24', '2001:db8::/32', '198.51.100.7'],
    bodyLimitBytes: 262144,
    retention: { count: 10000, bytes: 32 * 1024 * 1024, ageMs: 168 * 3_600_000 },
    maxWaiting: 256
  })
  const cases: Array<[string, Record<string, string>, Record<string, string>, RegExp]> = [
    ['no credentials file in fleet mode', { ...CREDS, M2M_PROXY_CALLBACK_PORT: '9443', M2M_PROXY_REDIS_URL: 'redis://127.0.0.1:6379', M2M_PROXY_FLEET_KEY: 'a1'.repeat(32) }, {}, /^M2M_PROXY_CALLBACK_CREDENTIALS_FILE: is required with M2M_PROXY_CALLBACK_PORT in fleet mode/],
    ['a public URL with a query', { ...on, M2M_PROXY_CALLBACK_PUBLIC_URL: 'https://a.example/in?x=1' }, { [file]: good }, /^M2M_PROXY_CALLBACK_PUBLIC_URL: must not hold credentials, a query or a fragment/],
    ['a public URL not absolute', { ...on, M2M_PROXY_CALLBACK_PUBLIC_URL: 'callbacks.example.com' }, { [file]: good }, /^M2M_PROXY_CALLBACK_PUBLIC_URL: must be an absolute URL/],
    ['a bad account name', { ...on, M2M_PROXY_ACCOUNT_NAME: 'a b' }, { [file]: good }, /^M2M_PROXY_ACCOUNT_NAME: must be an account name/],
    ['a missing file', on, {}, /callback\.json cannot be read \(ENOENT\)/],
    ['not JSON, the password not echoed', on, { [file]: '{"password": "hunter2-secret-0123456789"' }, /callback\.json is not valid JSON$/],
    ['no username', on, { [file]: JSON.stringify({ password: 'p'.repeat(24) }) }, /must hold \{"username": "...", "password": "..."\}/],
    ['a short password', on, { [file]: JSON.stringify({ username: 'u', password: 'short' }) }, /at least 16 characters \(got 5\)/],
    ['a bad source', { ...on, M2M_PROXY_CALLBACK_ALLOWED_SOURCES: '203.0.113.0/33' }, { [file]: good }, /^M2M_PROXY_CALLBACK_ALLOWED_SOURCES: must be a comma-separated list of IP addresses or CIDR blocks/],
    ['a host name as source', { ...on, M2M_PROXY_CALLBACK_ALLOWED_SOURCES: 'thingspace.verizon.com' }, { [file]: good }, /IP addresses or CIDR blocks/]
  ]
  for (const [name, env, files, message] of cases) {
    const error = configErrorOf(() => load(env, files), name)
    t.match(error.message, message, name)
    t.notMatch(error.message, 'hunter2-secret', `${name}: no secret echoed`)
  }
  const made = load({ ...CREDS, M2M_PROXY_CALLBACK_PORT: '9443', M2M_PROXY_CALLBACK_PUBLIC_URL: 'https://cb.example.com/in/', M2M_PROXY_ACCOUNT_NAME: '0000123456-00001' })
  t.equal(made.callbacks?.credentials, undefined, 'no file, single process: the proxy makes them (callbacks/credentials.ts)')
  t.equal(made.callbacks?.publicUrl, 'https://cb.example.com/in', 'the trailing slash dropped')
  t.equal(made.accountName, '0000123456-00001')
})
