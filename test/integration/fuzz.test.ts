// Property-based fuzzing of the proxy listener (fast-check): whatever the client sends, the proxy survives,
// forwards only under /api/ (every API family; the proxy's own endpoints answered locally), never forwards the client's
// own credentials, never leaks a token itself, and every answer carries a request id. Each generated request is
// forwarded exactly when the proxy's rules say it should be. The run is seeded (FUZZ_SEED, default below), so that it
// passes or fails the same way every time.

import t, { type Test } from 'tap'
import fc from 'fast-check'
import http from 'node:http'
import { startStack } from '../helpers/stack.js'
import { rawExchange } from '../helpers/raw-http.js'
import { startStandInUpstream } from '../helpers/stand-in-upstream.js'
import { inReservedNamespace, isForwardableTarget, locallyAnsweredEndpoint } from '../../src/proxy/paths.js'

// The proxy logs in once: the stand-in's first tokens, easy to spot in an answer.
const UPSTREAM_TOKEN_PREFIX = 'fuzz-3f9a1c-7b2e4d-'
const UPSTREAM_OAUTH = `${UPSTREAM_TOKEN_PREFIX}oauth-1`
const UPSTREAM_SESSION = `${UPSTREAM_TOKEN_PREFIX}session-1`

/** Another seed explores other requests: `FUZZ_SEED=123 npx tap .build/test/integration/fuzz.test.js` (built) */
const DEFAULT_SEED = 20_240_612
const SEED =
  process.env.FUZZ_SEED === undefined || process.env.FUZZ_SEED === '' ? DEFAULT_SEED : Number(process.env.FUZZ_SEED)
if (!Number.isSafeInteger(SEED)) {
  throw new Error(`FUZZ_SEED must be an integer, not ${JSON.stringify(process.env.FUZZ_SEED)}`)
}
const RERUN = `FUZZ_SEED=${SEED}`

interface Recorded {
  url: string
  headers: http.IncomingHttpHeaders
}

/** Records every request; answers the auth endpoints, and everything else with a marked body. */
async function startRecordingUpstream (t: Test): Promise<{ url: string; recorded: Recorded[] }> {
  const recorded: Recorded[] = []
  const upstream = await startStandInUpstream(
    t,
    (request, _body, response) => {
      recorded.push({ url: request.url ?? '', headers: request.headers })
      response.setHeader('x-from-upstream', '1')
      response.end('{"upstream":true}')
    },
    { tokenPrefix: UPSTREAM_TOKEN_PREFIX }
  )
  return { url: upstream.url, recorded }
}

// Mostly plausible paths, so that many requests are forwarded, salted with traversal and encoding tricks.
const segment = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.constantFrom(
      'v1',
      'devices',
      'actions',
      'list',
      'accounts',
      'session',
      'login',
      'logout',
      'simulator',
      'echo',
      'admin',
      'oauth2',
      'token',
      'ts'
    )
  },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      '..',
      '.',
      '%2e%2e',
      '%2E.',
      '.%2e',
      '%252e%252e',
      '..;',
      '%2f',
      '%5c',
      '\\..',
      '%00',
      '%',
      '%zz',
      '',
      '~',
      '%c0%ae'
    )
  },
  { weight: 3, arbitrary: fc.stringMatching(/^[A-Za-z0-9._~%-]{1,12}$/) }
)
const target = fc
  .tuple(
    fc.oneof(
      { weight: 6, arbitrary: fc.constant('/api/m2m/') },
      {
        weight: 3,
        arbitrary: fc.constantFrom(
          '/api/m2m',
          '/api/',
          '/api',
          '/api/loc/v1/',
          '/api/fota/v3/',
          '/api/cc/v1/',
          '/apix/',
          '/',
          '//',
          '/admin/',
          'http://evil.example/api/m2m/',
          '/api/ts/v1/',
          '/api/ts/v1/oauth2/',
          '*',
          '/API/M2M/'
        )
      }
    ),
    fc.array(segment, { maxLength: 6 }),
    fc.option(fc.stringMatching(/^[A-Za-z0-9=&%._-]{0,20}$/))
  )
  .map(([prefix, segments, query]) => prefix + segments.join('/') + (query === null ? '' : `?${query}`))
