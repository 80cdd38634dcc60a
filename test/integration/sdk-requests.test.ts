// Requests exactly as Verizon's JavaScript SDK sends them (sdks-io/verizon-apis-js-sdk 1.7.0 on
// @apimatic/core 0.10, @apimatic/axios-client-adapter 0.3 and axios 1.x), replayed over raw sockets:
// the SDK is not a dependency (it is not on the npm registry), so what it sends is recorded here
// from its source, file by file.
//
// Every call carries:
// - `Accept: application/json`: @apimatic/core http/requestBuilder.ts, callAsJson (axios keeps the
//   spelling of its own default Accept, which it replaces);
// - `user-agent: APIMATIC 3.0`: src/client.ts, withUserAgent (axios then adds no User-Agent of its own);
// - `authorization: Bearer <token>`: @apimatic/oauth-adapters oauthAuthenticationAdapter.ts, from
//   thingspaceOauthCredentials (src/authProvider.ts); `VZ-M2M-Token: <token>`:
//   @apimatic/authentication-adapters customHeaderAuthenticationAdapter.ts, from
//   vZM2mTokenCredentials. The SDK throws before sending unless both are configured
//   (compositeAuthenticationAdapter.ts), so an SDK user behind the proxy configures dummies;
// - `Accept-Encoding: gzip, compress, deflate, br`: axios lib/adapters/http.js, on every request;
//   `Content-Length` (axios, for a body), then `Host` and `Connection: keep-alive` (Node's agent).
// The order and letter case of the headers are those axios 1.21 put on the wire when driven as
// @apimatic/axios-client-adapter httpClient.ts drives it (checked once, outside this repository).

import t, { type Test } from 'tap'
import net from 'node:net'
import { fingerprint } from '../../src/session/session-manager.js'
import { PLACEHOLDER_OAUTH_TOKEN, PLACEHOLDER_SESSION_TOKEN } from '../../src/proxy/session-stubs.js'
import { DEMO_ACCOUNT_NAME } from '../../src/simulator/app.js'
import { decodeBody, sha256, startStack, ECHO_PATH, type Echo, type Stack } from '../helpers/stack.js'

const DUMMY_CLIENT_ID = 'dummy-client-id'
const DUMMY_CLIENT_SECRET = 'dummy-client-secret'
/** What the SDK got from the proxy's token stub, then sends as its bearer. */
const DUMMY_BEARER = PLACEHOLDER_OAUTH_TOKEN
const DUMMY_SESSION_TOKEN = 'dummy-vz-m2m-token'

const SDK_ACCEPT: [string, string] = ['Accept', 'application/json']
const SDK_USER_AGENT: [string, string] = ['user-agent', 'APIMATIC 3.0']
/** Added by axios lib/adapters/http.js to every request (Node has brotli, hence br). */
const SDK_ACCEPT_ENCODING = 'gzip, compress, deflate, br'
const SDK_AUTH_HEADERS: Array<[string, string]> = [
  ['authorization', `Bearer ${DUMMY_BEARER}`],
  ['VZ-M2M-Token', DUMMY_SESSION_TOKEN]
]

interface SdkRequest {
  method: string
  path: string
  /** The SDK's headers, in order; send() adds axios's and Node's. */
  headers: Array<[string, string]>
  body?: string
}

interface Answer {
  status: number
  headers: Record<string, string>
  /** Decoded according to Content-Encoding. */
  body: Buffer
  contentEncoding: string | undefined
}

/** Length of the body that starts at `start`, or -1 while incomplete; chunked bodies are de-chunked into `out`. */
function dechunk (data: Buffer, start: number, out: Buffer[]): number {
  let position = start
  for (;;) {
    const lineEnd = data.indexOf('\r\n', position)
    if (lineEnd < 0) return -1
    const size = Number.parseInt(data.subarray(position, lineEnd).toString('latin1').split(';')[0] ?? '', 16)
    if (Number.isNaN(size)) throw new Error('malformed chunk size')
    if (size === 0) {
      const end = data.indexOf('\r\n\r\n', lineEnd)
      return end < 0 ? -1 : end + 4
    }
    if (data.length < lineEnd + 2 + size + 2) return -1
    out.push(data.subarray(lineEnd + 2, lineEnd + 2 + size))
    position = lineEnd + 2 + size + 2
  }
}

