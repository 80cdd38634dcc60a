// Unit tests of the forwarding rules: which targets may be forwarded, header replacement, token-rejection detection,
// upstream failure classes.
import type { IncomingHttpHeaders } from 'node:http'
import type { FastifyReply } from 'fastify'
import t from 'tap'
import fc from 'fast-check'
import {
  DEFAULT_FORWARD_PREFIXES,
  ForwardPrefixes,
  inReservedNamespace,
  isForwardableTarget,
  LOCALLY_ANSWERED_ENDPOINTS,
  locallyAnsweredEndpoint,
  normalisedPath,
  parseForwardPrefix,
  parseForwardPrefixes,
  targetRefusal
} from '../../src/proxy/paths.js'
import { SESSION_TOKEN_HEADER, withoutHopByHop, withUpstreamAuth } from '../../src/proxy/headers.js'
import { mayBeTokenRejection, tokenRejectionOf } from '../../src/proxy/upstream-errors.js'
import { classifyUpstreamFailure, PROXY_ERRORS, sendProxyError } from '../../src/proxy/errors.js'

/** Every API family of the SDK on thingspace.verizon.com, by its base path (its getBaseUri), with a typical call. */
const API_FAMILIES: Array<[family: string, target: string]> = [
  ['Connectivity Management (M2M)', '/api/m2m/v1/devices/actions/list'],
  ['Quality of Service', '/api/m2m/v1/devices/qos/actions/subscribe'],
  ['Thingspace /m2m/v2', '/api/m2m/v2/devices/history/actions/list'],
  ['Thingspace /m2m/intelligence', '/api/m2m/intelligence/wnp/actions/list'],
  ['Thingspace /v1/accounts', '/api/v1/accounts/0000123456-00001/subscriptions'],
  ['Thingspace /v1/plans', '/api/v1/plans/0000123456-00001'],
  ['Thingspace /v1/devices', '/api/v1/devices/actions/list'],
  ['Thingspace /actions', '/api/actions/activate'],
  ['Device Location', '/api/loc/v1/locations'],
  ['Subscription Server', '/api/subsc/v1/subscriptions/0000123456-00001'],
  ['Software Management V1', '/api/fota/v1/upgrades/0000123456-00001'],
  ['Software Management V2', '/api/fota/v2/campaigns/0000123456-00001'],
  ['Software Management V3', '/api/fota/v3/licenses/0000123456-00001/assign'],
  ['Device Diagnostics', '/api/diagnostics/v1/devices/attributes?accountName=0000123456-00001'],
  ['Cloud Connector', '/api/cc/v1/devices/actions/query'],
  ['Hyper Precise Location', '/api/hyper-precise/v1/subscriptions?accountName=0000123456-00001'],
  ['OAuth Server, other than the token endpoint', '/api/ts/v1/other']
]

t.test('every API family on the upstream host is forwarded by default', async (t) => {
  t.same(DEFAULT_FORWARD_PREFIXES, ['/api/'])
  for (const [family, target] of API_FAMILIES) {
    t.ok(isForwardableTarget(target), `${family}: ${target}`)
    t.equal(locallyAnsweredEndpoint(target), undefined, `${family}: not answered locally`)
  }
})

t.test('forwardable targets: paths under /api/, with or without a query', async (t) => {
  const accepted = [
    '/api/m2m/v1/devices/actions/list',
    '/api/m2m/v1/accounts/TestAccount-1',
    '/api/m2m/v1/accounts/TestAccount-1?x=1',
    '/api/m2m/v1/devices/usage/actions/list?page=2&size=50',
    '/api/m2m/v1/callbacks/TestAccount-1?next=../../admin', // dots in the query do not change the path
    '/api/m2m/v1/accounts/Test%20Account',
    '/api/m2m/v1/accounts/a.b',
    '/api/m2m/v1/accounts/...',
    '/api/m2m/v1/accounts/%2e%2e%2e',
    '/api/m2m/v1/file.json',
    '/api/m2m/',
    '/api/m2m',
    '/api/m2mx/v1/accounts',
    '/api/'
  ]
  for (const target of accepted) t.ok(isForwardableTarget(target), `accepts ${target}`)
})

t.test('targets outside /api/ are not forwarded', async (t) => {
  const rejected = [
    '/',
    '',
    '/api',
    '/api?x=1',
    '/apix/m2m/v1/accounts',
    '/API/M2M/v1/accounts',
    '/Api/loc/v1/locations',
    '//api/m2m/v1/accounts',
    '/admin/session',
    '/healthz',
    '/metrics',
    'api/m2m/v1/accounts',
    'http://evil/api/m2m/x',
    'https://thingspace.verizon.com/api/m2m/v1/accounts',
    'https://5gedge.verizon.com/api/mec/eds/serviceendpoints',
    'evil.example:443',
    '*'
  ]
  for (const target of rejected) t.notOk(isForwardableTarget(target), `rejects ${JSON.stringify(target)}`)
})

