// Every ThingSpace API family on the upstream host, over real sockets: both tokens attached, an expired
// session or bearer renewed and the request replayed once, in each family; M2M_PROXY_FORWARD_PREFIXES
// narrowing what is forwarded. The upstream is a small one of its own, which checks the tokens as
// ThingSpace does and answers refusals in the shapes documented for each family.

import t, { type Test } from 'tap'
import http from 'node:http'
import { startStack, type Stack } from '../helpers/stack.js'
import { rawExchange } from '../helpers/raw-http.js'
import { startStandInUpstream } from '../helpers/stand-in-upstream.js'
import { PLACEHOLDER_OAUTH_TOKEN } from '../../src/proxy/session-stubs.js'

/** One call of each family (the SDK's base path, then one of its paths), with its method. */
const FAMILY_CALLS: Array<[family: string, method: string, target: string]> = [
  ['Connectivity Management', 'POST', '/api/m2m/v1/devices/actions/list'],
  ['Thingspace /m2m/v2', 'POST', '/api/m2m/v2/devices/history/actions/list'],
  ['Thingspace /v1/accounts', 'GET', '/api/v1/accounts/0000123456-00001/subscriptions'],
  ['Thingspace /v1/plans', 'GET', '/api/v1/plans/0000123456-00001'],
  ['Thingspace /v1/devices', 'POST', '/api/v1/devices/actions/list'],
  ['Thingspace /actions', 'POST', '/api/actions/activate'],
  ['Device Location', 'POST', '/api/loc/v1/locations'],
  ['Subscription Server', 'GET', '/api/subsc/v1/subscriptions/0000123456-00001'],
  ['Software Management V1', 'GET', '/api/fota/v1/upgrades/0000123456-00001?startIndex=0'],
  ['Software Management V2', 'POST', '/api/fota/v2/campaigns/0000123456-00001'],
  ['Software Management V3', 'PUT', '/api/fota/v3/firmware/0000123456-00001/async/990003425730535'],
  ['Device Diagnostics', 'GET', '/api/diagnostics/v1/devices/attributes?accountName=0000123456-00001&deviceId=1'],
  ['Cloud Connector', 'POST', '/api/cc/v1/devices/actions/query'],
  ['Hyper Precise Location', 'GET', '/api/hyper-precise/v1/subscriptions?accountName=0000123456-00001'],
  ['OAuth Server, not the token endpoint', 'GET', '/api/ts/v1/other']
]

const SESSION_EXPIRED = {
  status: 400,
  body: { errorCode: 'UnifiedWebService.REQUEST_FAILED.SessionToken.Expired', errorMessage: 'Session token expired' }
}
const BEARER_REFUSED = {
  status: 401,
  body: {
    fault: {
      code: '900901',
      message: 'Invalid Credentials',
      description: 'Access failure for API. Make sure your have given the correct access token'
    }
  }
}

interface Refusal {
  status: number
  body: unknown
}
interface Received {
  method: string
  url: string
  authorization: string | undefined
  session: string | undefined
  body: string
}

interface FamilyUpstream {
  url: string
  received: Received[]
  logins: () => number
  tokenFetches: () => number
  /** ThingSpace forgets every session (or bearer) issued so far. */
  expireSessions: () => void
  expireBearers: () => void
  /** How a refused session is answered (ThingSpace's session code by default). */
  sessionRefusal: Refusal
}

/** Issues tokens, checks both on every other call (bearer first, as the gateway does), echoes what it got. */
async function startFamilyUpstream (t: Test): Promise<FamilyUpstream> {
  // Tokens issued before these positions were forgotten by ThingSpace.
  let firstValidSession = 0
  let firstValidBearer = 0
  const answer = (response: http.ServerResponse, status: number, body: unknown): void => {
    response.statusCode = status
    response.setHeader('content-type', 'application/json')
    response.end(JSON.stringify(body))
  }
  const standIn = await startStandInUpstream(t, (request, body, response) => {
    const authorization = request.headers.authorization
    const session = request.headers['vz-m2m-token'] as string | undefined
    upstream.received.push({
      method: request.method ?? '',
      url: request.url ?? '',
      authorization,
      session,
      body: body.toString('utf8')
    })
    if (standIn.oauthTokens.indexOf((authorization ?? '').replace(/^Bearer /, '')) < firstValidBearer) {
      answer(response, BEARER_REFUSED.status, BEARER_REFUSED.body)
    } else if (session === undefined || standIn.sessionTokens.indexOf(session) < firstValidSession) {
      answer(response, upstream.sessionRefusal.status, upstream.sessionRefusal.body)
    } else {
      answer(response, 200, { served: request.url })
    }
  })
  const upstream: FamilyUpstream = {
    url: standIn.url,
    received: [],
    logins: () => standIn.sessionTokens.length,
    tokenFetches: () => standIn.oauthTokens.length,
    expireSessions: () => {
      firstValidSession = standIn.sessionTokens.length
    },
    expireBearers: () => {
      firstValidBearer = standIn.oauthTokens.length
    },
    sessionRefusal: SESSION_EXPIRED
  }
  return upstream
}

