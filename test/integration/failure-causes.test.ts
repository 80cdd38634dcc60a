// Failed token fetches, logins, logouts and password resets are logged with their cause (status, errorCode, network or
// TLS error code), never with a secret; readiness names a refused app key or login.

import t, { type Test } from 'tap'
import http from 'node:http'
import net from 'node:net'
import { createServer } from 'node:https'
import { DEMO_CREDENTIALS } from '../../src/simulator/app.js'
import { ADMIN_TOKEN, startStack, type Stack, type StackOptions } from '../helpers/stack.js'
import { generateSelfSigned } from '../helpers/tls.js'
import { freePort } from '../helpers/ports.js'
import { startStandInUpstream } from '../helpers/stand-in-upstream.js'

const AUTH = { authorization: `Bearer ${ADMIN_TOKEN}` }
const WRONG_SECRET = 'wrong-app-secret-5d0e7a91c4'

type Entry = Record<string, unknown>

/** Every log line whose message starts with `prefix`. */
function linesStartingWith (stack: Stack, prefix: string): Entry[] {
  return stack.logs.entries().filter((entry) => typeof entry.msg === 'string' && entry.msg.startsWith(prefix))
}

/** At trace level: none of the credentials, nor any token the simulator issued, in any log line. */
function assertNoSecret (t: Test, stack: Stack, extra: string[] = []): void {
  const secrets = [
    DEMO_CREDENTIALS.password,
    DEMO_CREDENTIALS.clientSecret,
    Buffer.from(`${DEMO_CREDENTIALS.clientId}:${DEMO_CREDENTIALS.clientSecret}`).toString('base64'),
    stack.sim.currentOAuthToken(),
    ...stack.sim.activeSessionTokens(),
    ...extra
  ].filter((secret): secret is string => secret !== undefined)
  t.equal(stack.config.logLevel, 'trace', 'logging at trace level')
  for (const secret of secrets) {
    t.notOk(stack.logs.text.includes(secret), `no secret of ${secret.length} characters in the log`)
  }
}

const traced = (options: StackOptions = {}): StackOptions => ({
  ...options,
  env: { M2M_PROXY_LOG_LEVEL: 'trace', ...options.env }
})

t.test(
  'wrong app secret: the log says 401 invalid_client; /readyz and GET /admin/session say oauth-client-rejected',
  async (t) => {
    const stack = await startStack(t, traced({ credentials: { clientSecret: WRONG_SECRET } }))
    const [line] = linesStartingWith(stack, 'OAuth token fetch failed')
    t.match(line, { level: 50, outcome: 'rejected', status: 401, errorCode: 'invalid_client' })
    const ready = await stack.adminCall('GET', '/readyz')
    t.equal(ready.status, 503)
    t.match(ready.json(), { ready: false, reason: 'oauth-client-rejected' })
    const session = await stack.adminCall('GET', '/admin/session', { headers: AUTH })
    t.match(session.json(), { notReadyReason: 'oauth-client-rejected' })
    assertNoSecret(t, stack, [
      WRONG_SECRET,
      Buffer.from(`${DEMO_CREDENTIALS.clientId}:${WRONG_SECRET}`).toString('base64')
    ])
  }
)

t.test('upstream refusing connections: the log says ECONNREFUSED, and which host', async (t) => {
  const port = await freePort()
  const stack = await startStack(t, traced({ upstream: `http://127.0.0.1:${port}` }))
  const [line] = linesStartingWith(stack, 'OAuth token fetch failed')
  t.match(line, { outcome: 'error', networkError: 'ECONNREFUSED' })
  t.notOk(line !== undefined && 'status' in line, 'no status: nothing answered')
  t.match((await stack.adminCall('GET', '/readyz')).json(), { reason: 'not-logged-in' })
  t.equal(
    line?.msg,
    `OAuth token fetch failed: ThingSpace at 127.0.0.1:${port} (M2M_PROXY_UPSTREAM) did not answer (ECONNREFUSED)`,
    'the line names the host and the setting'
  )
  assertNoSecret(t, stack)
})