/**
 * One request on a keep-alive connection, as Node's agent sends it (`Connection: keep-alive`), read
 * up to the end of its answer (Content-Length or chunked), then the connection is closed.
 */
async function send (stack: Stack, request: SdkRequest): Promise<Answer> {
  const { hostname, port } = new URL(stack.proxy.proxyUrl)
  const body = request.body === undefined ? undefined : Buffer.from(request.body, 'utf8')
  const lines = [
    `${request.method} ${request.path} HTTP/1.1`,
    ...request.headers.map(([name, value]) => `${name}: ${value}`)
  ]
  if (body !== undefined) lines.push(`Content-Length: ${body.length}`)
  // Host: the proxy's address, where the README's adapter sends the SDK's requests.
  lines.push(`Accept-Encoding: ${SDK_ACCEPT_ENCODING}`, `Host: ${hostname}:${port}`, 'Connection: keep-alive')
  // Node's ClientRequest ends a POST, PUT or PATCH sent without a body with `Content-Length: 0`.
  if (body === undefined && ['POST', 'PUT', 'PATCH'].includes(request.method)) lines.push('Content-Length: 0')
  const head = Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1')
  return await new Promise<Answer>((resolve, reject) => {
    const socket = net.connect(Number(port), hostname, () =>
      socket.write(body === undefined ? head : Buffer.concat([head, body]))
    )
    let data = Buffer.alloc(0)
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error('no whole answer within 10 s'))
    }, 10_000)
    socket.on('error', (error) => {
      clearTimeout(timer)
      reject(error)
    })
    socket.on('data', (chunk: Buffer) => {
      data = Buffer.concat([data, chunk])
      const headEnd = data.indexOf('\r\n\r\n')
      if (headEnd < 0) return
      const [statusLine = '', ...headerLines] = data.subarray(0, headEnd).toString('latin1').split('\r\n')
      const headers: Record<string, string> = {}
      for (const line of headerLines) {
        const colon = line.indexOf(':')
        headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
      }
      let raw: Buffer
      if (headers['transfer-encoding']?.toLowerCase() === 'chunked') {
        const chunks: Buffer[] = []
        if (dechunk(data, headEnd + 4, chunks) < 0) return
        raw = Buffer.concat(chunks)
      } else {
        const length = Number(headers['content-length'] ?? '0')
        if (data.length < headEnd + 4 + length) return
        raw = data.subarray(headEnd + 4, headEnd + 4 + length)
      }
      clearTimeout(timer)
      socket.destroy()
      const contentEncoding = headers['content-encoding']
      try {
        resolve({
          status: Number(statusLine.split(' ')[1]),
          headers,
          body: decodeBody(raw, contentEncoding),
          contentEncoding
        })
      } catch (error) {
        reject(error)
      }
    })
  })
}

const json = (answer: Answer): unknown => JSON.parse(answer.body.toString('utf8'))

/** No live token in an answer the proxy made or passed on. */
function noRealTokenIn (t: Test, stack: Stack, answer: Answer): void {
  const text = answer.body.toString('latin1')
  for (const token of [stack.sim.currentOAuthToken() as string, ...stack.sim.activeSessionTokens()]) {
    t.notOk(text.includes(token), 'no real token in the answer')
  }
}

/**
 * src/controllers/sessionManagementController.ts, startConnectivityManagementSession: POST
 * {Thingspace}/m2m/v1/session/login, Content-Type application/json, the LogInRequest as JSON
 * (src/models/logInRequest.ts: username, password), authenticated by the bearer only.
 */
