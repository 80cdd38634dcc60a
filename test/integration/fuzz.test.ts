// Property-based fuzzing of the proxy listener (fast-check): whatever the client sends, the proxy survives,
// forwards only under /api/m2m/, never forwards the client's own credentials, never leaks a token itself,
// and every answer carries a request id.

import t, { type Test } from 'tap'
import fc from 'fast-check'
import http from 'node:http'
import net from 'node:net'
import { startStack } from '../helpers/stack.js'
import { rawExchange } from '../helpers/raw-http.js'

const UPSTREAM_OAUTH = 'fuzz-oauth-token-3f9a1c'
const UPSTREAM_SESSION = 'fuzz-session-token-7b2e4d'

interface Recorded { url: string, headers: http.IncomingHttpHeaders }

/** Records every request; answers the auth endpoints, and everything else with a marked body. */
async function startRecordingUpstream (t: Test): Promise<{ url: string, recorded: Recorded[] }> {
  const recorded: Recorded[] = []
  const server = http.createServer((request, response) => {
    request.resume()
    request.on('end', () => {
      if (request.url === '/api/ts/v1/oauth2/token') {
        response.setHeader('content-type', 'application/json')
        response.end(JSON.stringify({ access_token: UPSTREAM_OAUTH, token_type: 'bearer', expires_in: 3600 }))
        return
      }
      if (request.url === '/api/m2m/v1/session/login') {
        response.setHeader('content-type', 'application/json')
        response.end(JSON.stringify({ sessionToken: UPSTREAM_SESSION }))
        return
      }
      recorded.push({ url: request.url ?? '', headers: request.headers })
      response.setHeader('x-from-upstream', '1')
      response.end('{"upstream":true}')
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
  return { url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, recorded }
}

// Mostly plausible paths, so that many requests are forwarded, salted with traversal and encoding tricks.
const segment = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('v1', 'devices', 'actions', 'list', 'accounts', 'session', 'login', 'logout', 'simulator', 'echo', 'admin', 'oauth2', 'token', 'ts') },
  { weight: 2, arbitrary: fc.constantFrom('..', '.', '%2e%2e', '%2E.', '.%2e', '%252e%252e', '..;', '%2f', '%5c', '\\..', '%00', '%', '%zz', '', '~', '%c0%ae') },
  { weight: 3, arbitrary: fc.stringMatching(/^[A-Za-z0-9._~%-]{1,12}$/) }
)
const target = fc.tuple(
  fc.oneof(
    { weight: 6, arbitrary: fc.constant('/api/m2m/') },
    { weight: 3, arbitrary: fc.constantFrom('/api/m2m', '/api/', '/', '//', '/admin/', 'http://evil.example/api/m2m/', '/api/ts/v1/', '*', '/API/M2M/') }
  ),
  fc.array(segment, { maxLength: 6 }),
  fc.option(fc.stringMatching(/^[A-Za-z0-9=&%._-]{0,20}$/))
).map(([prefix, segments, query]) => prefix + segments.join('/') + (query === null ? '' : `?${query}`))
const method = fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS', 'PROPFIND', 'CONNECT', 'TRACE', 'BREW')
const headerValue = fc.stringMatching(/^[\x21-\x7e]{1,40}$/)
const extraHeaders = fc.array(fc.tuple(
  fc.constantFrom('Authorization', 'VZ-M2M-Token', 'vz-m2m-token', 'Proxy-Authorization', 'Connection', 'Keep-Alive', 'TE', 'Upgrade', 'Transfer-Encoding',
    'X-Request-Id', 'Content-Type', 'Expect', 'Host', 'X-Forwarded-For', 'Cookie', 'X-Custom'),
  headerValue
), { maxLength: 8 })
const body = fc.oneof(fc.constant(''), fc.stringMatching(/^[\x20-\x7e]{0,300}$/), fc.json())

t.test('fuzzed requests: no crash, nothing outside /api/m2m/, no client credentials forwarded, no token leaked', async (t) => {
  const upstream = await startRecordingUpstream(t)
  const stack = await startStack(t, { upstream: upstream.url, env: { M2M_PROXY_LOG_LEVEL: 'warn', M2M_PROXY_UPSTREAM_TIMEOUT_MS: '2000' } })
  let clientSecretCounter = 0
  let exchanges = 0
  const statuses: Record<string, number> = {}
  await fc.assert(fc.asyncProperty(method, target, extraHeaders, body, async (verb, path, headers, payload) => {
    // Unique client credentials per request, so that any forwarded copy can be found.
    const marker = `client-cred-${++clientSecretCounter}-x`
    const lines = [`${verb} ${path} HTTP/1.1`, 'Host: localhost', `Authorization: Bearer ${marker}`, `VZ-M2M-Token: ${marker}`]
    for (const [name, value] of headers) {
      if (name.toLowerCase() === 'transfer-encoding' || name.toLowerCase() === 'host') continue // would desynchronise the framing of this raw request
      lines.push(`${name}: ${name.toLowerCase().includes('auth') || name.toLowerCase().includes('token') ? marker : value}`)
    }
    lines.push(`Content-Length: ${Buffer.byteLength(payload)}`, 'Connection: close', '', payload)
    const answer = await rawExchange(stack.proxy.proxyUrl, lines.join('\r\n'))
    exchanges += 1
    statuses[answer.slice(9, 12)] = (statuses[answer.slice(9, 12)] ?? 0) + 1
    // Every request gets an answer, CONNECT too (405: this is not a forward proxy).
    if (answer === '') return false
    if (verb === 'CONNECT' && !answer.startsWith('HTTP/1.1 405 ')) return false
    const head = answer.slice(0, Math.max(0, answer.indexOf('\r\n\r\n')))
    // Every answer carries the request id, except those given before there is a request (Node's parser, CONNECT).
    const beforeRequest = answer.includes('malformed HTTP request') || answer.startsWith('HTTP/1.1 417 ') || verb === 'CONNECT'
    if (answer !== '' && !beforeRequest && !/\r\nx-request-id: /i.test(head)) return false
    if (answer !== '' && !/x-from-upstream: 1/i.test(head)) {
      // An answer the proxy made itself must not carry a real token, and its errors have ThingSpace's shape.
      if (answer.includes(UPSTREAM_OAUTH) || answer.includes(UPSTREAM_SESSION)) return false
      const status = Number(answer.slice(9, 12))
      const payloadText = answer.slice(answer.indexOf('\r\n\r\n') + 4)
      if (status >= 400 && status !== 417 && verb !== 'HEAD') {
        let errorCode: unknown
        try {
          errorCode = (JSON.parse(payloadText) as { errorCode?: unknown }).errorCode
        } catch {
          errorCode = undefined
        }
        if (typeof errorCode !== 'string' || !errorCode.startsWith('Proxy.')) return false
      }
    }
    return true
  }), { numRuns: 400, interruptAfterTimeLimit: 60_000 })

  t.ok(exchanges >= 100, `${exchanges} fuzzed exchanges, answers by status: ${JSON.stringify(statuses)}`)
  t.equal((await fetch(`${stack.proxy.adminUrl}/healthz`)).status, 200, 'the proxy is still alive')
  const probe = await stack.call('GET', '/api/m2m/v1/after-fuzzing')
  t.equal(probe.status, 200, 'and still forwards')
  t.ok(upstream.recorded.length > 40, `${upstream.recorded.length} requests reached upstream`)
  for (const { url, headers } of upstream.recorded) {
    const path = url.split('?', 1)[0] ?? ''
    t.ok(path.startsWith('/api/m2m/'), `forwarded only under /api/m2m/: ${url.slice(0, 60)}`)
    t.notOk(/(^|\/)\.\.?(\/|$)/.test(decodeURIComponent(path.replace(/%(?![0-9a-fA-F]{2})/g, '%25'))), 'no dot segment')
    t.equal(headers.authorization, `Bearer ${UPSTREAM_OAUTH}`)
    t.equal(headers['vz-m2m-token'], UPSTREAM_SESSION)
    t.notMatch(JSON.stringify(headers), /client-cred-/, 'no client credential forwarded')
  }
})
