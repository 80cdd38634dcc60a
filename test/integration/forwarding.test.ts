// Forwarding over real sockets: token injection, replay across session and OAuth expiry, stubs, pass-through.

import t from 'tap'
import { createHash } from 'node:crypto'
import http from 'node:http'
import { startStack, ECHO_PATH } from '../helpers/stack.js'
import { rawExchange } from '../helpers/raw-http.js'

interface Echo {
  method: string
  url: string
  headers: Record<string, string>
  bodyLength: number
  bodySha256: string
}

const sha256 = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex')

t.test('both tokens are injected and client values replaced', async (t) => {
  const stack = await startStack(t)
  const response = await stack.call('POST', `${ECHO_PATH}?a=1&b=%20x`, {
    headers: { authorization: 'Bearer client-supplied', 'vz-m2m-token': 'client-session', 'content-type': 'application/json', 'x-custom': 'kept' },
    body: '{"hello":"world"}'
  })
  t.equal(response.status, 200)
  const echo = response.json() as Echo
  t.equal(echo.headers.authorization, `Bearer ${stack.sim.currentOAuthToken()}`)
  t.same(stack.sim.activeSessionTokens(), [echo.headers['vz-m2m-token']])
  t.equal(echo.headers['x-custom'], 'kept')
  t.equal(echo.url, `${ECHO_PATH}?a=1&b=%20x`, 'path and query forwarded as received')
  t.equal(echo.bodySha256, sha256('{"hello":"world"}'), 'body forwarded byte for byte')
  t.equal(stack.sim.stats.logins, 1, 'the start-up login is reused')
})

t.test('an empty body is forwarded empty, whatever its content type', async (t) => {
  const stack = await startStack(t)
  for (const contentType of ['application/json', 'text/plain', 'application/octet-stream']) {
    for (const method of ['POST', 'PUT']) {
      const response = await stack.call(method, ECHO_PATH, { headers: { 'content-type': contentType, 'content-length': '0' }, body: '' })
      t.equal(response.status, 200, `${method} ${contentType}`)
      const echo = response.json() as Echo
      t.equal(echo.bodyLength, 0, `${method} ${contentType}: no body upstream`)
      t.equal(echo.headers['content-length'], '0', `${method} ${contentType}: length 0`)
      t.equal(echo.headers['content-type'], contentType, `${method} ${contentType}: type kept`)
    }
  }
})

t.test('bodies of any content type, JSON with or without parameters included, are forwarded byte for byte', async (t) => {
  const stack = await startStack(t)
  const body = '{ "kept" : "as sent",\n "number": 1.50 }'
  for (const contentType of ['application/json', 'application/json; charset=utf-8', 'Application/JSON', 'text/plain', 'application/x-custom']) {
    const response = await stack.call('POST', ECHO_PATH, { headers: { 'content-type': contentType }, body })
    t.equal(response.status, 200, contentType)
    const echo = response.json() as Echo
    t.equal(echo.bodySha256, sha256(body), `${contentType}: same bytes`)
    t.equal(echo.headers['content-type'], contentType, `${contentType}: type kept`)
  }
})

t.test('a client naming the auth headers in Connection cannot strip the injected tokens', async (t) => {
  const stack = await startStack(t)
  const url = new URL(stack.proxy.proxyUrl + ECHO_PATH)
  const body = await new Promise<string>((resolve, reject) => {
    const req = http.request({
      host: url.hostname,
      port: url.port,
      path: url.pathname,
      method: 'GET',
      headers: { connection: 'keep-alive, Authorization, VZ-M2M-Token', authorization: 'Bearer x', 'vz-m2m-token': 'y' }
    }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { text += chunk })
      res.on('end', () => resolve(text))
    })
    req.on('error', reject)
    req.end()
  })
  const echo = JSON.parse(body) as Echo
  t.equal(echo.headers.authorization, `Bearer ${stack.sim.currentOAuthToken()}`)
  t.equal(echo.headers['vz-m2m-token'], stack.sim.activeSessionTokens()[0])
})

async function concurrentEchoes (stack: Awaited<ReturnType<typeof startStack>>, count: number): Promise<number> {
  const results = await Promise.all(Array.from({ length: count }, async (_, index) => {
    const body = JSON.stringify({ request: index, padding: 'x'.repeat(index % 97) })
    const response = await stack.call('POST', `${ECHO_PATH}?n=${index}`, { headers: { 'content-type': 'application/json' }, body })
    if (response.status !== 200) return false
    const echo = response.json() as Echo
    return echo.bodySha256 === sha256(body) && echo.url === `${ECHO_PATH}?n=${index}`
  }))
  return results.filter(Boolean).length
}