const sdkLogin = (): SdkRequest => ({
  method: 'POST',
  path: '/api/m2m/v1/session/login',
  headers: [
    SDK_ACCEPT,
    ['Content-Type', 'application/json'],
    SDK_USER_AGENT,
    ['authorization', `Bearer ${DUMMY_BEARER}`]
  ],
  body: '{"username":"zbeeblebrox","password":"IMgr8"}'
})

/**
 * Same file, endConnectivityManagementSession: POST {Thingspace}/m2m/v1/session/logout with no body
 * and no Content-Type from the SDK; axios lib/core/dispatchRequest.js then sets
 * `Content-Type: application/x-www-form-urlencoded` on every POST, PUT and PATCH that has none.
 */
const sdkLogout = (): SdkRequest => ({
  method: 'POST',
  path: '/api/m2m/v1/session/logout',
  headers: [SDK_ACCEPT, ['Content-Type', 'application/x-www-form-urlencoded'], SDK_USER_AGENT, ...SDK_AUTH_HEADERS]
})

/**
 * src/thingspaceOauthManager.ts (fetchToken: Basic base64(id:secret)) and
 * src/controllers/oauthAuthorizationController.ts (requestTokenThingspaceOauth): POST
 * {OAuth Server}/oauth2/token, form grant_type=client_credentials (scope left out when no
 * oauthScopes are configured: @apimatic/http-query formDataEncodeObject skips undefined), no bearer;
 * @apimatic/axios-client-adapter httpClient.ts sets the form content type.
 */
const sdkTokenFetch = (): SdkRequest => ({
  method: 'POST',
  path: '/api/ts/v1/oauth2/token',
  headers: [
    SDK_ACCEPT,
    ['Content-Type', 'application/x-www-form-urlencoded'],
    SDK_USER_AGENT,
    ['Authorization', `Basic ${Buffer.from(`${DUMMY_CLIENT_ID}:${DUMMY_CLIENT_SECRET}`).toString('base64')}`]
  ],
  body: 'grant_type=client_credentials'
})

/**
 * src/controllers/deviceManagementController.ts, listDevicesInformation: POST
 * {Thingspace}/m2m/v1/devices/actions/list, Content-Type application/json, the
 * AccountDeviceListRequest (src/models/accountDeviceListRequest.ts: largestDeviceIdSeen is a bigint)
 * written by @apimatic/json-bigint (`const JSON = JSONBig()` in @apimatic/core requestBuilder.ts),
 * which writes a bigint as bare digits, beyond Number's 2^53.
 */
const sdkJsonCall = (path: string, body: string, contentType = 'application/json'): SdkRequest => ({
  method: 'POST',
  path,
  headers: [SDK_ACCEPT, ['Content-Type', contentType], SDK_USER_AGENT, ...SDK_AUTH_HEADERS],
  body
})

const BIGINT_DEVICE_LIST =
  '{"accountName":"TestAccount-1","maxNumberOfDevices":500,"largestDeviceIdSeen":9007199254740993}'

t.test("the SDK's login is answered by the proxy with the placeholder, without logging in upstream", async (t) => {
  const stack = await startStack(t)
  const answer = await send(stack, sdkLogin())
  t.equal(answer.status, 200)
  // The SDK parses it with logInResultSchema (src/models/logInResult.ts: sessionToken, optional string).
  t.same(json(answer), { sessionToken: PLACEHOLDER_SESSION_TOKEN })
  noRealTokenIn(t, stack, answer)
  t.equal(stack.sim.stats.logins, 1, "only the proxy's own start-up login")
})

t.test("the SDK's logout (form content type, empty body) is answered locally; the shared session stays", async (t) => {
  const stack = await startStack(t)
  const session = stack.sim.activeSessionTokens()
  const answer = await send(stack, sdkLogout())
  t.equal(answer.status, 200)
  t.same(json(answer), { sessionToken: PLACEHOLDER_SESSION_TOKEN }, 'src/models/logOutRequest.ts: sessionToken')
  t.equal(stack.sim.stats.logouts, 0, 'nothing logged out upstream')
  t.same(stack.sim.activeSessionTokens(), session, 'the shared session is untouched')
})

