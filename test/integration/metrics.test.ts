// Prometheus metrics on the admin listener move as the events happen, with bounded labels.

import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { DEMO_CREDENTIALS } from '../../src/simulator/app.js'
import { ADMIN_TOKEN, ECHO_PATH, startStack, type Stack } from '../helpers/stack.js'
import { metricValue } from '../helpers/metrics.js'
import { FakeClock } from '../helpers/fake-clock.js'

const ADMIN = { authorization: `Bearer ${ADMIN_TOKEN}` }

async function scrape (stack: Stack): Promise<string> {
  const answer = await stack.adminCall('GET', '/metrics')
  if (answer.status !== 200) throw new Error(`/metrics answered ${answer.status}`)
  return answer.text
}

t.test('/metrics: the documented metrics and Node\'s process metrics, without a token', async (t) => {
  const stack = await startStack(t)
  const answer = await stack.adminCall('GET', '/metrics')
  t.equal(answer.status, 200)
  t.match(answer.headers['content-type'], /^text\/plain/)
  for (const name of ['m2m_proxy_requests_total', 'm2m_proxy_upstream_duration_seconds', 'm2m_proxy_logins_total', 'm2m_proxy_session_renewals_total',
    'm2m_proxy_replays_total', 'm2m_proxy_oauth_fetches_total', 'm2m_proxy_session_age_seconds', 'm2m_proxy_session_idle_seconds',
    'm2m_proxy_login_guard_engaged', 'process_cpu_user_seconds_total', 'nodejs_heap_size_used_bytes']) {
    t.match(answer.text, new RegExp(`^# TYPE ${name} `, 'm'), name)
  }
  t.equal(metricValue(answer.text, 'm2m_proxy_logins_total', { outcome: 'success' }), 1, 'the start-up login')
  t.equal(metricValue(answer.text, 'm2m_proxy_oauth_fetches_total', { outcome: 'success' }), 1)
  t.equal(metricValue(answer.text, 'm2m_proxy_login_guard_engaged'), 0)
  t.equal(metricValue(answer.text, 'm2m_proxy_ready'), 1, 'ready: logged in')
  t.equal(metricValue(answer.text, 'm2m_proxy_login_attempts_left'), 2, 'the whole lockout headroom (default 2)')
  const expiresIn = metricValue(answer.text, 'm2m_proxy_oauth_token_expires_in_seconds')
  t.ok(expiresIn > 3000 && expiresIn <= 3600, `the OAuth token retires in ${expiresIn} s (an hour's token)`)
  t.equal(metricValue(answer.text, 'm2m_proxy_password_rotation_period_seconds'), 0, 'scheduled rotation off')
  t.notMatch(answer.text, /m2m_proxy_password_generation/, 'no generation outside fleet mode')
})

t.test('the rotation period, as configured', async (t) => {
  const stack = await startStack(t, { env: { M2M_PROXY_PASSWORD_ROTATION_DAYS: '30' } })
  t.equal(metricValue(await scrape(stack), 'm2m_proxy_password_rotation_period_seconds'), 30 * 86_400)
})