t.test('300 concurrent requests across a session expiry: one login, every request succeeds with its own body', async (t) => {
  const stack = await startStack(t)
  t.equal(await concurrentEchoes(stack, 5), 5)
  const loginsBefore = stack.sim.stats.logins
  stack.sim.expireSessions()
  t.equal(await concurrentEchoes(stack, 300), 300, 'all 300 answered 200 with their own body')
  t.equal(stack.sim.stats.logins - loginsBefore, 1, 'exactly one login')
  const replayed = stack.logs.entries().filter((entry) => entry.msg === 'request' && entry.replayed === true)
  t.ok(replayed.length > 0 && replayed.length <= 300, `requests were replayed (${replayed.length})`)
})

t.test('300 concurrent requests across an OAuth expiry: one token fetch, every request succeeds', async (t) => {
  const stack = await startStack(t)
  t.equal(await concurrentEchoes(stack, 5), 5)
  const issuedBefore = stack.sim.stats.oauthTokensIssued
  const loginsBefore = stack.sim.stats.logins
  stack.sim.expireOAuthToken()
  t.equal(await concurrentEchoes(stack, 300), 300)
  t.equal(stack.sim.stats.oauthTokensIssued - issuedBefore, 1, 'exactly one new OAuth token')
  t.equal(stack.sim.stats.logins, loginsBefore, 'the session survived')
})

t.test('after idle expiry the proxy logs in before sending, without spending a request on the dead token', async (t) => {
  let now = Date.now()
  const clock = { now: () => now }
  const stack = await startStack(t, { clock, simulator: { now: clock.now } })
  t.equal((await stack.call('GET', ECHO_PATH)).status, 200)
  const dataBefore = stack.sim.stats.dataRequests
  now += 21 * 60_000 // past ThingSpace's 20 minutes of inactivity
  const response = await stack.call('GET', ECHO_PATH)
  t.equal(response.status, 200)
  t.equal(stack.sim.stats.logins, 2, 'logged in again')
  t.equal(stack.sim.stats.dataRequests - dataBefore, 1, 'one upstream data request: no failed attempt first')
  const last = stack.logs.entries().filter((entry) => entry.msg === 'request').at(-1)
  t.equal(last?.replayed, false)
})

t.test('a session kept in use does not expire', async (t) => {
  let now = Date.now()
  const clock = { now: () => now }
  const stack = await startStack(t, { clock, simulator: { now: clock.now } })
  for (let minute = 0; minute < 60; minute += 10) {
    now += 10 * 60_000
    t.equal((await stack.call('GET', ECHO_PATH)).status, 200)
  }
  t.equal(stack.sim.stats.logins, 1, 'one login over an hour of regular use')
})

t.test('legacy session-controller calls are answered by the proxy', async (t) => {
  const stack = await startStack(t)
  const realToken = stack.sim.activeSessionTokens()[0]
  const login = await stack.call('POST', '/api/m2m/v1/session/login', { headers: { 'content-type': 'application/json' }, body: '{"username":"u","password":"p"}' })
  t.equal(login.status, 200)
  const token = (login.json() as { sessionToken: string }).sessionToken
  t.type(token, 'string')
  t.not(token, realToken, 'a placeholder, never the real token')
  t.notMatch(login.text, realToken ?? 'missing')
  const logout = await stack.call('POST', '/api/m2m/v1/session/logout', { headers: { 'vz-m2m-token': token } })
  t.equal(logout.status, 200)
  t.same(Object.keys(logout.json() as object), ['sessionToken'])
  t.equal((await stack.call('GET', ECHO_PATH)).status, 200, 'shared session untouched')
  t.equal(stack.sim.stats.logouts, 0)
  t.equal(stack.sim.stats.logins, 1)
  const reset = await stack.call('PUT', '/api/m2m/v1/session/password/actions/reset', { headers: { 'content-type': 'application/json' }, body: '{"oldPassword":"x"}' })
  t.equal(reset.status, 403)
  t.equal((reset.json() as { errorCode: string }).errorCode, 'Proxy.Forbidden')
  t.equal(stack.sim.stats.passwordResets, 0)
})

t.test('upstream errors pass through untouched; other paths are not proxied', async (t) => {
  const stack = await startStack(t)
  const missing = await stack.call('GET', '/api/m2m/v1/no-such-endpoint')
  t.equal(missing.status, 404)
  t.match((missing.json() as { errorCode: string }).errorCode, /^UnifiedWebService\./, 'the simulator\'s own error')
  for (const target of ['/', '/api/ts/v1/other', '/api/m2m', '/admin/session', '/healthz']) {
    const response = await stack.call('GET', target)
    t.equal(response.status, 404, target)
    t.equal((response.json() as { errorCode: string }).errorCode, 'Proxy.NotFound', target)
  }
  const account = await stack.call('GET', '/api/m2m/v1/accounts/TestAccount-1')
  t.equal(account.status, 200)
  t.equal((account.json() as { accountName: string }).accountName, 'TestAccount-1')
})