t.test('dot segments, encoded or not, never let a target climb out', async (t) => {
  const rejected = [
    '/api/m2m/../ts/v1/oauth2/token',
    '/api/m2m/v1/..',
    '/api/m2m/v1/../../admin',
    '/api/m2m/./v1/accounts',
    '/api/m2m/v1/.',
    '/api/m2m/%2e%2e/ts/v1/oauth2/token',
    '/api/m2m/%2E%2e/ts',
    '/api/m2m/%2E%2E/ts',
    '/api/m2m/.%2e/ts',
    '/api/m2m/%2e./ts',
    '/api/m2m/%2e/v1',
    '/api/m2m/%252e%252e/ts',
    '/api/m2m/%25252e%25252e/ts',
    '/api/m2m/v1/..?x=1',
    '/api/m2m/%2e%2e?x=/api/m2m/',
    '/api/m2m/..;/ts/v1/oauth2/token',
    '/api/m2m/v1/..;jsessionid=1/..;/ts',
    '/api/m2m/.;x/v1',
    '/api/m2m/%2e%2e%3b/ts',
    '/api/loc/v1/../../../admin',
    '/api/fota/v3/%2e%2e/%2e%2e/%2e%2e/metrics',
    '/api/..',
    '/api/%2e%2e/healthz',
    '/api/cc/v1/..%2f..%2f..%2fadmin'
  ]
  for (const target of rejected) t.notOk(isForwardableTarget(target), `rejects ${target}`)
})

t.test('hidden separators, backslashes, control characters and malformed escapes are rejected', async (t) => {
  const rejected = [
    '/api/m2m/..%2fts/v1',
    '/api/m2m/v1%2f..%2f..%2fts',
    '/api/m2m/v1%2F..%2F..%2Fts',
    '/api/m2m/v1%252f..',
    '/api/m2m/v1%5c..%5cts',
    '/api/m2m/v1\\..\\ts',
    '/api/m2m/\\..',
    '/api/m2m/v1\\accounts',
    '/api/m2m/v1/acc%00ounts',
    '/api/m2m/v1/acc%0aounts',
    '/api/m2m/v1/acc%0Dounts',
    '/api/m2m/v1/acc%7founts',
    '/api/m2m/v1/acc\u0000ounts',
    '/api/m2m/v1/acc\tounts',
    '/api/m2m/v1/%zz',
    '/api/m2m/v1/%',
    '/api/m2m/v1/%2',
    '/api/m2m/v1/%e0%a4%a',
    '/api/m2m/v1/accounts#frag',
    '/api/m2m/v1/%2500'
  ]
  for (const target of rejected) t.notOk(isForwardableTarget(target), `rejects ${JSON.stringify(target)}`)
})

t.test(
  'M2M_PROXY_FORWARD_PREFIXES: a narrowed list admits its prefixes on segment boundaries, and nothing else',
  async (t) => {
    const rule = new ForwardPrefixes(parseForwardPrefixes(['/api/loc/v1', '/api/m2m/']))
    t.same(rule.prefixes, ['/api/loc/v1/', '/api/m2m/'])
    const cases: Array<[string, boolean]> = [
      ['/api/loc/v1/locations', true],
      ['/api/loc/v1/locations?x=1', true],
      ['/api/loc/v1', true], // the prefix itself
      ['/api/loc/v1?accountName=1', true],
      ['/api/loc/v1/', true],
      ['/api/m2m/v1/devices/actions/list', true],
      ['/api/m2m', true],
      ['/api/loc/v1x', false], // segment boundary
      ['/api/loc/v10/locations', false],
      ['/api/loc/v1;x/locations', false],
      ['/api/loc/v1#x', false],
      ['/api/loc/v2/locations', false],
      ['/api/loc', false],
      ['/api/location-secret', false],
      ['/api/fota/v3/campaigns', false],
      ['/api/ts/v1/other', false],
      ['/api/', false],
      ['/api', false],
      ['/API/LOC/V1/locations', false],
      ['/api/lo%63/v1/locations', false], // an escape never widens the list
      ['/api/loc/v1/../../fota/v3/campaigns', false], // nor a dot segment
      ['/api/loc/v1/%2e%2e/%2e%2e/fota/v3', false],
      ['/api/loc/v1/..;/..;/fota/v3', false],
      ['/api/loc/v1%2f..%2f..%2ffota', false],
      ['/api/m2m/../loc/v2', false]
    ]
    for (const [target, admitted] of cases) {
      t.equal(isForwardableTarget(target, rule), admitted, `${target}: ${admitted ? 'forwarded' : 'refused'}`)
    }
    const narrow = new ForwardPrefixes(parseForwardPrefixes(['/api/loc']))
    t.notOk(isForwardableTarget('/api/location-secret', narrow), '/api/loc does not admit /api/location-secret')
    t.notOk(isForwardableTarget('/api/locx', narrow))
    t.ok(isForwardableTarget('/api/loc/v1/locations', narrow))
    t.ok(isForwardableTarget('/api/loc', narrow))
  }
)

