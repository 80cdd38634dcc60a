// The request guard alone: Host allow-list, cross-site browser requests, origin-form targets; and the listeners' time
// limits.

import t from 'tap'
import { hostNameOf, RequestGuard } from '../../src/listener/request-guard.js'
import { listenerTimeouts } from '../../src/listener/hardening.js'

const guard = new RequestGuard(['proxy.internal', '0.0.0.0', 'M2M-Proxy.Example.'])
const PATH = '/api/m2m/v1/devices/actions/list'

t.test('Host header values: host name, port, IPv6 brackets, case, trailing dot', async (t) => {
  const cases: Array<[string, string | undefined]> = [
    ['localhost', 'localhost'],
    ['LOCALHOST:8080', 'localhost'],
    ['localhost.:8080', 'localhost'],
    ['127.0.0.1:8080', '127.0.0.1'],
    ['[::1]:8080', '::1'],
    ['[::1]', '::1'],
    ['[fe80::1%25eth0]', 'fe80::1%25eth0'],
    ['::1', undefined],
    ['[::1', undefined],
    ['[not-v6]:80', undefined],
    ['localhost:80:80', undefined],
    ['localhost:http', undefined],
    ['localhost:', undefined],
    ['localhost:123456', undefined]
  ]
  for (const [header, expected] of cases) t.equal(hostNameOf(header), expected, header)
})

t.test('allowed hosts: localhost, every IP literal, the configured names; nothing else', async (t) => {
  const allowed = [
    'localhost',
    'localhost:8080',
    '127.0.0.1',
    '127.0.0.1:9090',
    '10.1.2.3:9090',
    '[::1]:8080',
    '[2001:db8::7]',
    'proxy.internal:8080',
    'PROXY.INTERNAL',
    'm2m-proxy.example',
    '0.0.0.0:8080'
  ]
  const refused = [
    'attacker.example',
    'attacker.example:8080',
    'localhost.attacker.example',
    'proxy.internal.attacker.example',
    'sub.localhost',
    '127.0.0.1.nip.io',
    '2130706433',
    '',
    ' localhost',
    'localhost:8080:1',
    '[::1]x'
  ]
  for (const host of allowed) t.equal(guard.check(PATH, { host }), undefined, `allowed: ${host}`)
  for (const host of refused) {
    t.match(
      guard.check(PATH, { host }),
      { kind: 'forbidden', codeSuffix: 'HostNotAllowed' },
      `refused: ${JSON.stringify(host)}`
    )
  }
  t.equal(guard.check(PATH, {}), undefined, 'no Host at all (HTTP/1.0; Node refuses it for HTTP/1.1)')
  // The memo of the last accepted Host must not let the next, different one through.
  t.equal(guard.check(PATH, { host: 'localhost' }), undefined)
  t.match(guard.check(PATH, { host: 'evil.example' }), { kind: 'forbidden' })
  t.equal(guard.check(PATH, { host: 'localhost' }), undefined)
})

t.test('an overlong refused Host is cut in the message', async (t) => {
  const refusal = guard.check(PATH, { host: 'a'.repeat(5000) + '.example' })
  t.ok(refusal !== undefined && refusal.message.length < 400, 'message stays short')
})

t.test(
  'browser requests from another site: Sec-Fetch-Site cross-site, or an Origin whose host is not allowed',
  async (t) => {
    const host = 'localhost:8080'
    const refused: Array<Record<string, string>> = [
      { 'sec-fetch-site': 'cross-site' },
      { 'sec-fetch-site': 'Cross-Site' },
      { origin: 'http://attacker.example' },
      { origin: 'http://attacker.example:8080' },
      { origin: 'null' },
      { origin: 'not a url' },
      { origin: 'http://localhost:8080', 'sec-fetch-site': 'cross-site' }
    ]
    const allowed: Array<Record<string, string>> = [
      { 'sec-fetch-site': 'same-origin' },
      { 'sec-fetch-site': 'same-site' },
      { 'sec-fetch-site': 'none' },
      { origin: 'http://localhost:3000' },
      { origin: 'http://127.0.0.1:8080' },
      { origin: 'http://[::1]:8080' },
      { origin: 'https://proxy.internal' }
    ]
    for (const headers of refused) {
      t.match(
        guard.check(PATH, { host, ...headers }),
        { kind: 'forbidden', codeSuffix: 'CrossSiteRequest' },
        JSON.stringify(headers)
      )
    }
    for (const headers of allowed) t.equal(guard.check(PATH, { host, ...headers }), undefined, JSON.stringify(headers))
  }
)

t.test('only origin-form targets', async (t) => {
  for (const target of [
    'http://127.0.0.1:9090/admin/password/rotate',
    'HTTP://localhost/admin',
    'https://x/api/m2m/v1/x',
    '*',
    'localhost:9090',
    ''
  ]) {
    t.match(guard.check(target, { host: 'localhost' }), { kind: 'badRequest' }, JSON.stringify(target))
  }
  for (const target of ['/', '/admin/session', '//admin', '/%61dmin']) {
    t.equal(guard.check(target, { host: 'localhost' }), undefined, target)
  }
})

t.test(
  'time limits: headers never allowed longer than the whole request or the idle timeout; timeouts checked often enough',
  async (t) => {
    for (const requestTimeoutMs of [100, 500, 30_000, 120_000]) {
      for (const idleTimeoutMs of [200, 5000]) {
        const { requestTimeout, keepAliveTimeout, http } = listenerTimeouts(requestTimeoutMs, idleTimeoutMs)
        t.equal(requestTimeout, requestTimeoutMs)
        t.equal(http.requestTimeout, requestTimeoutMs)
        t.equal(keepAliveTimeout, idleTimeoutMs, 'an idle keep-alive connection is closed after the idle timeout')
        t.equal(
          http.headersTimeout,
          Math.min(requestTimeoutMs, idleTimeoutMs),
          `headers ${http.headersTimeout}: the shorter of ${requestTimeoutMs} and ${idleTimeoutMs}`
        )
        t.ok(
          http.connectionsCheckingInterval !== undefined &&
            http.connectionsCheckingInterval <= Math.min(1000, requestTimeoutMs, idleTimeoutMs)
        )
      }
    }
  }
)