const method = fc.constantFrom(
  'GET',
  'POST',
  'PUT',
  'DELETE',
  'PATCH',
  'HEAD',
  'OPTIONS',
  'PROPFIND',
  'CONNECT',
  'TRACE',
  'BREW'
)
const headerValue = fc.stringMatching(/^[\x21-\x7e]{1,40}$/)
const extraHeaders = fc.array(
  fc.tuple(
    fc.constantFrom(
      'Authorization',
      'VZ-M2M-Token',
      'vz-m2m-token',
      'Proxy-Authorization',
      'Connection',
      'Keep-Alive',
      'TE',
      'Upgrade',
      'Transfer-Encoding',
      'X-Request-Id',
      'Content-Type',
      'Expect',
      'Host',
      'X-Forwarded-For',
      'Cookie',
      'X-Custom'
    ),
    headerValue
  ),
  { maxLength: 8 }
)
const body = fc.oneof(fc.constant(''), fc.stringMatching(/^[\x20-\x7e]{0,300}$/), fc.json())

/** The methods @fastify/http-proxy routes (its defaults), and those of them Fastify reads a body for. */
const FORWARDED_METHODS = new Set(['DELETE', 'GET', 'HEAD', 'OPTIONS', 'PATCH', 'POST', 'PUT'])
const BODY_METHODS = new Set(['DELETE', 'OPTIONS', 'PATCH', 'POST', 'PUT'])
/** Fastify's test of a Content-Type (lib/content-type.js): `type/subtype` in token characters before any `;`. */
const MEDIA_TYPE = /^\s*[\w!#$%&'*+.^`|~-]+\/[\w!#$%&'*+.^`|~-]+\s*(;|$)/

/**
 * Whether the proxy must forward this request (as sent, with the headers that were sent): the proxy's
 * own rules (src/proxy/paths.ts) and those of the layers below it that refuse a request first.
 */
function shouldBeForwarded (verb: string, target: string, sentHeaders: Array<[string, string]>): boolean {
  if (
    !FORWARDED_METHODS.has(verb) ||
    !isForwardableTarget(target) ||
    locallyAnsweredEndpoint(target) !== undefined ||
    inReservedNamespace(target)
  ) { return false }
  // @fastify/reply-from refuses ("source/request contain invalid characters") a decoded path with `..` at either end of
  // a segment.
  const decodedPath = decodeURIComponent(target.split('?', 1)[0] ?? '')
  if (decodedPath.includes('/..') || decodedPath.includes('../')) return false
  const valuesOf = (name: string): string[] =>
    sentHeaders.filter(([header]) => header.toLowerCase() === name).map(([, value]) => value)
  // Node answers 417 to an Expect other than 100-continue (repeated ones are joined).
  const expect = valuesOf('expect')
  if (expect.length > 0 && expect.join(', ').toLowerCase() !== '100-continue') return false
  // Fastify answers 415 to a body method whose Content-Type (the first: Node drops repeats) is no media type.
  const contentType = valuesOf('content-type')[0]
  if (BODY_METHODS.has(verb) && contentType !== undefined && !MEDIA_TYPE.test(contentType)) return false
  return true
}

t.test(
  'fuzzed requests: no crash, nothing outside /api/, no client credentials forwarded, no token leaked',
  async (t) => {
    const upstream = await startRecordingUpstream(t)
    const stack = await startStack(t, {
      upstream: upstream.url,
      env: { M2M_PROXY_LOG_LEVEL: 'warn', M2M_PROXY_UPSTREAM_TIMEOUT_MS: '2000' }
    })
    let clientSecretCounter = 0
    let exchanges = 0
    let expectedForwards = 0
    let answersFromUpstream = 0
    const statuses: Record<string, number> = {}
    await fc
      .assert(
        fc.asyncProperty(method, target, extraHeaders, body, async (verb, path, headers, payload) => {
          // Unique client credentials per request, so that any forwarded copy can be found.
          const marker = `client-cred-${++clientSecretCounter}-x`
          const lines = [
            `${verb} ${path} HTTP/1.1`,
            'Host: localhost',
            `Authorization: Bearer ${marker}`,
            `VZ-M2M-Token: ${marker}`
          ]
          const sentHeaders: Array<[string, string]> = []
          for (const [name, value] of headers) {
            // would desynchronise the framing of this raw request
            if (name.toLowerCase() === 'transfer-encoding' || name.toLowerCase() === 'host') continue
            sentHeaders.push([
              name,
              name.toLowerCase().includes('auth') || name.toLowerCase().includes('token') ? marker : value
            ])
          }
          for (const [name, value] of sentHeaders) lines.push(`${name}: ${value}`)
          lines.push(`Content-Length: ${Buffer.byteLength(payload)}`, 'Connection: close', '', payload)
          const answer = await rawExchange(stack.proxy.proxyUrl, lines.join('\r\n'))
          exchanges += 1
          statuses[answer.slice(9, 12)] = (statuses[answer.slice(9, 12)] ?? 0) + 1
          // Every request gets an answer, CONNECT too (405: this is not a forward proxy), unless Node's parser
          // refuses its target first (`CONNECT *\.. HTTP/1.1`: 400 malformed HTTP request).
          if (answer === '') return false
          if (verb === 'CONNECT' && !answer.startsWith('HTTP/1.1 405 ') && !answer.includes('malformed HTTP request')) {
            return false
          }
          const head = answer.slice(0, Math.max(0, answer.indexOf('\r\n\r\n')))
          // Forwarded exactly when it should be: the upstream marks its answers.
          const fromUpstream = /\r\nx-from-upstream: 1\r\n/i.test(head + '\r\n')
          const expected = shouldBeForwarded(verb, path, sentHeaders)
          if (expected) expectedForwards += 1
          if (fromUpstream) answersFromUpstream += 1
          if (fromUpstream !== expected) return false
          // Every answer carries the request id, except those given before there is a request (Node's parser, CONNECT).
          const beforeRequest =
            answer.includes('malformed HTTP request') || answer.startsWith('HTTP/1.1 417 ') || verb === 'CONNECT'
          if (answer !== '' && !beforeRequest && !/\r\nx-request-id: /i.test(head)) return false
          if (!fromUpstream) {
            // An answer the proxy made itself must not carry a real token, and its errors have ThingSpace's shape.
            if (answer.includes(UPSTREAM_TOKEN_PREFIX)) return false
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
        }),
        { numRuns: 400, interruptAfterTimeLimit: 60_000, seed: SEED }
      )
      .catch((error: unknown) => {
        // fast-check's message has the counterexample; this says how to run the same requests again.
        throw new Error(
          `fuzzing failed with ${RERUN} (rerun: npm run build:tests && ${RERUN} npx tap .build/test/integration/fuzz.test.js): ${error instanceof Error ? error.message : String(error)}`
        )
      })
    const forwarded = upstream.recorded.length

    t.ok(exchanges >= 100, `${exchanges} fuzzed exchanges (${RERUN}), answers by status: ${JSON.stringify(statuses)}`)
    // Counted from what was generated, so that a shorter run (time limit on a slow machine) checks as strictly.
    t.ok(expectedForwards > 0, `${expectedForwards} of the generated requests should be forwarded (${RERUN})`)
    t.equal(
      answersFromUpstream,
      expectedForwards,
      `every request that should be forwarded was, and no other (${RERUN})`
    )
    t.equal(
      forwarded,
      answersFromUpstream,
      `the upstream received exactly the ${answersFromUpstream} forwarded requests (${RERUN})`
    )
    t.equal((await fetch(`${stack.proxy.adminUrl}/healthz`)).status, 200, 'the proxy is still alive')
    const probe = await stack.call('GET', '/api/m2m/v1/after-fuzzing')
    t.equal(probe.status, 200, 'and still forwards')
    t.equal(upstream.recorded.length, forwarded + 1, 'the probe reached upstream')
    for (const { url, headers } of upstream.recorded) {
      const path = url.split('?', 1)[0] ?? ''
      t.ok(path.startsWith('/api/'), `forwarded only under /api/: ${url.slice(0, 60)}`)
      t.notOk(
        /(^|\/)\.\.?(\/|$)/.test(decodeURIComponent(path.replace(/%(?![0-9a-fA-F]{2})/g, '%25'))),
        'no dot segment'
      )
      t.equal(headers.authorization, `Bearer ${UPSTREAM_OAUTH}`)
      t.equal(headers['vz-m2m-token'], UPSTREAM_SESSION)
      t.notMatch(JSON.stringify(headers), /client-cred-/, 'no client credential forwarded')
    }
  }
)
