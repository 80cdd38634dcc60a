// An upstream that answers "session expired" to every session, fresh ones included: re-logins stay bounded and clients
// get the upstream's answer.

import t from 'tap'
import { ECHO_PATH, startStack } from '../helpers/stack.js'
import { metricValue } from '../helpers/metrics.js'
import { startStandInUpstream } from '../helpers/stand-in-upstream.js'

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
    const refusal = JSON.stringify({ fault: { code: 900901, message: 'Invalid Credentials' } })
    const upstream = await startStandInUpstream(t, (_request, _body, response) => {
      response.writeHead(401, { 'content-type': 'application/json' }).end(refusal)
    })
    const stack = await startStack(t, { upstream: upstream.url })
    await stack.proxy.initialLogin
    const atStart = upstream.oauthTokens.length
    for (let i = 0; i < 20; i++) {
      const answer = await stack.call('GET', '/api/m2m/v1/devices')
      t.equal(answer.status, 401, `request ${i + 1}: the gateway's status`)
      t.match(answer.text, /900901/, `request ${i + 1}: the gateway's answer`)
    }
    const fetches = upstream.oauthTokens.length - atStart
    t.ok(fetches <= 2, `a handful of token fetches, not one per request (${fetches})`)
    const warnings = stack.logs.entries().filter((entry) => /refused the OAuth token/.test(String(entry.msg)))
    t.equal(warnings.length, 1, 'one warning for the bearer held')
  }
)