t.test('requests, upstream durations, re-logins and replays are counted as they happen', async (t) => {
  const stack = await startStack(t)
  await stack.call('GET', ECHO_PATH)
  await stack.call('POST', ECHO_PATH, { body: 'x' })
  await stack.call('GET', '/not-proxied')
  let text = await scrape(stack)
  t.equal(metricValue(text, 'm2m_proxy_requests_total', { method: 'GET', status_class: '2xx' }), 1)
  t.equal(metricValue(text, 'm2m_proxy_requests_total', { method: 'POST', status_class: '2xx' }), 1)
  t.equal(metricValue(text, 'm2m_proxy_requests_total', { method: 'GET', status_class: '4xx' }), 1)
  t.equal(metricValue(text, 'm2m_proxy_upstream_duration_seconds_count', { status_class: '2xx' }), 2)
  await stack.call('GET', ECHO_PATH)
  text = await scrape(stack)
  t.equal(metricValue(text, 'm2m_proxy_requests_total', { method: 'GET', status_class: '2xx' }), 2, 'counts handed over at a scrape are not counted again at the next')
  t.equal(metricValue(text, 'm2m_proxy_requests_total', { method: 'POST', status_class: '2xx' }), 1)

  stack.sim.expireSessions()
  await stack.call('GET', ECHO_PATH)
  text = await scrape(stack)
  t.equal(metricValue(text, 'm2m_proxy_session_renewals_total', { reason: 'expired' }), 1, 'a re-login after SessionToken.Expired')
  t.equal(metricValue(text, 'm2m_proxy_replays_total', { reason: 'session' }), 1)
  t.equal(metricValue(text, 'm2m_proxy_logins_total', { outcome: 'success' }), 2)
  t.equal(metricValue(text, 'm2m_proxy_upstream_duration_seconds_count', { status_class: '4xx' }), 1, 'the refused first attempt')

  stack.sim.expireOAuthToken()
  await stack.call('GET', ECHO_PATH)
  text = await scrape(stack)
  t.equal(metricValue(text, 'm2m_proxy_replays_total', { reason: 'oauth' }), 1)
  t.equal(metricValue(text, 'm2m_proxy_oauth_fetches_total', { outcome: 'success' }), 2)

  await stack.adminCall('POST', '/admin/session/start', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
  await stack.adminCall('POST', '/admin/password/rotate', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
  text = await scrape(stack)
  t.equal(metricValue(text, 'm2m_proxy_session_renewals_total', { reason: 'admin' }), 1)
  t.equal(metricValue(text, 'm2m_proxy_session_renewals_total', { reason: 'rotation' }), 1)
  t.ok(metricValue(text, 'm2m_proxy_session_age_seconds') >= 0)

  await stack.sim.app.close()
  await stack.call('GET', ECHO_PATH)
  text = await scrape(stack)
  t.equal(metricValue(text, 'm2m_proxy_requests_total', { method: 'GET', status_class: '5xx' }), 1)
  t.equal(metricValue(text, 'm2m_proxy_upstream_duration_seconds_count', { status_class: 'error' }), 1)
})

t.test('idle renewals are counted', async (t) => {
  let now = Date.now()
  const clock = { now: () => now }
  const stack = await startStack(t, { clock, simulator: { now: clock.now } })
  now += 25 * 60_000
  await stack.call('GET', ECHO_PATH)
  t.equal(metricValue(await scrape(stack), 'm2m_proxy_session_renewals_total', { reason: 'idle' }), 1)
})

t.test('rejected logins and the engaged guard show, up to the account\'s ceiling', async (t) => {
  const stack = await startStack(t, {
    credentials: { password: 'wrong' },
    env: { M2M_PROXY_CREDENTIALS_WATCH_INTERVAL_MS: '0' }
  })
  t.equal(metricValue(await scrape(stack), 'm2m_proxy_logins_total', { outcome: 'rejected' }), 1)
  t.equal(metricValue(await scrape(stack), 'm2m_proxy_login_guard_engaged'), 0)
  t.equal(metricValue(await scrape(stack), 'm2m_proxy_ready'), 0, 'not ready after a rejected login (as /readyz)')
  t.equal(metricValue(await scrape(stack), 'm2m_proxy_login_attempts_left'), 1, 'one attempt from the ceiling')
  await sleep(1100)
  await stack.call('GET', ECHO_PATH)
  const text = await scrape(stack)
  t.equal(metricValue(text, 'm2m_proxy_logins_total', { outcome: 'rejected' }), 2)
  t.equal(metricValue(text, 'm2m_proxy_login_guard_engaged'), 1)
  t.equal(metricValue(text, 'm2m_proxy_login_attempts_left'), 0)
  t.equal(metricValue(text, 'm2m_proxy_oauth_token_expires_in_seconds') > 0, true, 'the app key still works')
  t.equal(metricValue(text, 'm2m_proxy_requests_total', { method: 'GET', status_class: '5xx' }), 1)

  // Another wrong password: the guard lets it try, but the account has two failures left before its ceiling of 4.
  fs.writeFileSync(path.join(stack.dir, 'credentials.json'), JSON.stringify({ ...DEMO_CREDENTIALS, password: 'wrong-2' }))
  t.equal((await stack.adminCall('POST', '/admin/credentials/reload', { headers: ADMIN })).status, 409, 'rejected')
  t.equal(metricValue(await scrape(stack), 'm2m_proxy_login_attempts_left'), 1, "one from the account's ceiling")
  await sleep(1100)
  await stack.call('GET', ECHO_PATH)
  const atCeiling = await scrape(stack)
  t.equal(stack.sim.stats.failedLogins, 4)
  t.equal(metricValue(atCeiling, 'm2m_proxy_login_guard_engaged'), 1)
  t.equal(metricValue(atCeiling, 'm2m_proxy_login_attempts_left'), 0, 'none at the ceiling')
  const warning = stack.logs.entries().filter((entry) => /^4 consecutive failed logins for this account/.test(String(entry.msg)))
  t.equal(warning.length, 1, 'the ceiling is logged, once')
  t.match(warning[0]?.msg, /Prove the password first.*delete .*login-guard\.json and restart/)
  // New credentials release the credentials' guard, never the account's ceiling.
  fs.writeFileSync(path.join(stack.dir, 'credentials.json'), JSON.stringify({ ...DEMO_CREDENTIALS, password: 'wrong-3' }))
  const refused = await stack.adminCall('POST', '/admin/credentials/reload', { headers: ADMIN })
  t.equal(refused.status, 409)
  t.match(refused.json(), { errorMessage: /4 consecutive failed logins for this account/ })
  const after = await scrape(stack)
  t.equal(metricValue(after, 'm2m_proxy_login_guard_engaged'), 1)
  t.equal(metricValue(after, 'm2m_proxy_login_attempts_left'), 0, 'still none after a credentials change')
  t.equal(stack.sim.stats.failedLogins, 4, 'nothing sent')
})

t.test('labels stay bounded: no path, identifier, token or user name in any series', async (t) => {
  const stack = await startStack(t)
  for (let i = 0; i < 30; i++) {
    await stack.call('GET', `/api/m2m/v1/accounts/account-${i}?user=someone-${i}`)
    await stack.call(i % 2 === 0 ? 'PROPFIND' : 'MKCOL', `/api/m2m/v1/devices/${i}`)
  }
  const text = await scrape(stack)
  const series = text.split('\n').filter((line) => line.startsWith('m2m_proxy_'))
  t.ok(series.length < 80, `${series.length} m2m_proxy_ series`)
  for (const secret of [...stack.sim.activeSessionTokens(), stack.sim.currentOAuthToken() ?? '', 'demo-user', 'account-1', 'someone-', '/api/']) {
    t.notOk(text.includes(secret), `no "${secret.slice(0, 12)}…" in the metrics`)
  }
  t.equal(metricValue(text, 'm2m_proxy_requests_total', { method: 'OTHER', status_class: '4xx' }) +
    metricValue(text, 'm2m_proxy_requests_total', { method: 'OTHER', status_class: '2xx' }), 30, 'unusual methods folded into OTHER')
})

t.test('the session gauges are read on the session\'s clock, not the system\'s', async (t) => {
  const clock = new FakeClock()
  const stack = await startStack(t, { clock })
  t.equal((await stack.call('GET', ECHO_PATH)).status, 200)
  clock.advance(90_000)
  const text = await scrape(stack)
  t.equal(metricValue(text, 'm2m_proxy_session_age_seconds'), 90, 'logged in 90 s ago on the injected clock')
  t.equal(metricValue(text, 'm2m_proxy_session_idle_seconds'), 90, 'last used 90 s ago on the injected clock')
})

t.test('M2M_PROXY_LOG_REQUESTS=false: no request lines, every request still counted, other lines kept', async (t) => {
  const stack = await startStack(t, { env: { M2M_PROXY_LOG_REQUESTS: 'false' } })
  stack.sim.expireSessions() // a renewal: a line that is not a request line
  t.equal((await stack.call('GET', ECHO_PATH)).status, 200)
  t.equal((await stack.call('GET', '/not-proxied')).status, 404)
  const text = await scrape(stack)
  t.equal(metricValue(text, 'm2m_proxy_requests_total', { method: 'GET', status_class: '2xx' }), 1)
  t.equal(metricValue(text, 'm2m_proxy_requests_total', { method: 'GET', status_class: '4xx' }), 1)
  const entries = stack.logs.entries()
  t.notOk(entries.some((entry) => entry.msg === 'request'), 'no request line')
  t.ok(entries.some((entry) => entry.msg === 'session renewed'), 'the renewal is logged as before')

  const logged = await startStack(t)
  await logged.call('GET', ECHO_PATH)
  t.equal(logged.logs.entries().filter((entry) => entry.msg === 'request').length, 1, 'on by default: one line')
})