/**
 * A hand-moved clock: a session refused right after the login that replaced a refused one is held 15 s, so each
 * family's expiry happens later.
 */
function handClock (): { now: () => number; advance: (ms: number) => void } {
  let now = Date.now()
  return {
    now: () => now,
    advance: (ms) => {
      now += ms
    }
  }
}

async function familyStack (
  t: Test,
  env: Record<string, string> = {}
): Promise<{ stack: Stack; upstream: FamilyUpstream; clock: ReturnType<typeof handClock> }> {
  const upstream = await startFamilyUpstream(t)
  const clock = handClock()
  const stack = await startStack(t, { upstream: upstream.url, clock, env: { M2M_PROXY_LOG_LEVEL: 'warn', ...env } })
  return { stack, upstream, clock }
}

function call (stack: Stack, method: string, target: string): ReturnType<Stack['call']> {
  const body = method === 'GET' ? undefined : '{"accountName":"0000123456-00001"}'
  return stack.call(method, target, {
    headers: {
      authorization: 'Bearer client-own-bearer',
      'vz-m2m-token': 'client-own-session',
      ...(body === undefined ? {} : { 'content-type': 'application/json' })
    },
    body
  })
}

t.test("every API family is forwarded, with both tokens in place of the client's", async (t) => {
  const { stack, upstream } = await familyStack(t)
  for (const [family, method, target] of FAMILY_CALLS) {
    const before = upstream.received.length
    const response = await call(stack, method, target)
    t.equal(response.status, 200, `${family}: ${method} ${target}`)
    t.same(response.json(), { served: target }, `${family}: the upstream's answer`)
    const received = upstream.received.slice(before)
    t.equal(received.length, 1, `${family}: sent once`)
    t.match(
      received[0],
      { method, url: target, authorization: 'Bearer oauth-1', session: 'session-1' },
      `${family}: path, query and both tokens`
    )
    if (method !== 'GET') t.equal(received[0]?.body, '{"accountName":"0000123456-00001"}', `${family}: the body`)
  }
  t.equal(upstream.logins(), 1, 'one login for all of them')
  t.equal(upstream.tokenFetches(), 1, 'one OAuth token for all of them')
})

t.test(
  'an expired session (400 SessionToken.Expired) is renewed and the request replayed once, in every family',
  async (t) => {
    const { stack, upstream, clock } = await familyStack(t)
    for (const [index, [family, method, target]] of FAMILY_CALLS.entries()) {
      clock.advance(20_000)
      upstream.expireSessions()
      const before = upstream.received.length
      const response = await call(stack, method, target)
      t.equal(response.status, 200, `${family}: answered after the replay`)
      const sent = upstream.received.slice(before)
      t.same(
        sent.map((request) => [request.url, request.session]),
        [
          [target, `session-${index + 1}`],
          [target, `session-${index + 2}`]
        ],
        `${family}: refused once, replayed once with the new session`
      )
      t.equal(upstream.logins(), index + 2, `${family}: one login`)
    }
    t.equal(upstream.tokenFetches(), 1, 'the bearer was never renewed')
  }
)

t.test(
  'an expired bearer (401 gateway fault 900901) is renewed and the request replayed once, in every family',
  async (t) => {
    const { stack, upstream } = await familyStack(t)
    for (const [index, [family, method, target]] of FAMILY_CALLS.entries()) {
      upstream.expireBearers()
      const before = upstream.received.length
      const response = await call(stack, method, target)
      t.equal(response.status, 200, `${family}: answered after the replay`)
      const sent = upstream.received.slice(before)
      t.same(
        sent.map((request) => [request.url, request.authorization]),
        [
          [target, `Bearer oauth-${index + 1}`],
          [target, `Bearer oauth-${index + 2}`]
        ],
        `${family}: refused once, replayed once with the new bearer`
      )
      t.equal(upstream.tokenFetches(), index + 2, `${family}: one OAuth token fetch`)
    }
    t.equal(upstream.logins(), 1, 'the session was never renewed')
  }
)