t.test("the SDK's token fetch with dummy app credentials is answered with the placeholder token", async (t) => {
  const stack = await startStack(t)
  const tokenRequests = stack.sim.stats.tokenRequests
  const answer = await send(stack, sdkTokenFetch())
  t.equal(answer.status, 200)
  // src/models/oauthToken.ts: access_token and token_type required strings, expires_in a whole number.
  const token = json(answer) as Record<string, unknown>
  t.equal(token.access_token, PLACEHOLDER_OAUTH_TOKEN)
  t.type(token.token_type, 'string')
  t.ok(Number.isInteger(token.expires_in), 'expires_in is a whole number (the SDK reads it as a bigint)')
  noRealTokenIn(t, stack, answer)
  t.equal(stack.sim.stats.tokenRequests, tokenRequests, 'no token request upstream')
})

t.test('a JSON body with a bigint beyond 2^53 reaches ThingSpace byte for byte', async (t) => {
  const stack = await startStack(t)
  const answer = await send(stack, sdkJsonCall(ECHO_PATH, BIGINT_DEVICE_LIST))
  t.equal(answer.status, 200)
  const echo = json(answer) as Echo
  t.equal(echo.bodySha256, sha256(BIGINT_DEVICE_LIST), 'same bytes: 9007199254740993 not rounded to ...992')
  t.equal(echo.bodyLength, Buffer.byteLength(BIGINT_DEVICE_LIST))
  t.equal(echo.headers['content-type'], 'application/json')
})

t.test("the SDK's dummy bearer and VZ-M2M-Token are replaced by the real ones; its other headers pass", async (t) => {
  const stack = await startStack(t)
  const answer = await send(stack, sdkJsonCall(ECHO_PATH, BIGINT_DEVICE_LIST))
  t.equal(answer.status, 200)
  const echo = json(answer) as Echo
  t.equal(
    echo.headers.authorization,
    `Bearer ${fingerprint(stack.sim.currentOAuthToken() as string)}`,
    'the real bearer'
  )
  t.not(echo.headers.authorization, `Bearer ${fingerprint(DUMMY_BEARER)}`, 'not the dummy')
  t.same([echo.headers['vz-m2m-token']], stack.sim.activeSessionTokens().map(fingerprint), 'the real session token')
  t.not(echo.headers['vz-m2m-token'], fingerprint(DUMMY_SESSION_TOKEN), 'not the dummy')
  t.equal(echo.headers['user-agent'], 'APIMATIC 3.0')
  t.equal(echo.headers.accept, 'application/json')
  t.equal(echo.headers['accept-encoding'], SDK_ACCEPT_ENCODING, 'ThingSpace sees what the SDK accepts')
  noRealTokenIn(t, stack, answer)
})

// src/controllers/diagnosticsHistoryController.ts (getDiagnosticsHistory) and
// devicesLocationsController.ts (listDevicesLocationsAsynchronous) send their JSON with `Content-Type: */*`.
t.test("a JSON body sent with the SDK's Content-Type */* is forwarded as it is", async (t) => {
  const stack = await startStack(t)
  const body = '{"accountName":"TestAccount-1","deviceIds":[{"id":"900000000000001","kind":"IMEI"}]}'
  const answer = await send(stack, sdkJsonCall(ECHO_PATH, body, '*/*'))
  t.equal(answer.status, 200)
  const echo = json(answer) as Echo
  t.equal(echo.bodySha256, sha256(body))
  t.equal(echo.headers['content-type'], '*/*')
})