function echoOf (answer: string): Echo {
  return JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as Echo
}

t.test('hop-by-hop headers stay on their hop, in both directions (RFC 9110)', async (t) => {
  const stack = await startStack(t)
  const send = (lines: string[], body = ''): Promise<string> =>
    rawExchange(stack.proxy.proxyUrl, [...lines, 'Host: proxy.local', 'Connection: close, X-Private', '', body].join('\r\n'))

  const plain = await send([`GET ${ECHO_PATH} HTTP/1.1`, 'Keep-Alive: timeout=5', 'TE: trailers', 'Upgrade: h2c', 'Proxy-Connection: keep-alive', 'X-Private: named-in-connection'])
  t.match(plain, /^HTTP\/1\.1 200 /)
  t.match(plain, /\r\nConnection: close\r\n/i, 'the client\'s Connection: close is honoured (the upstream\'s keep-alive is not copied)')
  t.notMatch(plain.slice(0, plain.indexOf('\r\n\r\n')), /keep-alive: timeout/i, 'no upstream Keep-Alive header')
  const forwarded = echoOf(plain).headers
  for (const name of ['keep-alive', 'te', 'upgrade', 'proxy-connection', 'x-private']) {
    t.equal(forwarded[name], undefined, `${name} not forwarded`)
  }

  const chunked = await send([`POST ${ECHO_PATH} HTTP/1.1`, 'Transfer-Encoding: chunked', 'Content-Type: text/plain', 'Expect: 100-continue'], '5\r\nhello\r\n0\r\n\r\n')
  t.match(chunked, /HTTP\/1\.1 200 /)
  const echo = echoOf(chunked.slice(chunked.lastIndexOf('HTTP/1.1 200')))
  t.equal(echo.bodySha256, sha256('hello'), 'a chunked body is forwarded whole')
  t.equal(echo.headers['transfer-encoding'], undefined)
  t.equal(echo.headers.expect, undefined)
  t.equal(echo.headers['content-length'], '5')

  const getWithBody = await send([`GET ${ECHO_PATH} HTTP/1.1`, 'Content-Length: 5'], 'hello')
  t.match(getWithBody, /^HTTP\/1\.1 200 /, 'a GET body is dropped, not announced upstream with a length it lacks')
  t.equal(echoOf(getWithBody).headers['content-length'], undefined)
})

t.test('OAuth token and session expired together: renewed one after the other, the client never sees it', async (t) => {
  const stack = await startStack(t)
  stack.sim.expireOAuthToken()
  stack.sim.expireSessions()
  const answers = await Promise.all(Array.from({ length: 20 }, () => stack.call('GET', ECHO_PATH)))
  t.ok(answers.every((answer) => answer.status === 200), 'all 20 answered 200')
  t.equal(stack.sim.stats.logins, 2, 'one new session')
  t.equal(stack.sim.stats.oauthTokensIssued, 2, 'one new OAuth token')
})

t.test('a request is never replayed twice for the same cause', async (t) => {
  const http = await import('node:http')
  let dataCalls = 0
  let logins = 0
  const server = http.createServer((request, response) => {
    request.resume()
    response.setHeader('content-type', 'application/json')
    if (request.url === '/api/ts/v1/oauth2/token') return response.end('{"access_token":"a","token_type":"bearer","expires_in":3600}')
    if (request.url === '/api/m2m/v1/session/login') {
      logins += 1
      return response.end(`{"sessionToken":"s${logins}"}`)
    }
    dataCalls += 1
    response.statusCode = 400
    response.end('{"errorCode":"UnifiedWebService.REQUEST_FAILED.SessionToken.Expired","errorMessage":"always"}')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const { port } = server.address() as { port: number }
  const stack = await startStack(t, { upstream: `http://127.0.0.1:${port}` })
  const answer = await stack.call('GET', '/api/m2m/v1/accounts/x')
  t.equal(answer.status, 400, 'the second refusal reaches the client untouched')
  t.match(answer.json(), { errorCode: 'UnifiedWebService.REQUEST_FAILED.SessionToken.Expired' })
  t.equal(dataCalls, 2, 'sent once, replayed once')
  t.equal(logins, 2, 'one login for the replay')
})
