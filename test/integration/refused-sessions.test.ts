// An upstream that answers "session expired" to every session, fresh ones included: re-logins stay bounded and clients
// get the upstream's answer.

import t from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { ECHO_PATH, startStack } from '../helpers/stack.js'
import { metricValue } from '../helpers/metrics.js'

interface ErrorBody {
  errorCode: string
  errorMessage: string
}

t.test(
  "20 sequential requests against an upstream refusing every session: a handful of logins, each client gets the upstream's 400",
  async (t) => {
    const stack = await startStack(t, { simulator: { refuseEverySession: true } })
    t.equal(stack.sim.stats.logins, 1, 'the start-up login')
    for (let i = 0; i < 20; i++) {
      const answer = await stack.call('GET', ECHO_PATH)
      t.equal(answer.status, 400, `request ${i + 1}: ThingSpace's status`)
      t.equal(
        (answer.json() as ErrorBody).errorCode,
        'UnifiedWebService.REQUEST_FAILED.SessionToken.Expired',
        `request ${i + 1}: ThingSpace's answer`
      )
    }
    t.ok(stack.sim.stats.logins <= 3, `a handful of logins, not one per request (${stack.sim.stats.logins})`)
    t.equal(stack.sim.stats.failedLogins, 0)

    const metrics = (await stack.adminCall('GET', '/metrics')).text
    t.equal(
      metricValue(metrics, 'm2m_proxy_session_renewals_total', { reason: 'expired' }),
      stack.sim.stats.logins - 1,
      'the renewal counter shows the re-logins'
    )
    const warnings = stack.logs
      .entries()
      .filter(
        (entry) =>
          entry.level === 40 &&
          typeof entry.msg === 'string' &&
          entry.msg.includes('after the login that replaced a refused one')
      )
    t.equal(warnings.length, 1, 'one warning for the session held, not one per request')
  }
)

t.test(
  '20 sequential requests against a gateway refusing every bearer (401 900901): a handful of token fetches, each gets the 401',
  async (t) => {
    let fetches = 0
    const refusal = JSON.stringify({ fault: { code: 900901, message: 'Invalid Credentials' } })
    const upstream = http.createServer((incoming, response) => {
      incoming.resume()
      incoming.on('end', () => {
        if (incoming.url === '/api/ts/v1/oauth2/token') {
          fetches++
          response.end(JSON.stringify({ access_token: `oauth-${fetches}`, token_type: 'bearer', expires_in: 3600 }))
        } else if (incoming.url === '/api/m2m/v1/session/login') {
          response.end(JSON.stringify({ sessionToken: 'session-1' }))
        } else {
          response.writeHead(401, { 'content-type': 'application/json' }).end(refusal)
        }
      })
    })
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
    t.teardown(() => new Promise<void>((resolve) => {
      upstream.closeAllConnections()
      upstream.close(() => resolve())
    }))
    const stack = await startStack(t, { upstream: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}` })
    await stack.proxy.initialLogin
    const atStart = fetches
    for (let i = 0; i < 20; i++) {
      const answer = await stack.call('GET', '/api/m2m/v1/devices')
      t.equal(answer.status, 401, `request ${i + 1}: the gateway's status`)
      t.match(answer.text, /900901/, `request ${i + 1}: the gateway's answer`)
    }
    t.ok(fetches - atStart <= 2, `a handful of token fetches, not one per request (${fetches - atStart})`)
    const warnings = stack.logs.entries().filter((entry) => /refused the OAuth token/.test(String(entry.msg)))
    t.equal(warnings.length, 1, 'one warning for the bearer held')
  }
)