t.test('upstream with an untrusted (self-signed) certificate: the log gives the TLS error code', async (t) => {
  const pair = generateSelfSigned(t)
  const server = createServer({ key: pair.key, cert: pair.cert }, (_request, response) => {
    response.end('{}')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const stack = await startStack(
    t,
    traced({ upstream: `https://127.0.0.1:${(server.address() as net.AddressInfo).port}` })
  )
  const [line] = linesStartingWith(stack, 'OAuth token fetch failed')
  t.match(line, {
    outcome: 'error',
    tlsError: /^(DEPTH_ZERO_SELF_SIGNED_CERT|UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN)$/
  })
  assertNoSecret(t, stack)
})

t.test(
  "rejected login: the log gives status and errorCode; /readyz says credentials-rejected as the clients' errors do",
  async (t) => {
    const stack = await startStack(t, traced({ credentials: { password: 'wrong-but-still-secret' } }))
    const [line] = linesStartingWith(stack, 'login failed')
    t.match(line, { outcome: 'rejected', status: 400, errorCode: String })
    const ready = await stack.adminCall('GET', '/readyz')
    t.equal(ready.status, 503)
    t.match(ready.json(), { reason: 'credentials-rejected' })
    t.match((await stack.adminCall('GET', '/admin/session', { headers: AUTH })).json(), {
      notReadyReason: 'credentials-rejected'
    })
    const client = (await stack.call('GET', '/api/m2m/v1/simulator/echo')).json() as { errorCode: string }
    t.equal(client.errorCode, 'Proxy.AuthenticationUnavailable.CredentialsRejected', 'what the clients are told')
    assertNoSecret(t, stack, ['wrong-but-still-secret'])
  }
)

t.test(
  'a logout ThingSpace refuses for another reason: 502 Proxy.UpstreamRefused with its code, not a 400 of the admin call',
  async (t) => {
    const upstream = await startStandInUpstream(t, (request, _body, response) => {
      response.writeHead(request.url === '/api/m2m/v1/session/logout' ? 403 : 200, { 'content-type': 'application/json' })
      response.end(request.url === '/api/m2m/v1/session/logout' ? '{"errorCode":"UnifiedWebService.ACCESS_DENIED"}' : '{}')
    })
    const stack = await startStack(t, { upstream: upstream.url })
    await stack.proxy.initialLogin
    const refused = await stack.adminCall('POST', '/admin/session/end', { headers: AUTH })
    t.equal(refused.status, 502)
    t.match(refused.json(), { errorCode: 'Proxy.UpstreamRefused', errorMessage: /403.*ACCESS_DENIED/ })
    t.match(linesStartingWith(stack, 'logout failed')[0], { status: 403, errorCode: 'UnifiedWebService.ACCESS_DENIED' })
    const tooLarge = await stack.adminCall('POST', '/admin/session/start', {
      headers: { ...AUTH, 'content-type': 'application/json' },
      body: JSON.stringify({ padding: 'x'.repeat(65 * 1024) })
    })
    t.equal(tooLarge.status, 413, 'an admin body over 64 KiB: 413, as on the proxy listener')
    t.match(tooLarge.json(), { errorCode: 'Proxy.BodyTooLarge' })
  }
)

t.test('failed logout and password reset: logged with their cause', async (t) => {
  const stack = await startStack(t, traced())
  const tokens = [stack.sim.currentOAuthToken(), ...stack.sim.activeSessionTokens()].filter(
    (token): token is string => token !== undefined
  )
  // A session the platform no longer knows (20 minutes idle): the logout answers 400 SessionToken.Expired, and the
  // session is ended all the same.
  stack.sim.expireSessions()
  const ended = await stack.adminCall('POST', '/admin/session/end', { headers: AUTH })
  t.equal(ended.status, 200)
  t.same(ended.json(), { ended: true }, 'ThingSpace had ended it already')
  t.same(linesStartingWith(stack, 'logout failed'), [], 'not a failure')

  await stack.proxy.app.session.startSession()
  tokens.push(...stack.sim.activeSessionTokens())
  await stack.sim.app.close()
  const rotated = await stack.adminCall('POST', '/admin/password/rotate', { headers: AUTH })
  t.equal(rotated.status, 502)
  t.match(linesStartingWith(stack, 'ThingSpace password reset failed')[0], {
    level: 50,
    component: 'credentials',
    networkError: 'ECONNREFUSED'
  })
  const unreachable = await stack.adminCall('POST', '/admin/session/end', { headers: AUTH })
  t.equal(unreachable.status, 502)
  t.match(unreachable.json(), { errorCode: 'Proxy.UpstreamUnreachable', errorMessage: /session logout/ })
  t.match(linesStartingWith(stack, 'logout failed')[0], {
    level: 40,
    networkError: 'ECONNREFUSED',
    replacedSession: false
  })
  assertNoSecret(t, stack, tokens)
})

t.test(
  'an upstream whose error codes echo what was sent: no secret, nor a part of one, in the log, the events or an answer',
  async (t) => {
    const password = 'echoed-password-"quoted"-4f1c2a9e7b'
    const clientSecret = 'echoed-client-secret-8d2b6c0a1e'
    const basic = Buffer.from(`${DEMO_CREDENTIALS.clientId}:${clientSecret}`).toString('base64')
    for (const refused of ['oauth-fetch', 'login']) {
      const upstream = http.createServer((request, response) => {
        let body = ''
        request.on('data', (chunk: Buffer) => { body += chunk.toString() })
        request.on('end', () => {
          response.setHeader('content-type', 'application/json')
          if (request.url !== '/api/ts/v1/oauth2/token') {
            response.writeHead(400).end(JSON.stringify({ errorCode: `REQUEST_FAILED ${body}` }))
          } else if (refused === 'oauth-fetch') {
            // The client id and secret, then the Basic header: cut at 100 characters, a prefix of each would remain.
            const sent = (request.headers.authorization ?? '').replace(/^Basic /, '')
            response.writeHead(401).end(JSON.stringify({ error: `${Buffer.from(sent, 'base64').toString()} ${sent}` }))
          } else {
            response.end(JSON.stringify({ access_token: 'echo-oauth-token-1', token_type: 'Bearer', expires_in: 3600 }))
          }
        })
      })
      await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
      t.teardown(() => { upstream.closeAllConnections(); upstream.close() })
      const { port } = upstream.address() as net.AddressInfo
      const stack = await startStack(
        t,
        traced({ upstream: `http://127.0.0.1:${port}`, credentials: { password, clientSecret } })
      )
      const answers = [
        (await stack.call('GET', '/api/m2m/v1/simulator/echo')).text,
        (await stack.adminCall('POST', '/admin/session/start', { headers: AUTH })).text,
        (await stack.adminCall('GET', '/admin/events', { headers: AUTH })).text
      ]
      const { events } = JSON.parse(answers[2] as string) as { events: Array<{ type: string; cause?: unknown }> }
      t.ok(events.some((event) => event.type === refused && event.cause !== undefined), `a ${refused} was refused`)
      const everything = [stack.logs.text, ...answers].join('\n')
      const secrets = [password, JSON.stringify(password).slice(1, -1), clientSecret, basic, 'echo-oauth-token-1']
      for (const secret of secrets) {
        t.notOk(everything.includes(secret.slice(0, 12)), `not even the first 12 of ${secret.length} characters`)
      }
      t.match(everything, /\[redacted\]/, 'the code is kept, the secrets in it blotted out')
    }
  }
)
