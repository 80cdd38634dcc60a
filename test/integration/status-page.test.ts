// The status page (GET /status on the admin listener) in a real browser: headless Chromium (Debian's, driven with
// playwright-core). The shell carries no data and a strict CSP; the token is typed once and kept in sessionStorage;
// the page shows the session, then its end after an admin session/end, with no CSP violation or script error.
// STATUS_PAGE_SCREENSHOT=<file> writes the screenshot docs/observability.md shows.

import t from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { chromium, type Browser } from 'playwright-core'
import { ADMIN_TOKEN, startStack } from '../helpers/stack.js'

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
/** As this machine needs it: no sandbox as root, and no background connections to a network that is not there. */
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync']

t.test('the shell: HTML without data, a strict CSP, open like the probes', async (t) => {
  const stack = await startStack(t)
  const answer = await stack.adminCall('GET', '/status')
  t.equal(answer.status, 200)
  t.match(answer.headers['content-type'], /^text\/html; charset=utf-8/)
  const csp = String(answer.headers['content-security-policy'])
  t.match(csp, /^default-src 'none'; script-src 'sha256-[A-Za-z0-9+/=]+'; style-src 'sha256-[A-Za-z0-9+/=]+'; connect-src 'self'/)
  t.notMatch(csp, /unsafe-inline|unsafe-eval|\*/, 'nothing inline beyond the hashed script and style, no wildcard')
  t.equal(answer.headers['x-frame-options'], 'DENY')
  t.equal(answer.headers['cache-control'], 'no-store')
  t.notMatch(answer.text, /https?:\/\//, 'no external asset')
  const session = (await stack.adminCall('GET', '/admin/session', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json() as {
    sessionTokenFingerprint: string
  }
  t.notMatch(answer.text, session.sessionTokenFingerprint, 'no session data in the shell')
  t.notMatch(answer.text, ADMIN_TOKEN)
  const foreign = await stack.adminCall('GET', '/status', { headers: { host: 'evil.example' } })
  t.equal(foreign.status, 403, 'the Host check applies to it')
  const crossSite = await stack.adminCall('GET', '/status', { headers: { 'sec-fetch-site': 'cross-site' } })
  t.equal(crossSite.status, 403, 'and the cross-site check')
  const events = await stack.adminCall('GET', '/admin/events')
  t.equal(events.status, 401, 'the events need the token')
})

t.test('in headless Chromium: type the token, see the session, see it end', async (t) => {
  if (!fs.existsSync(CHROMIUM)) {
    if (process.env.CI === 'true') t.fail(`no Chromium at ${CHROMIUM}: .ci/run installs Debian's chromium`)
    else t.skip(`no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`, () => {})
    return
  }
  const stack = await startStack(t)
  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
  t.teardown(async () => { await browser.close() })
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } })
  const problems: string[] = []
  page.on('console', (message) => { if (message.type() === 'error') problems.push(message.text()) })
  page.on('pageerror', (error) => { problems.push(error.message) })
  // The wrong token's calls may still be answered after the right one is typed: a 401 is a fault only for the latter.
  const refusedWithToken: string[] = []
  page.on('response', (response) => {
    if (response.status() === 401 && response.request().headers().authorization === `Bearer ${ADMIN_TOKEN}`) {
      refusedWithToken.push(response.url())
    }
  })
  await page.goto(`${stack.proxy.adminUrl}/status`)
  await page.waitForFunction(() => document.getElementById('ready')?.textContent === 'ready')
  t.match(await page.textContent('#message'), /type the admin token/, 'asks for the token')
  t.equal(await page.textContent('#state'), '-', 'nothing shown without it')

  await page.fill('#token', 'a-wrong-token-0123456789abcdef')
  await page.click('button[type=submit]')
  await page.waitForFunction(() => /refused/.test(document.getElementById('message')?.textContent ?? ''))
  t.pass('a wrong token: told it was refused')
  // The refused calls are the browser's only complaints so far (a CSP violation would be one too, at load).
  t.same(problems.filter((problem) => !/status of 401/.test(problem)), [], 'no CSP violation or script error at load')
  t.ok(problems.length > 0, 'the refused calls were seen')
  problems.length = 0

  await page.fill('#token', ADMIN_TOKEN)
  await page.click('button[type=submit]')
  await page.waitForFunction(() => document.getElementById('state')?.textContent === 'active')
  t.equal(await page.inputValue('#token'), '', 'the field is cleared once the token is kept')
  t.equal(await page.evaluate(() => localStorage.length), 0, 'nothing in localStorage')
  t.equal(await page.evaluate(() => sessionStorage.getItem('m2m-session-proxy-admin-token')), ADMIN_TOKEN, 'kept for this tab')
  t.equal(await page.textContent('#headroom'), '2 of 2', 'the whole lockout headroom')
  t.match(await page.textContent('#events'), /login.*success/, 'the start-up login among the recent events')
  t.match(await page.textContent('#replicas'), /active.*yes.*this one/, 'this process as the one replica')

  const ended = await stack.adminCall('POST', '/admin/session/end', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
  t.equal(ended.status, 200)
  await page.waitForFunction(() => document.getElementById('state')?.textContent === 'none', undefined, { timeout: 10_000 })
  t.equal(await page.textContent('#session-age'), 'no session', 'the session\'s end shows')
  await page.waitForFunction(() => (document.getElementById('requests-line')?.getAttribute('points') ?? '') !== '')
  const screenshot = process.env.STATUS_PAGE_SCREENSHOT ?? path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-status-')), 'status.png')
  await page.screenshot({ path: screenshot, fullPage: true })
  t.ok(fs.statSync(screenshot).size > 10_000, 'a screenshot of it')
  t.same(problems.filter((problem) => !/status of 401/.test(problem)), [], 'no CSP violation, no script error')
  t.same(refusedWithToken, [], 'no call with the right token was refused')
})