t.test(
  "the SDK's device list body across a session expiry and an OAuth expiry: renewed, replayed byte for byte",
  async (t) => {
    const stack = await startStack(t)
    const call = sdkJsonCall(ECHO_PATH, BIGINT_DEVICE_LIST)
    t.equal((await send(stack, call)).status, 200)
    const loginsBefore = stack.sim.stats.logins
    stack.sim.expireSessions()
    // ThingSpace's refusal of the expired session may come compressed (the SDK accepts gzip, deflate
    // and br): the proxy must still read it as a refusal, renew and replay.
    const afterSessionExpiry = await send(stack, call)
    t.equal(afterSessionExpiry.status, 200, 'answered after the session expiry')
    t.equal(
      (json(afterSessionExpiry) as Echo).bodySha256,
      sha256(BIGINT_DEVICE_LIST),
      'the replay carries the same bytes'
    )
    t.equal(stack.sim.stats.logins - loginsBefore, 1, 'one login')
    const tokensBefore = stack.sim.stats.oauthTokensIssued
    stack.sim.expireOAuthToken()
    const afterOAuthExpiry = await send(stack, call)
    t.equal(afterOAuthExpiry.status, 200, 'answered after the OAuth expiry')
    t.equal((json(afterOAuthExpiry) as Echo).bodySha256, sha256(BIGINT_DEVICE_LIST))
    t.equal(stack.sim.stats.oauthTokensIssued - tokensBefore, 1, 'one new OAuth token')
    t.comment(`Content-Encoding of the echo: ${afterOAuthExpiry.contentEncoding ?? 'none'}`)
  }
)

/**
 * Two other API families, as the SDK calls them:
 * - src/controllers/devicesLocationsController.ts, listDevicesLocationsSynchronous: POST
 *   {Device Location}/locations (/api/loc/v1), Content-Type application/json, a LocationRequest
 *   (src/models/locationRequest.ts, deviceInfo.ts: accountName, deviceList of id, kind, mdn);
 * - src/controllers/diagnosticsSubscriptionsController.ts, getDiagnosticsSubscription: GET
 *   {Device Diagnostics}/subscriptions?accountName=... (/api/diagnostics/v1), no body, so neither
 *   Content-Type (axios sets it only on POST, PUT, PATCH) nor Content-Length.
 */
function otherFamilyCalls (accountName: string): SdkRequest[] {
  return [
    sdkJsonCall(
      '/api/loc/v1/locations',
      JSON.stringify({ accountName, deviceList: [{ id: '990013907835573', kind: 'imei', mdn: '7892345678' }] })
    ),
    {
      method: 'GET',
      path: `/api/diagnostics/v1/subscriptions?accountName=${encodeURIComponent(accountName)}`,
      headers: [SDK_ACCEPT, SDK_USER_AGENT, ...SDK_AUTH_HEADERS]
    }
  ]
}

t.test('Device Location and Device Diagnostics calls as the SDK sends them, across a session expiry', async (t) => {
  const stack = await startStack(t)
  const calls = otherFamilyCalls(DEMO_ACCOUNT_NAME)
  const before = await Promise.all(calls.map(async (call) => await send(stack, call)))
  for (const [index, answer] of before.entries()) {
    t.equal(answer.status, 200, calls[index]?.path ?? '')
    noRealTokenIn(t, stack, answer)
  }
  const loginsBefore = stack.sim.stats.logins
  stack.sim.expireSessions()
  const after = await Promise.all(calls.map(async (call) => await send(stack, call)))
  for (const [index, answer] of after.entries()) {
    t.equal(answer.status, 200, `${calls[index]?.path ?? ''} after the expiry`)
    t.same(json(answer), json(before[index] as Answer), 'the same answer as before the expiry')
  }
  t.equal(stack.sim.stats.logins - loginsBefore, 1, 'one login for both')
  const tokensBefore = stack.sim.stats.oauthTokensIssued
  stack.sim.expireOAuthToken()
  const afterOAuth = await Promise.all(calls.map(async (call) => await send(stack, call)))
  t.same(
    afterOAuth.map((answer) => answer.status),
    [200, 200],
    'both answered after an OAuth expiry'
  )
  t.equal(stack.sim.stats.oauthTokensIssued - tokensBefore, 1, 'one new OAuth token')
})