t.test(
  'parseForwardPrefix: one spelling for each prefix; anything a server could read otherwise is refused',
  async (t) => {
    const parsed: Array<[string, string]> = [
      ['/api', '/api/'],
      ['/api/', '/api/'],
      [' /api/loc/v1 ', '/api/loc/v1/'],
      ['/api/loc/v1/', '/api/loc/v1/'],
      ['/api/hyper-precise/v1', '/api/hyper-precise/v1/'],
      ['/api/m2m/v1/session', '/api/m2m/v1/session/'], // its other paths are forwarded; login and logout stay local
      ['/api/ts/v1', '/api/ts/v1/'],
      ['/api/a.b_c~d', '/api/a.b_c~d/']
    ]
    for (const [raw, prefix] of parsed) t.equal(parseForwardPrefix(raw), prefix, raw)
    const refused: Array<[string, RegExp]> = [
      ['', /not under \/api\//],
      ['/', /not under \/api\//],
      ['/apix', /not under \/api\//],
      ['/API/m2m', /not under \/api\//],
      ['api/m2m', /not under \/api\//],
      ['/admin/', /not under \/api\//],
      ['https://thingspace.verizon.com/api/m2m', /not under \/api\//],
      ['/api/../admin', /"\.\."/],
      ['/api/m2m/..', /"\.\."/],
      ['/api/a..b', /"\.\."/],
      ['/api/%6c%6fc', /% escape/],
      ['/api/m2m%2fv1', /% escape/],
      ['/api//m2m', /empty segment/],
      ['/api/m2m//', /empty segment/],
      ['/api/./m2m', /segment "\."/],
      ['/api/m2m/.', /segment "\."/],
      ['/api/m2m?x=1', /segments are made of/],
      ['/api/m2m#x', /segments are made of/],
      ['/api/m2m;x', /segments are made of/],
      ['/api/m2m\\v1', /segments are made of/],
      ['/api/m 2m', /segments are made of/],
      ['/api/m2m/v1/session/logout', /answers itself/],
      ['/api/ts/v1/oauth2/token/', /answers itself/]
    ]
    for (const [raw, reason] of refused) t.throws(() => parseForwardPrefix(raw), reason, JSON.stringify(raw))
  }
)

t.test('parseForwardPrefixes: duplicates and prefixes inside another are dropped', async (t) => {
  t.same(parseForwardPrefixes(['/api/loc/v1', '/api/loc/v1/', '/api/loc']), ['/api/loc/'])
  t.same(parseForwardPrefixes(['/api/m2m', '/api/', '/api/loc/v1']), ['/api/'])
  t.same(
    parseForwardPrefixes(['/api/fota/v1', '/api/fota/v10']),
    ['/api/fota/v1/', '/api/fota/v10/'],
    'on segment boundaries'
  )
})

t.test('normalisedPath: the path as a lenient upstream would match it', async (t) => {
  const cases: Array<[string, string]> = [
    ['/api/m2m/v1/session/logout', '/api/m2m/v1/session/logout'],
    ['/api/m2m/v1/session/logout?next=/x', '/api/m2m/v1/session/logout'],
    ['/api/m2m/v1/session/logout/', '/api/m2m/v1/session/logout'],
    ['/api/m2m/v1/session/logout///', '/api/m2m/v1/session/logout'],
    ['/api/m2m/v1//session/logout', '/api/m2m/v1/session/logout'],
    ['//api/m2m/v1/session/logout', '/api/m2m/v1/session/logout'],
    ['/api/m2m/v1/session/logout;x', '/api/m2m/v1/session/logout'],
    ['/api/m2m/v1/session;jsessionid=1/logout;a=b;c', '/api/m2m/v1/session/logout'],
    ['/api/m2m/v1/session/logout;%zz', '/api/m2m/v1/session/logout'], // params cut before decoding, as Tomcat does
    ['/api/m2m/v1/session/logout%3bx', '/api/m2m/v1/session/logout'], // and after
    ['/API/M2M/V1/SESSION/LOGOUT', '/api/m2m/v1/session/logout'],
    ['/api/m2m/v1/session/log%6fut', '/api/m2m/v1/session/logout'],
    ['/api/m2m/v1/session/log%6Fut', '/api/m2m/v1/session/logout'],
    ['/api/m2m/v1/session/log%256fut', '/api/m2m/v1/session/logout'], // double-encoded
    ['/api/m2m/v1/session%2flogout', '/api/m2m/v1/session/logout'],
    ['/api/m2m/v1/session%5clogout', '/api/m2m/v1/session/logout'],
    ['/api/m2m/v1/x/../session/./logout', '/api/m2m/v1/session/logout'],
    ['/api/m2m/v1/session/logout.json', '/api/m2m/v1/session/logout'], // Spring's suffix pattern match
    ['/api/m2m/v1/session/logout.a.b', '/api/m2m/v1/session/logout'],
    ['/api/m2m/v1/accounts/a.b/x', '/api/m2m/v1/accounts/a.b/x'], // only the last segment's extension
    // 'ſ' (long s) is an 's' to Java's equalsIgnoreCase
    ['/api/m2m/v1/%C5%BFession/logout', '/api/m2m/v1/session/logout'],
    ['/api/m2m/v1/session/log%C4%B1n', '/api/m2m/v1/session/login'], // dotless i
    ['/api/ts/v1/oauth2/to%E2%84%AAen', '/api/ts/v1/oauth2/token'], // Kelvin sign
    ['/api/m2m/v1/acc%zzounts', '/api/m2m/v1/acc%zzounts'], // a malformed escape stays as it is
    ['/', '/'],
    ['', '/']
  ]
  for (const [raw, normalised] of cases) t.equal(normalisedPath(raw), normalised, raw)
})

t.test('locally answered endpoints: one row each, by exact path and method', async (t) => {
  t.same(
    LOCALLY_ANSWERED_ENDPOINTS.map(({ name, method, path }) => `${name} ${method} ${path}`),
    [
      'login POST /api/m2m/v1/session/login',
      'logout POST /api/m2m/v1/session/logout',
      'passwordReset PUT /api/m2m/v1/session/password/actions/reset',
      'oauthToken POST /api/ts/v1/oauth2/token'
    ]
  )
  for (const endpoint of LOCALLY_ANSWERED_ENDPOINTS) {
    t.equal(normalisedPath(endpoint.path), endpoint.path, `${endpoint.name}: its path is already normal`)
  }
})

t.test('the OAuth token endpoint lies under /api/ but is answered locally, in every spelling', async (t) => {
  for (const target of [
    '/api/ts/v1/oauth2/token',
    '/api/ts/v1/oauth2/token/',
    '/api/ts/v1/oauth2/token;x',
    '/api/ts/v1/OAuth2/TOKEN',
    '/api/ts/v1//oauth2/token',
    '/api/ts/v1/oauth2/to%6ben',
    '/api/ts/v1/oauth2/token.json?x=1'
  ]) {
    t.ok(isForwardableTarget(target), `${target}: under the forwarded /api/`)
    t.equal(locallyAnsweredEndpoint(target)?.name, 'oauthToken', `${target}: answered locally`)
  }
  for (const target of ['/api/ts/v1/oauth2', '/api/ts/v1/oauth2/token/x', '/api/ts/v1/other']) {
    t.ok(isForwardableTarget(target), `${target}: forwarded`)
    t.equal(locallyAnsweredEndpoint(target), undefined, `${target}: not the token endpoint`)
  }
})

t.test('locallyAnsweredEndpoint: every spelling of a session call, and nothing else', async (t) => {
  const cases: Array<[string, string | undefined]> = [
    ['/api/m2m/v1/session/logout', 'logout'],
    ['/api/m2m/v1/session/logout/', 'logout'],
    ['/api/m2m/v1/session/logout;x', 'logout'],
    ['/api/m2m/v1//session/logout', 'logout'],
    ['/api/m2m/v1/session/LOGOUT', 'logout'],
    ['/api/m2m/v1/session/log%6fut', 'logout'],
    ['/api/m2m/v1/Session/Logout/?x=1', 'logout'],
    ['/api/m2m/v1/session/login', 'login'],
    ['/api/m2m/v1/session/login.do', 'login'],
    ['/api/m2m/v1/SESSION;a/LOGIN//', 'login'],
    ['/api/m2m/v1/session/password/actions/reset', 'passwordReset'],
    ['/api/m2m/v1/session/password/actions/reset/', 'passwordReset'],
    ['/api/m2m/v1/session/password/actions/reset;a', 'passwordReset'],
    ['/api/m2m/v1/session/password/actions/r%65set', 'passwordReset'],
    ['/api/m2m/v1/session/password//actions/RESET', 'passwordReset'],
    ['/api/ts/v1/oauth2/token', 'oauthToken'],
    ['/api/ts/v1/oauth2/token/', 'oauthToken'],
    ['/api/ts/v1/OAuth2/Token', 'oauthToken'],
    ['/api/m2m/%2e%2e/ts/v1/oauth2/token', 'oauthToken'],
    ['/api/m2m/v1/devices/actions/list', undefined],
    ['/api/m2m/v1/accounts/TestAccount-1?x=%20', undefined],
    ['/api/m2m/v1/devices/actions/list?next=/api/m2m/v1/session/logout', undefined], // the query is not the path
    ['/api/m2m/v1/session/logouts', undefined],
    ['/api/m2m/v1/session/logout/now', undefined],
    ['/api/m2m/v1/session/password/actions', undefined],
    ['/api/m2m/v2/session/logout', undefined],
    ['/api/m2m/v1/sessions/logout', undefined],
    ['/api/m2m/v1/session', undefined],
    ['/api/ts/v1/oauth2', undefined]
  ]
  for (const [target, name] of cases) t.equal(locallyAnsweredEndpoint(target)?.name, name, target)
})

/** Every spelling a lenient upstream takes for `path`: escapes, case, `;params`, repeated and trailing slashes. */
function spellingOf (path: string): fc.Arbitrary<string> {
  const segments = path.split('/').slice(1)
  const spelledSegment = (segment: string): fc.Arbitrary<string> =>
    fc
      .tuple(
        fc.array(fc.constantFrom('as-is', 'upper', 'escaped', 'escaped-twice'), {
          minLength: segment.length,
          maxLength: segment.length
        }),
        fc.option(fc.stringMatching(/^;[a-z=0-9]{0,6}$/), { nil: '' }),
        fc.constantFrom('/', '//', '///')
      )
      .map(
        ([ways, params, slash]) =>
          [...segment]
            .map((char, i) => {
              const hex = char.charCodeAt(0).toString(16)
              if (ways[i] === 'upper') return char.toUpperCase()
              if (ways[i] === 'escaped') return `%${hex}`
              if (ways[i] === 'escaped-twice') return `%25${hex}`
              return char
            })
            .join('') +
          params +
          slash
      )
  return fc.tuple(...segments.map(spelledSegment), fc.boolean()).map((parts) => {
    const trailingSlash = parts.pop() as boolean
    const joined = '/' + (parts as string[]).join('')
    return trailingSlash ? joined : joined.replace(/\/+$/, '')
  })
}

t.test('locallyAnsweredEndpoint: the cheap pre-check lets no spelling through (property)', async (t) => {
  for (const endpoint of LOCALLY_ANSWERED_ENDPOINTS) {
    fc.assert(
      fc.property(spellingOf(endpoint.path), (spelling) => locallyAnsweredEndpoint(spelling)?.name === endpoint.name),
      { numRuns: 500 }
    )
    t.pass(`${endpoint.name}: 500 spellings recognised`)
  }
})

// Issue 17, item 5: deny by default in the session namespace and at the token endpoint.
t.test(
  'inReservedNamespace: any spelling, junk and depth of encoding under the session namespace or at the token endpoint (property)',
  async (t) => {
    const junk = fc.constantFrom('', '%20', ' ', '~', '%E2%80%8B', '%09', '%2520', '%C2%A0', '-', '_')
    const trailing = fc.constantFrom('', '%20', '~', '%E2%80%8B', '.json', '%2Ejson', '%2520', '-', '_', '%00')
    for (const path of [
      '/api/m2m/v1/session/logout',
      '/api/m2m/v1/session/login',
      '/api/m2m/v1/session/password/actions/reset',
      '/api/ts/v1/oauth2/token',
      '/api/m2m/v1/session/anything'
    ]) {
      fc.assert(
        fc.property(
          spellingOf(path),
          junk,
          trailing,
          fc.integer({ min: 0, max: 5 }),
          (spelling, before, after, depth) => {
            const segments = spelling.split('/')
            const last = segments.length - 1 - (spelling.endsWith('/') ? 1 : 0)
            segments[last] = `${before}${segments[last] ?? ''}${after}`
            let target = segments.join('/')
            for (let i = 0; i < depth; i++) target = target.replace(/%/, '%25')
            return inReservedNamespace(target) || locallyAnsweredEndpoint(target) !== undefined
          }
        ),
        { numRuns: 300 }
      )
      t.pass(`${path}: 300 spellings never forwarded`)
    }
    for (const target of [
      '/api/m2m/v1/sessions',
      '/api/m2m/v1/devices/actions/list',
      '/api/m2m/v1/groups/x/name/session',
      '/api/ts/v1/oauth2/tokens',
      '/api/m2m/v2/session/login',
      '/api/ts/v1/oauth2'
    ]) {
      t.notOk(inReservedNamespace(target), `${target}: not reserved`)
    }
  }
)

t.test('targetRefusal: the real reason of a refusal', async (t) => {
  t.match(targetRefusal('/api/m2m/v1/x/..%2F..%2Fts'), {
    code: 'EncodedTraversal',
    message: /decoded 1 time\(s\) has a dot segment/
  })
  t.match(targetRefusal('/api/m2m/v1/x/..'), {
    code: 'EncodedTraversal',
    message: /^not proxied: the path has a dot segment/
  })
  t.match(targetRefusal('/api/m2m/v1/x/%zz'), { code: 'MalformedPath' })
  t.match(targetRefusal('/api/m2m/%c0%ae'), { code: 'MalformedPath', message: /not valid UTF-8/ }, 'an overlong dot')
  t.match(
    targetRefusal('/api/m2m/%25c0%25ae/%25c0%25ae'),
    { code: 'MalformedPath', message: /not valid UTF-8/ },
    'an overlong dot one level down'
  )
  t.match(targetRefusal(`/api/m2m/v1/x/${'%25'.repeat(1)}${'25'.repeat(12)}41`), { code: 'TooManyEncodings' })
  t.match(targetRefusal('/admin/session'), { code: 'OutsidePrefixes' })
  for (const target of [
    '/api/m2m/v1/groups/0000123456-00001/name/Fleet%2050%25',
    '/api/m2m/v1/groups/g/name/EU%2FNorth',
    '/api/m2m/v1/groups/g/name/EU%5CNorth',
    '/api/m2m/v1/groups/g/name/Fleet%2050%2541'
  ]) {
    t.equal(targetRefusal(target), undefined, `${target}: forwarded`)
  }
})

t.test('withUpstreamAuth replaces client credentials and keeps other headers', async (t) => {
  const tokens = { oauthToken: 'oauth-abc123', sessionToken: 'sess-def456' }
  const headers: IncomingHttpHeaders = {
    authorization: 'Bearer client-supplied',
    'vz-m2m-token': 'client-session',
    'proxy-authorization': 'Basic Zm9vOmJhcg==',
    'content-type': 'application/json',
    accept: 'application/json',
    'x-request-id': 'req-1',
    'x-custom': ['a', 'b'],
    host: 'proxy.local:8080'
  }
  const result = withUpstreamAuth(headers, tokens)
  t.equal(result.authorization, 'Bearer oauth-abc123')
  t.equal(result[SESSION_TOKEN_HEADER], 'sess-def456')
  t.equal(SESSION_TOKEN_HEADER, 'vz-m2m-token')
  t.notOk('proxy-authorization' in result, 'proxy-authorization removed')
  t.equal(result['content-type'], 'application/json')
  t.equal(result.accept, 'application/json')
  t.equal(result['x-request-id'], 'req-1')
  t.same(result['x-custom'], ['a', 'b'])
  t.equal(result.host, 'proxy.local:8080')
  const serialized = JSON.stringify(result)
  t.notOk(serialized.includes('client-supplied'))
  t.notOk(serialized.includes('client-session'))
  t.notOk(serialized.includes('Zm9vOmJhcg=='))
  t.same(Object.keys(result).sort(), [
    'accept',
    'authorization',
    'content-type',
    'host',
    'vz-m2m-token',
    'x-custom',
    'x-request-id'
  ])
})

t.test('withUpstreamAuth adds the tokens when the client sent none', async (t) => {
  const result = withUpstreamAuth({ accept: '*/*' }, { oauthToken: 'o1', sessionToken: 's1' })
  t.same(result, { accept: '*/*', authorization: 'Bearer o1', 'vz-m2m-token': 's1' })
})

t.test('withoutHopByHop drops hop-by-hop headers and those the Connection header names', async (t) => {
  const answer = {
    'content-type': 'application/json',
    'content-length': '2',
    'keep-alive': 'timeout=5',
    'transfer-encoding': 'chunked',
    'x-trace': 't1'
  }
  t.same(
    withoutHopByHop({ ...answer, connection: 'keep-alive' }),
    { 'content-type': 'application/json', 'content-length': '2', 'x-trace': 't1' },
    'the usual Connection: keep-alive'
  )
  t.same(
    withoutHopByHop({ ...answer, connection: 'Keep-Alive, X-Trace' }),
    { 'content-type': 'application/json', 'content-length': '2' },
    'a named header, in any case'
  )
  t.same(withoutHopByHop({ ...answer, connection: 'close, x-trace' }), {
    'content-type': 'application/json',
    'content-length': '2'
  })
  t.same(withoutHopByHop({ 'x-trace': 't1' }), { 'x-trace': 't1' }, 'no Connection header')
})

function body (value: unknown): Buffer {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value))
}

t.test('tokenRejectionOf: session-token error codes mean log in again', async (t) => {
  t.same(
    tokenRejectionOf(
      400,
      body({
        errorCode: 'UnifiedWebService.REQUEST_FAILED.SessionToken.Expired',
        errorMessage: 'Session token expired'
      })
    ),
    { cause: 'session', reason: 'expired' }
  )
  t.same(
    tokenRejectionOf(
      400,
      body({ errorCode: 'UnifiedWebService.INPUT_INVALID.SessionToken.Invalid', errorMessage: 'x' })
    ),
    { cause: 'session', reason: 'invalid' }
  )
  t.same(tokenRejectionOf(400, body({ errorCode: 'UnifiedWebService.REQUEST_FAILED.SessionToken.Format' })), {
    cause: 'session',
    reason: 'invalid'
  })
  t.same(
    tokenRejectionOf(401, body({ errorCode: 'UnifiedWebService.REQUEST_FAILED.SessionToken.Expired' })),
    { cause: 'session', reason: 'expired' },
    'status 400 is not relied on'
  )
  t.same(
    tokenRejectionOf(403, body({ errorCode: 'OtherService.INPUT_INVALID.SessionToken.Unknown' })),
    { cause: 'session', reason: 'invalid' },
    'any service prefix'
  )
})

t.test('tokenRejectionOf: the message is never matched, only the code', async (t) => {
  t.equal(
    tokenRejectionOf(
      400,
      body({ errorCode: 'UnifiedWebService.REQUEST_FAILED.AccountNotFound', errorMessage: 'SessionToken.Expired' })
    ),
    undefined
  )
  t.equal(tokenRejectionOf(400, body({ errorMessage: '.SessionToken.Expired' })), undefined)
})

t.test('tokenRejectionOf: gateway fault 900901 on 401 means a new OAuth token', async (t) => {
  const fault = {
    fault: {
      code: '900901',
      message: 'Invalid Credentials',
      description: 'Invalid Credentials. Make sure you have given the correct access token'
    }
  }
  t.same(tokenRejectionOf(401, body(fault)), { cause: 'oauth', reason: 'expired' })
  t.same(
    tokenRejectionOf(401, body({ fault: { code: 900901 } })),
    { cause: 'oauth', reason: 'expired' },
    'numeric code'
  )
  t.equal(
    tokenRejectionOf(401, body({ fault: { code: '900902', message: 'Missing Credentials' } })),
    undefined,
    '900902 is not replayed'
  )
  t.equal(tokenRejectionOf(400, body(fault)), undefined, 'only on 401')
  t.equal(tokenRejectionOf(403, body(fault)), undefined, 'only on 401')
  t.equal(tokenRejectionOf(401, body({ fault: {} })), undefined)
  t.equal(tokenRejectionOf(401, body({ fault: 'x' })), undefined)
})

t.test('tokenRejectionOf: the same refusals from every API family', async (t) => {
  const sessionExpired = {
    errorCode: 'UnifiedWebService.REQUEST_FAILED.SessionToken.Expired',
    errorMessage: 'Session token expired'
  }
  const gatewayFault = {
    fault: {
      code: '900901',
      message: 'Invalid Credentials',
      description: 'Access failure for API: /fota/v3, version: v3. Make sure your have given the correct access token'
    }
  }
  t.same(
    tokenRejectionOf(400, body(sessionExpired)),
    { cause: 'session', reason: 'expired' },
    'UWS session code, as any family relays it'
  )
  t.same(tokenRejectionOf(401, body(gatewayFault)), { cause: 'oauth', reason: 'expired' }, 'gateway fault, any family')
  t.same(
    tokenRejectionOf(
      401,
      body({ responseCode: 'INVALID_ACCESS', message: 'x', fault: { code: '900901', message: 'Invalid Credentials' } })
    ),
    { cause: 'oauth', reason: 'expired' },
    "Hyper Precise Location's envelope around the gateway fault"
  )
  t.same(
    tokenRejectionOf(
      400,
      body({ errorCode: 'INVALID_PARAMETER', errorMessage: 'UWS verification failure (The Session has expired.)' })
    ),
    { cause: 'session', reason: 'expired' },
    'Device Location (and Subscription Server) expired session'
  )
  t.same(
    tokenRejectionOf(
      401,
      body({
        error: 'unauthorized',
        error_description: 'Failure response received for UWS V1 REST accounts: [400]',
        cause: 'Requested service is unauthorized for given token'
      })
    ),
    { cause: 'session', reason: 'invalid' },
    'Cloud Connector refused session'
  )
})

t.test(
  'tokenRejectionOf: family errors that do not say which token, or are no token refusal, are not replayed',
  async (t) => {
    const notRefusals: Array<[number, unknown, string]> = [
      [
        400,
        {
          errorCode: 'INVALID_PARAMETER',
          errorMessage: 'UWS verification failure (Could not find account 0000123456-00001)'
        },
        'Device Location: unknown account'
      ],
      [400, { errorCode: 'INVALID_PARAMETER', errorMessage: 'Invalid JSON' }, 'Device Location: bad request'],
      [
        400,
        { errorCode: 'DEVICE_NOT_FOUND', errorMessage: 'UWS verification failure (The Session has expired.)' },
        'the Location message under another code'
      ],
      [400, { errorMessage: 'UWS verification failure (The Session has expired.)' }, 'the Location message alone'],
      [
        401,
        {
          errorCode: 'INVALID_ACCOUNT',
          errorMessage: 'An error was encountered when trying to verify the UWS account.'
        },
        'Device Diagnostics: ambiguous'
      ],
      [401, { errorCode: '401', errorMessage: 'Unauthorized' }, 'errorCode as an HTTP status: which token?'],
      [
        401,
        { responseCode: 'INVALID_ACCESS', message: 'Invalid access' },
        'Hyper Precise Location without a gateway fault'
      ],
      [
        404,
        {
          responseCode: 'INVALID_ACCESS',
          fault: { code: '900906', message: 'No matching resource found in the API for the given request' }
        },
        'gateway 900906'
      ],
      [
        500,
        {
          error: 'internal_server_error',
          error_description:
            'configuration on Device field failed with Error: unauthorized: Failure response received for UWS V1 REST accounts: [401]'
        },
        'Cloud Connector: malformed bearer'
      ],
      [
        401,
        { error: 'unauthorized', error_description: 'Failure response received for UWS V1 REST accounts: [401]' },
        'Cloud Connector: UWS 401'
      ],
      [
        400,
        { error: 'bad_request', error_description: 'Failure response received for UWS V1 REST accounts: [400]' },
        'Cloud Connector: another error'
      ],
      [401, { error: 'unauthorized' }, 'Cloud Connector shape without description'],
      [401, { error: 'invalid_client', error_description: 'Client authentication failed' }, 'OAuth provider error'],
      [401, { error: 'invalid_token' }, "OAuth-style bearer error, not ThingSpace's"]
    ]
    for (const [status, answer, what] of notRefusals) t.equal(tokenRejectionOf(status, body(answer)), undefined, what)
  }
)

t.test('tokenRejectionOf: other answers are not token rejections', async (t) => {
  t.equal(
    tokenRejectionOf(
      400,
      body({ errorCode: 'UnifiedWebService.REQUEST_FAILED.AccountNotFound', errorMessage: 'no account' })
    ),
    undefined
  )
  t.equal(tokenRejectionOf(400, body({ errorCode: 'UnifiedWebService.INPUT_INVALID.DeviceId' })), undefined)
  t.equal(tokenRejectionOf(400, body({ errorCode: 'SessionTokenExpired' })), undefined)
  t.equal(tokenRejectionOf(400, body({ errorCode: 42 })), undefined)
  t.equal(tokenRejectionOf(400, body('not json at all')), undefined)
  t.equal(tokenRejectionOf(400, body('<html>Bad Request</html>')), undefined)
  t.equal(tokenRejectionOf(400, body('')), undefined)
  t.equal(tokenRejectionOf(400, body('null')), undefined)
  t.equal(tokenRejectionOf(400, body('"UnifiedWebService.REQUEST_FAILED.SessionToken.Expired"')), undefined)
  t.equal(tokenRejectionOf(400, body('[]')), undefined)
  t.equal(tokenRejectionOf(401, Buffer.from([0xff, 0xfe, 0x00])), undefined)
})

t.test('mayBeTokenRejection: only 4xx answers are inspected', async (t) => {
  for (const status of [400, 401, 403, 404, 499]) t.ok(mayBeTokenRejection(status), String(status))
  for (const status of [200, 204, 301, 399, 500, 502, 504]) t.notOk(mayBeTokenRejection(status), String(status))
})

function codedError (message: string, code: string | undefined, cause?: unknown): Error {
  const error = new Error(message, cause === undefined ? undefined : { cause })
  if (code !== undefined) Object.assign(error, { code })
  return error
}

t.test('classifyUpstreamFailure: timeouts are 504, including when wrapped by reply-from', async (t) => {
  const wrapped = codedError(
    'reply-from failed',
    'FST_REPLY_FROM_INTERNAL_SERVER_ERROR',
    codedError('Headers Timeout Error', 'UND_ERR_HEADERS_TIMEOUT')
  )
  t.same(classifyUpstreamFailure(wrapped), { kind: 'upstreamTimeout', detail: 'UND_ERR_HEADERS_TIMEOUT', sent: true })
  t.same(
    classifyUpstreamFailure(codedError('x', undefined, codedError('Headers Timeout Error', 'UND_ERR_HEADERS_TIMEOUT'))),
    { kind: 'upstreamTimeout', detail: 'UND_ERR_HEADERS_TIMEOUT', sent: true }
  )
  t.equal(classifyUpstreamFailure(codedError('body timeout', 'UND_ERR_BODY_TIMEOUT')).kind, 'upstreamTimeout')
  t.equal(classifyUpstreamFailure(codedError('connect timeout', 'UND_ERR_CONNECT_TIMEOUT')).kind, 'upstreamTimeout')
  t.equal(
    classifyUpstreamFailure(codedError('gateway timeout', 'FST_REPLY_FROM_GATEWAY_TIMEOUT')).kind,
    'upstreamTimeout'
  )
})

t.test('classifyUpstreamFailure: refused and reset connections are 502', async (t) => {
  t.same(classifyUpstreamFailure(codedError('connect ECONNREFUSED 127.0.0.1:1', 'ECONNREFUSED')), {
    kind: 'upstreamUnreachable',
    detail: 'ECONNREFUSED',
    sent: false
  })
  t.same(
    classifyUpstreamFailure(
      codedError('wrapped', 'FST_REPLY_FROM_INTERNAL_SERVER_ERROR', codedError('socket hang up', 'ECONNRESET'))
    ),
    { kind: 'upstreamUnreachable', detail: 'ECONNRESET', sent: true }
  )
  t.same(classifyUpstreamFailure(codedError('other side closed', 'UND_ERR_SOCKET')), {
    kind: 'upstreamUnreachable',
    detail: 'UND_ERR_SOCKET',
    sent: true
  })
  t.same(classifyUpstreamFailure(codedError('only fastify', 'FST_REPLY_FROM_INTERNAL_SERVER_ERROR')), {
    kind: 'upstreamUnreachable',
    detail: 'FST_REPLY_FROM_INTERNAL_SERVER_ERROR',
    sent: true
  })
  t.same(classifyUpstreamFailure(new Error('no code')), { kind: 'upstreamUnreachable', detail: 'unknown error', sent: true })
  t.same(classifyUpstreamFailure('not an error'), { kind: 'upstreamUnreachable', detail: 'unknown error', sent: true })
})

// A client told "not sent" sends again: an activation done twice. Only a failure before any connection says so.
t.test('classifyUpstreamFailure: "not sent" only when no connection was made', async (t) => {
  for (const code of [
    'ECONNREFUSED',
    'ENOTFOUND',
    'EAI_AGAIN',
    'EHOSTUNREACH',
    'ENETUNREACH',
    'UND_ERR_CONNECT_TIMEOUT',
    'ERR_TLS_CERT_ALTNAME_INVALID',
    'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
    'SELF_SIGNED_CERT_IN_CHAIN',
    'CERT_HAS_EXPIRED'
  ]) {
    const wrapped = codedError('reply-from failed', 'FST_REPLY_FROM_INTERNAL_SERVER_ERROR', codedError(code, code))
    t.equal(classifyUpstreamFailure(wrapped).sent, false, code)
  }
  for (const code of [
    'ECONNRESET',
    'EPIPE',
    'UND_ERR_SOCKET',
    'UND_ERR_HEADERS_TIMEOUT',
    'UND_ERR_BODY_TIMEOUT',
    'UND_ERR_HEADERS_OVERFLOW',
    'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
    'HPE_INVALID_CONSTANT',
    'FST_REPLY_FROM_GATEWAY_TIMEOUT'
  ]) {
    t.equal(classifyUpstreamFailure(codedError(code, code)).sent, true, code)
  }
  t.equal(classifyUpstreamFailure(new Error('no code')).sent, true, 'unknown: may have been sent')
})

t.test('proxy errors: statuses and Proxy.-prefixed codes', async (t) => {
  t.equal(PROXY_ERRORS.upstreamUnreachable.status, 502)
  t.equal(PROXY_ERRORS.upstreamTimeout.status, 504)
  t.equal(PROXY_ERRORS.authUnavailable.status, 503)
  t.equal(PROXY_ERRORS.bodyTooLarge.status, 413)
  t.equal(PROXY_ERRORS.notFound.status, 404)
  t.equal(PROXY_ERRORS.forbidden.status, 403)
  for (const [kind, { code }] of Object.entries(PROXY_ERRORS)) t.match(code, /^Proxy\.[A-Z]\w+$/, kind)
})

t.test('sendProxyError answers in ThingSpace shape', async (t) => {
  const sent: { status?: number; headers: Record<string, string>; body?: unknown } = { headers: {} }
  const reply = {
    request: { id: 'req-9' },
    code (status: number) {
      sent.status = status
      return this
    },
    header (name: string, value: string) {
      sent.headers[name] = value
      return this
    },
    send (payload: unknown) {
      sent.body = payload
      return this
    }
  }
  sendProxyError(reply as unknown as FastifyReply, 'authUnavailable', 'cannot log in', 'CredentialsRejected')
  t.equal(sent.status, 503)
  t.match(sent.headers['content-type'], /^application\/json/)
  t.same(sent.body, { errorCode: 'Proxy.AuthenticationUnavailable.CredentialsRejected', errorMessage: 'cannot log in' })
  t.equal(sent.headers['x-request-id'], 'req-9', 'with the request id')
  sendProxyError(reply as unknown as FastifyReply, 'notFound', 'not proxied')
  t.equal(sent.status, 404)
  t.same(sent.body, { errorCode: 'Proxy.NotFound', errorMessage: 'not proxied' })
})
