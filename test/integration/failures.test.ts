// What clients see when things go wrong: lockout guard, body limit, unreachable or slow upstream, traversal, untrusted
// TLS.

import t from 'tap'
import net from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { startStack, ECHO_PATH } from '../helpers/stack.js'
import { DEMO_CREDENTIALS } from '../../src/simulator/app.js'
import { rawExchange } from '../helpers/raw-http.js'
import { startStandInUpstream } from '../helpers/stand-in-upstream.js'

interface ErrorBody {
  errorCode: string
  errorMessage: string
}

t.test(
  'wrong password: at most M2M_PROXY_MAX_LOGIN_FAILURES attempts over many requests and a restart, account never locked',
  async (t) => {
    const first = await startStack(t, { credentials: { password: 'wrong-password' } })
    t.equal(first.sim.stats.failedLogins, 1, 'the start-up login shows the bad credentials at once')
    const answers = await Promise.all(Array.from({ length: 50 }, () => first.call('GET', ECHO_PATH)))
    // Answered at once, within the 1 s backoff after the rejection, not held: had they waited for it, a second login
    // would have been sent for them. (A bound on the wall time failed on a busy machine.)
    t.equal(first.sim.stats.failedLogins, 1, 'answered without waiting for another login')
    for (const answer of answers) {
      t.equal(answer.status, 503)
      t.match(answer.headers['retry-after'], /^\d+$/)
      t.match((answer.json() as ErrorBody).errorCode, /^Proxy\.AuthenticationUnavailable/)
    }
    t.equal(first.sim.stats.dataRequests, 0, 'no request forwarded without a session')
    await sleep(1100) // past the backoff after the first rejection
    for (let i = 0; i < 20; i++) await first.call('GET', ECHO_PATH)
    await sleep(2100)
    const last = await first.call('GET', ECHO_PATH)
    t.equal((last.json() as ErrorBody).errorCode, 'Proxy.AuthenticationUnavailable.CredentialsRejected')
    t.match((last.json() as ErrorBody).errorMessage, /rejected/)
    t.equal(first.sim.stats.failedLogins, 2, 'two rejected logins, then the guard holds')
    await first.stopProxy()

    // A restart (crash loop) with the same credentials does not try again.
    const second = await startStack(t, { dir: first.dir, upstream: first.simUrl })
    for (let i = 0; i < 10; i++) t.equal((await second.call('GET', ECHO_PATH)).status, 503)
    t.equal(first.sim.stats.failedLogins, 2, 'still two after the restart')
    t.equal(first.sim.locked, false, 'ThingSpace never locked the account')
    t.equal(first.sim.stats.consecutiveFailedLogins, 2)
  }
)

t.test('a password with a trailing space: sent as written, and a warning names the field, never the value', async (t) => {
  const password = `${DEMO_CREDENTIALS.password} `
  const stack = await startStack(t, { credentials: { password } })
  await stack.proxy.initialLogin
  const warnings = stack.logs.entries().filter((entry) => /begins or ends with white space/.test(String(entry.msg)))
  t.equal(warnings.length, 1)
  t.match(warnings[0], { level: 40, msg: /^password in .*credentials\.json begins or ends with white space/ })
  t.equal(stack.sim.stats.failedLogins, 1, 'sent as written: ThingSpace refused it')
  t.notOk(JSON.stringify(stack.logs.entries()).includes(DEMO_CREDENTIALS.password), 'never quoted')
})

t.test('login endpoint down: backoff bounds the attempts, the guard stays released', async (t) => {
  const stack = await startStack(t, { waitForLogin: false })
  await stack.proxy.initialLogin
  stack.sim.failNextLogins(100, 'status500')
  await stack.proxy.app.session.endSession()
  const loginsTried = (): number =>
    stack.logs.entries().filter((entry) => typeof entry.msg === 'string' && entry.msg.startsWith('login failed')).length
  const answers = await Promise.all(Array.from({ length: 40 }, () => stack.call('GET', ECHO_PATH)))
  t.ok(
    answers.every((answer) => answer.status === 503),
    'all 503'
  )
  t.equal(loginsTried(), 1, 'one attempt for 40 requests')
  t.equal(stack.proxy.app.session.guardEngaged, false, 'a 500 is not a rejected credential')
  t.equal(stack.sim.stats.failedLogins, 0)
})

t.test('request body over the limit gets 413 and never reaches upstream', async (t) => {
  const stack = await startStack(t, { env: { M2M_PROXY_BODY_LIMIT_BYTES: '1024' } })
  const before = stack.sim.stats.dataRequests
  const big = await stack.call('POST', ECHO_PATH, {
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ pad: 'x'.repeat(2000) })
  })
  t.equal(big.status, 413)
  t.equal((big.json() as ErrorBody).errorCode, 'Proxy.BodyTooLarge')
  t.equal(stack.sim.stats.dataRequests, before)
  const small = await stack.call('POST', ECHO_PATH, {
    headers: { 'content-type': 'application/json' },
    body: '{"ok":true}'
  })
  t.equal(small.status, 200)
})

