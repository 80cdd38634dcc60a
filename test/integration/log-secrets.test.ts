// At trace level, through logins, replays, rejections and errors, no secret reaches a log line or a proxy-made answer.

import diagnosticsChannel from 'node:diagnostics_channel'
import t, { type Test } from 'tap'
import { EVENT_CHANNELS, type ProxyEventMessage } from '../../src/events.js'
import { DEMO_CREDENTIALS } from '../../src/simulator/app.js'
import { startStack, ECHO_PATH } from '../helpers/stack.js'

const ADMIN_TOKEN = 'admin-token-for-the-log-test-0123456789'

/** Every lifecycle event published while the test runs, as an APM agent subscribed to the channels would see it. */
function watchEvents (t: Test): string[] {
  const published: string[] = []
  const listener = (message: unknown): void => { published.push(JSON.stringify((message as ProxyEventMessage).event)) }
  for (const name of Object.values(EVENT_CHANNELS)) {
    diagnosticsChannel.subscribe(name, listener)
    t.teardown(() => { diagnosticsChannel.unsubscribe(name, listener) })
  }
  return published
}

t.test('logs at trace level and lifecycle events contain no password, client secret, token, Basic header or admin token', async (t) => {
  const events = watchEvents(t)
  const stack = await startStack(t, { env: { M2M_PROXY_LOG_LEVEL: 'trace', M2M_PROXY_ADMIN_TOKEN: ADMIN_TOKEN } })
  const secrets = new Set<string>([
    DEMO_CREDENTIALS.password,
    DEMO_CREDENTIALS.clientSecret,
    Buffer.from(`${DEMO_CREDENTIALS.clientId}:${DEMO_CREDENTIALS.clientSecret}`).toString('base64'),
    ADMIN_TOKEN,
    'client-own-bearer-value',
    'client-own-session-value'
  ])
  const remember = (): void => {
    const oauth = stack.sim.currentOAuthToken()
    if (oauth !== undefined) secrets.add(oauth)
    for (const token of stack.sim.activeSessionTokens()) secrets.add(token)
  }
  remember()
  const clientHeaders = { authorization: 'Bearer client-own-bearer-value', 'vz-m2m-token': 'client-own-session-value', 'content-type': 'application/json' }
  const proxyMade: string[] = []
  proxyMade.push((await stack.call('POST', '/api/m2m/v1/session/login', { headers: clientHeaders, body: JSON.stringify({ username: 'x', password: DEMO_CREDENTIALS.password }) })).text)
  await stack.call('POST', ECHO_PATH, { headers: clientHeaders, body: '{"a":1}' })
  stack.sim.expireSessions()
  await stack.call('POST', ECHO_PATH, { headers: clientHeaders, body: '{"a":2}' })
  remember()
  stack.sim.expireOAuthToken()
  await stack.call('GET', ECHO_PATH, { headers: clientHeaders })
  remember()
  proxyMade.push((await stack.call('GET', '/api/m2m/v1/simulator/reset', { headers: clientHeaders })).text)
  proxyMade.push((await stack.call('GET', '/nowhere', { headers: clientHeaders })).text)
  // A rejected login after an operator-made end of session, and an unavailable login endpoint.
  stack.sim.failNextLogins(1, 'status500')
  await stack.proxy.app.session.endSession()
  proxyMade.push((await stack.call('GET', ECHO_PATH, { headers: clientHeaders })).text)

  t.ok(stack.logs.lines.length > 10, `${stack.logs.lines.length} log lines written`)
  t.ok(stack.logs.entries().some((entry) => entry.level === 10 || entry.level === 20), 'debug or trace lines were written')
  t.ok(secrets.size >= 9, `${secrets.size} secrets watched`)
  t.ok(events.length >= 5, `${events.length} lifecycle events published`)
  t.ok(events.some((event) => event.includes('"type":"renewal"')), 'renewals among them')
  t.ok(events.some((event) => event.includes('"outcome":"error"')), 'the failed login among them')
  for (const secret of secrets) {
    t.notOk(stack.logs.text.includes(secret), `log free of a secret of ${secret.length} characters`)
    t.notOk(events.some((event) => event.includes(secret)), 'events free of it')
    for (const body of proxyMade) t.notOk(body.includes(secret), 'proxy-made answer free of it')
  }
})

t.test('a rejected login is logged without the password', async (t) => {
  const stack = await startStack(t, { credentials: { password: 'wrong-but-still-secret' }, env: { M2M_PROXY_LOG_LEVEL: 'trace' } })
  t.ok(stack.logs.lines.some((line) => line.includes('login failed')), 'the rejection is logged')
  t.notOk(stack.logs.text.includes('wrong-but-still-secret'))
  const answer = await stack.call('GET', ECHO_PATH)
  t.equal(answer.status, 503)
  t.notOk(answer.text.includes('wrong-but-still-secret'))
})
