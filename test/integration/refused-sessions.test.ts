// An upstream that answers "session expired" to every session, fresh ones included: re-logins stay bounded and clients
// get the upstream's answer.

import t from 'tap'
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