t.test(
  "Device Location's and Cloud Connector's own expired-session answers are renewed and replayed too",
  async (t) => {
    const { stack, upstream, clock } = await familyStack(t)
    const refusals: Array<[string, string, Refusal]> = [
      [
        'Device Location',
        '/api/loc/v1/locations',
        {
          status: 400,
          body: { errorCode: 'INVALID_PARAMETER', errorMessage: 'UWS verification failure (The Session has expired.)' }
        }
      ],
      [
        'Subscription Server',
        '/api/subsc/v1/subscriptions/0000123456-00001',
        {
          status: 400,
          body: { errorCode: 'INVALID_PARAMETER', errorMessage: 'UWS verification failure (The Session has expired.)' }
        }
      ],
      [
        'Cloud Connector',
        '/api/cc/v1/devices/actions/query',
        {
          status: 401,
          body: {
            error: 'unauthorized',
            error_description: 'Failure response received for UWS V1 REST accounts: [400]',
            cause: 'Requested service is unauthorized for given token'
          }
        }
      ]
    ]
    for (const [index, [family, target, refusal]] of refusals.entries()) {
      clock.advance(20_000)
      upstream.sessionRefusal = refusal
      upstream.expireSessions()
      const before = upstream.received.length
      const response = await call(stack, 'POST', target)
      t.equal(response.status, 200, `${family}: answered after the replay`)
      t.equal(upstream.received.length - before, 2, `${family}: refused once, replayed once`)
      t.equal(upstream.logins(), index + 2, `${family}: one login`)
    }
  }
)

t.test('an error answer that names no token is passed on, not replayed', async (t) => {
  const { stack, upstream } = await familyStack(t)
  upstream.sessionRefusal = {
    status: 400,
    body: {
      errorCode: 'INVALID_PARAMETER',
      errorMessage: 'UWS verification failure (Could not find account 0000123456-00001)'
    }
  }
  upstream.expireSessions()
  const response = await call(stack, 'POST', '/api/loc/v1/locations')
  t.equal(response.status, 400)
  t.match(response.json(), { errorCode: 'INVALID_PARAMETER' })
  t.equal(upstream.received.length, 1, 'sent once')
  t.equal(upstream.logins(), 1, 'no login spent on it')
})

t.test(
  'M2M_PROXY_FORWARD_PREFIXES narrows what is forwarded: other families get 404 and never reach the upstream',
  async (t) => {
    const { stack, upstream } = await familyStack(t, { M2M_PROXY_FORWARD_PREFIXES: '/api/m2m,/api/loc/v1' })
    for (const target of [
      '/api/m2m/v1/devices/actions/list',
      '/api/loc/v1/locations',
      '/api/loc/v1',
      '/api/loc/v1?x=1'
    ]) {
      t.equal((await call(stack, 'POST', target)).status, 200, `${target}: forwarded`)
    }
    const forwarded = upstream.received.length
    t.equal(forwarded, 4)
    for (const target of [
      '/api/fota/v3/campaigns',
      '/api/loc/v2/locations',
      '/api/location-secret',
      '/api/loc/v1x',
      '/api/cc/v1/devices/actions/query',
      '/api/ts/v1/other',
      '/api/',
      '/api/loc/v1/../../fota/v3/campaigns'
    ]) {
      const answer = await rawExchange(
        stack.proxy.proxyUrl,
        [`GET ${target} HTTP/1.1`, 'Host: localhost', 'Connection: close', '', ''].join('\r\n')
      )
      t.match(answer, /^HTTP\/1\.1 404 /, `${target}: 404`)
      const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as {
        errorCode: string
        errorMessage: string
      }
      // A dot segment says so (issue 17, item 6) rather than naming the prefixes.
      t.equal(
        body.errorCode,
        target.includes('..') ? 'Proxy.NotFound.EncodedTraversal' : 'Proxy.NotFound',
        `${target}: the proxy's answer`
      )
      if (target !== '/api/loc/v1/../../fota/v3/campaigns') {
        t.equal(
          body.errorMessage,
          'not proxied: only paths under /api/m2m/, /api/loc/v1/ are forwarded',
          `${target}: naming the prefixes`
        )
      }
    }
    t.equal(upstream.received.length, forwarded, 'none of them reached the upstream')
    // The proxy's own endpoints stay local in every spelling, whatever the prefixes.
    for (const target of ['/api/ts/v1/oauth2/token', '/api/ts/v1/oauth2/token/', '/api/ts/v1/OAuth2/Token']) {
      const token = await stack.call('POST', target)
      t.equal(token.status, 200, `${target}: answered locally`)
      t.equal((token.json() as { access_token: string }).access_token, PLACEHOLDER_OAUTH_TOKEN)
    }
    t.equal(upstream.tokenFetches(), 1, "only the proxy's own token fetch reached the upstream")
  }
)
