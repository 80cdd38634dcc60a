// X-Request-Id: kept when sane, made otherwise; forwarded upstream, returned, and on every log line of the request.

import t from 'tap'
import { ECHO_PATH, startStack } from '../helpers/stack.js'
import { metricValue } from '../helpers/metrics.js'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

t.test('a sane incoming id round-trips: upstream, response, logs', async (t) => {
  const stack = await startStack(t)
  stack.sim.expireSessions() // so that this request also logs a replay line
  const id = 'erp-batch-42:item.7'
  const answer = await stack.call('GET', ECHO_PATH, { headers: { 'x-request-id': id } })
  t.equal(answer.status, 200)
  t.equal(answer.headers['x-request-id'], id, 'returned to the client')
  t.equal((answer.json() as { headers: Record<string, string> }).headers['x-request-id'], id, 'forwarded upstream')
  const lines = stack.logs.entries().filter((entry) => entry.reqId === id)
  t.ok(lines.some((entry) => entry.msg === 'request' && entry.replayed === true), 'the request line carries it')
})

t.test('missing or insane ids are replaced by a generated one', async (t) => {
  const stack = await startStack(t)
  for (const header of [undefined, '', 'has spaces in it', 'x'.repeat(200), 'quote"s', 'new\u00e9line']) {
    const answer = await stack.call('GET', ECHO_PATH, { headers: header === undefined ? {} : { 'x-request-id': header } })
    const returned = answer.headers['x-request-id']
    t.match(returned, UUID, `replaced ${JSON.stringify(header)?.slice(0, 20)}`)
    t.equal((answer.json() as { headers: Record<string, string> }).headers['x-request-id'], returned)
    t.ok(stack.logs.entries().some((entry) => entry.reqId === returned && entry.msg === 'request'))
  }
  const errors = await stack.call('GET', '/nowhere', { headers: { 'x-request-id': 'on-an-error' } })
  t.equal(errors.headers['x-request-id'], 'on-an-error', 'also on answers the proxy makes itself')
})

t.test('lines logged through the request\'s own logger (made on first use) carry its id too', async (t) => {
  const stack = await startStack(t)
  const answer = await stack.call('GET', '/api/m2m/v1/simulator/reset', { headers: { 'x-request-id': 'reset-7' } })
  t.equal(answer.status, 502)
  const lines = stack.logs.entries().filter((entry) => entry.reqId === 'reset-7')
  t.ok(lines.some((entry) => entry.msg === 'upstream request failed' && entry.listener === 'proxy'), 'the warning of the failed request')
  t.ok(lines.some((entry) => entry.msg === 'request' && entry.status === 502), 'and its request line')
  t.notOk(stack.logs.entries().some((entry) => entry.msg === 'upstream request failed' && entry.reqId === undefined), 'never without an id')
})

t.test('requests refused before routing (a malformed URL) carry their id too, and are logged and counted', async (t) => {
  const stack = await startStack(t)
  const answer = await stack.call('GET', '/api/m2m/v1/devices/%zz', { headers: { 'x-request-id': 'bad-url-1' } })
  t.equal(answer.status, 400)
  t.equal(answer.headers['x-request-id'], 'bad-url-1')
  t.ok(stack.logs.entries().some((entry) => entry.reqId === 'bad-url-1' && entry.msg === 'request' && entry.status === 400), 'its request line')
  const metrics = await stack.adminCall('GET', '/metrics')
  t.equal(metricValue(metrics.text, 'm2m_proxy_requests_total', { method: 'GET', status_class: '4xx' }), 1, 'and its count')
})

t.test('the answers of the local session-controller stand-ins carry the id', async (t) => {
  const stack = await startStack(t)
  for (const path of ['/api/m2m/v1/session/login', '/api/m2m/v1/session/logout', '/api/ts/v1/oauth2/token']) {
    const answer = await stack.call('POST', path, { headers: { 'x-request-id': `stub-${path.length}` } })
    t.equal(answer.status, 200, path)
    t.equal(answer.headers['x-request-id'], `stub-${path.length}`, path)
  }
})