t.test('upstream reset → 502, unreachable → 502, slow → 504', async (t) => {
  const stack = await startStack(t, { env: { M2M_PROXY_UPSTREAM_TIMEOUT_MS: '300' } })
  const reset = await stack.call('GET', '/api/m2m/v1/simulator/reset')
  t.equal(reset.status, 502)
  t.equal((reset.json() as ErrorBody).errorCode, 'Proxy.UpstreamUnreachable')
  const slow = await stack.call('GET', '/api/m2m/v1/simulator/delay/2000')
  t.equal(slow.status, 504)
  t.equal((slow.json() as ErrorBody).errorCode, 'Proxy.UpstreamTimeout')
  t.equal((await stack.call('GET', ECHO_PATH)).status, 200, 'still serving afterwards')

  await stack.sim.app.close()
  const down = await stack.call('GET', ECHO_PATH)
  t.equal(down.status, 502)
  t.equal((down.json() as ErrorBody).errorCode, 'Proxy.UpstreamUnreachable')
  t.equal(
    (down.json() as ErrorBody).errorMessage,
    `ThingSpace at ${new URL(stack.simUrl).host} could not be reached (ECONNREFUSED): the request was not sent`,
    'the host it tried, as M2M_PROXY_UPSTREAM says'
  )
})

t.test('an answer with a status code HTTP does not have: 502, none of its headers, the proxy keeps serving', async (t) => {
  // Node sends any status from 100 to 999; Fastify (and so reply-from) only 100 to 599.
  const upstream = await startStandInUpstream(t, (request, _body, response) => {
    if (request.url === '/api/m2m/v1/odd') {
      response.writeHead(600, { 'set-cookie': 'upstream=1', 'x-upstream': 'odd', 'content-length': '2' }).end('{}')
    } else {
      response.writeHead(200, { 'content-type': 'application/json' }).end('{"devices":[]}')
    }
  })
  const stack = await startStack(t, { upstream: upstream.url })
  for (let i = 0; i < 3; i++) {
    const odd = await stack.call('GET', '/api/m2m/v1/odd')
    t.equal(odd.status, 502)
    t.match(odd.json(), { errorCode: 'Proxy.UpstreamUnreachable', errorMessage: /answered with an invalid HTTP status code/ })
    t.equal(odd.headers['set-cookie'], undefined, "not the upstream's Set-Cookie")
    t.equal(odd.headers['x-upstream'], undefined, 'nor its other headers')
    t.type(odd.headers['x-request-id'], 'string', 'the request id, as on every answer')
  }
  t.equal((await stack.call('GET', '/api/m2m/v1/devices')).status, 200, 'still serving')
  const sentTwice = stack.logs.entries().filter((line) => /already sent/i.test(JSON.stringify(line)))
  t.same(sentTwice, [], 'no answer sent twice')
})

t.test(
  'an upstream reset, timeout or refused connection logs exactly one warning per request, without a stack trace',
  async (t) => {
    // A timeout far below the delay: on a busy machine the answer only comes later, never earlier.
    const stack = await startStack(t, { env: { M2M_PROXY_UPSTREAM_TIMEOUT_MS: '300' } })
    const stopUpstream = async (): Promise<void> => {
      await stack.sim.app.close()
    }
    for (const [target, status, setUp] of [
      ['/api/m2m/v1/simulator/reset', 502],
      ['/api/m2m/v1/simulator/delay/5000', 504],
      [ECHO_PATH, 502, stopUpstream]
    ] as const) {
      await setUp?.()
      const before = stack.logs.lines.length
      const answer = await stack.call('GET', target)
      t.equal(answer.status, status, target)
      const requestId = answer.headers['x-request-id']
      const warnings = stack.logs
        .entries()
        .slice(before)
        .filter((line) => (line.level as number) >= 40)
      t.equal(warnings.length, 1, `one warning for ${target}: ${JSON.stringify(warnings)}`)
      t.match(warnings[0], { reqId: requestId, msg: 'upstream request failed', upstreamError: String })
      t.notOk(JSON.stringify(warnings[0]).includes('stack'), 'no stack trace')
    }
  }
)

t.test(
  'an answer cut off upstream: 502 when small (read whole), a cut connection when streamed; the proxy keeps serving',
  async (t) => {
    const stack = await startStack(t)
    const small = await stack.call('GET', '/api/m2m/v1/simulator/truncated/100')
    t.equal(small.status, 502)
    t.equal((small.json() as ErrorBody).errorCode, 'Proxy.UpstreamUnreachable')
    t.match((small.json() as ErrorBody).errorMessage, /broke off/)
    t.equal(
      small.headers['content-length'],
      String(Buffer.byteLength(small.text)),
      "the broken answer's length is not reused"
    )
    // Past 64 KiB the answer streams: its headers are already on their way, so the client's connection is cut.
    await t.rejects(
      fetch(`${stack.proxy.proxyUrl}/api/m2m/v1/simulator/truncated/200000`).then(
        async (response) => await response.arrayBuffer()
      )
    )
    t.equal((await stack.call('GET', ECHO_PATH)).status, 200, 'still serving afterwards')
    t.ok(
      stack.logs.entries().some((line) => line.msg === 'upstream answer broke off'),
      'logged'
    )
  }
)

t.test('traversal and absolute-form targets never reach another path or host', async (t) => {
  const stack = await startStack(t)
  const before = stack.sim.stats.dataRequests
  const tokenRequestsBefore = stack.sim.stats.tokenRequests
  const targets = [
    '/api/m2m/../ts/v1/oauth2/token',
    '/api/m2m/v1/../../ts/v1/oauth2/token',
    '/api/m2m/%2e%2e/ts/v1/oauth2/token',
    '/api/m2m/%2E%2E/%2e%2e/api/ts/v1/oauth2/token',
    '/api/m2m/.%2e/ts/v1/oauth2/token',
    '/api/m2m/%252e%252e/ts/v1/oauth2/token',
    '/api/m2m/v1%2f..%2f..%2fts/v1/oauth2/token',
    '/api/m2m/v1\\..\\..\\ts',
    'http://evil.example/api/m2m/v1/simulator/echo',
    '//evil.example/api/m2m/v1/simulator/echo'
  ]
  for (const target of targets) {
    const answer = await rawExchange(
      stack.proxy.proxyUrl,
      `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`
    )
    t.match(answer, /^HTTP\/1\.1 (404|400) /, target)
  }
  t.equal(stack.sim.stats.dataRequests, before, 'nothing forwarded')
  t.equal(stack.sim.stats.tokenRequests, tokenRequestsBefore, 'the token endpoint was not reached')
})

t.test('upstream TLS certificates are verified', async (t) => {
  const { generateSelfSigned } = await import('../helpers/tls.js')
  const { createServer } = await import('node:https')
  const pair = generateSelfSigned(t)
  let reached = 0
  const server = createServer({ key: pair.key, cert: pair.cert }, (_request, response) => {
    reached += 1
    response.end('{}')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const port = (server.address() as net.AddressInfo).port
  const stack = await startStack(t, { upstream: `https://127.0.0.1:${port}` })
  const answer = await stack.call('GET', ECHO_PATH)
  t.equal(answer.status, 503, 'no token can be fetched from an untrusted server')
  t.match((answer.json() as ErrorBody).errorMessage, /OAuth|login/i)
  t.equal(reached, 0, 'no request completed against the self-signed server')
})

// Verizon's SDK sends nearly every Connectivity Management call as a POST: one told "not sent" is sent again, and an
// activation is done twice. A connection that fails once ThingSpace has the request must not say so.
t.test('a connection ThingSpace drops after taking a POST: 502 that says it may have been processed', async (t) => {
  const received: string[] = []
  const upstream = await startStandInUpstream(t, (_request, body, response) => {
    received.push(body.toString())
    response.socket?.destroy()
  })
  const stack = await startStack(t, { upstream: upstream.url })
  const answer = await stack.call('POST', '/api/m2m/v1/devices/actions/activate', {
    body: JSON.stringify({ devices: [{ deviceIds: [{ kind: 'imei', id: '990000862471854' }] }] }),
    headers: { 'content-type': 'application/json' }
  })
  t.equal(answer.status, 502)
  const body = answer.json() as ErrorBody
  t.equal(body.errorCode, 'Proxy.UpstreamUnreachable')
  t.match(body.errorMessage, /may have received and processed the request: check before sending it again/)
  t.notMatch(body.errorMessage, /could not be reached|not sent/)
  t.equal(received.length, 1, 'ThingSpace got it once: the proxy did not send it again')
})

t.test('a small answer that stalls before its end: 504, like one that never starts', async (t) => {
  const upstream = await startStandInUpstream(t, (_request, _body, response) => {
    response.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' })
    response.write('{"devices":[')
    // The rest never comes: the connection stays open (the stand-in closes at the test's end).
  })
  const stack = await startStack(t, { upstream: upstream.url, env: { M2M_PROXY_UPSTREAM_TIMEOUT_MS: '300' } })
  const answer = await stack.call('GET', '/api/m2m/v1/devices/actions/list')
  t.equal(answer.status, 504)
  t.match(answer.json(), { errorCode: 'Proxy.UpstreamTimeout', errorMessage: /broke off.*may have received/ })
})
