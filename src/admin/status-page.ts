// GET /status on the admin listener: one self-contained page for an operator without Grafana. The HTML carries no data,
// so it is served without a token; the page asks for the admin token once, keeps it in sessionStorage, and reads the
// authenticated admin routes (session, fleet, events) and the open /metrics and /readyz. No external asset; a strict
// Content-Security-Policy allows only this script and this style, by their hashes, and requests to this listener.

import { createHash } from 'node:crypto'

const STYLE = `
:root { color-scheme: light dark; --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e; --muted: #6e7781; }
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 16px; }
header { display: flex; align-items: center; gap: 16px; flex-wrap: wrap; }
h1 { font-size: 20px; margin: 0; }
h2 { font-size: 15px; margin: 0 0 8px; }
form { margin-left: auto; display: flex; gap: 8px; }
input { width: 22em; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr)); gap: 12px; margin: 16px 0; }
.card { border: 1px solid #8c959f55; border-radius: 6px; padding: 12px; }
.value { font-size: 22px; font-weight: 600; }
.ok { color: var(--ok); } .warn { color: var(--warn); } .bad { color: var(--bad); } .muted { color: var(--muted); }
table { border-collapse: collapse; width: 100%; }
td, th { text-align: left; padding: 3px 8px 3px 0; border-bottom: 1px solid #8c959f33; font-variant-numeric: tabular-nums; }
svg { width: 100%; height: 90px; }
polyline { fill: none; stroke: #0969da; stroke-width: 2; }
#message { min-height: 1.4em; }
`

const SCRIPT = `
'use strict'
const TOKEN_KEY = 'm2m-session-proxy-admin-token'
const $ = (id) => document.getElementById(id)
const series = { requests: [], latency: [] }
let previous

function text (id, value, tone) {
  const element = $(id)
  element.textContent = value
  element.className = 'value' + (tone === undefined ? '' : ' ' + tone)
}

function duration (seconds) {
  if (!Number.isFinite(seconds)) return '-'
  const s = Math.max(0, Math.round(seconds))
  if (s < 120) return s + ' s'
  if (s < 7200) return Math.round(s / 60) + ' min'
  if (s < 172800) return Math.round(s / 3600) + ' h'
  return Math.round(s / 86400) + ' d'
}

const since = (iso) => iso === null || iso === undefined ? NaN : (Date.now() - Date.parse(iso)) / 1000
const until = (iso) => iso === null || iso === undefined ? NaN : (Date.parse(iso) - Date.now()) / 1000

async function admin (path) {
  const token = sessionStorage.getItem(TOKEN_KEY)
  if (token === null) throw new Error('type the admin token above')
  const answer = await fetch(path, { headers: { authorization: 'Bearer ' + token }, cache: 'no-store' })
  if (answer.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY)
    throw new Error('the admin token was refused: type it again')
  }
  if (!answer.ok) throw new Error(path + ' answered ' + answer.status)
  return await answer.json()
}

function showSession (session) {
  const tone = session.state === 'active' ? 'ok' : session.state === 'rejected' ? 'bad' : 'warn'
  text('state', session.state, tone)
  $('state-detail').textContent = session.notReadyReason === null ? 'ready' : 'not ready: ' + session.notReadyReason
  text('session-age', session.loggedInAt === null ? 'no session' : duration(since(session.loggedInAt)))
  $('session-idle').textContent = session.idleExpiresAt === null ? '' : 'idle expiry in ' + duration(until(session.idleExpiresAt))
  text('oauth', session.oauthExpiresAt === null ? 'none' : duration(until(session.oauthExpiresAt)))
  const rejections = Math.max(session.consecutiveLoginFailures, (session.fleet && session.fleet.consecutiveLoginFailures) || 0)
  const left = Math.max(0, session.maxLoginFailures - rejections)
  text('headroom', left + ' of ' + session.maxLoginFailures, left === 0 ? 'bad' : left === 1 ? 'warn' : 'ok')
  $('logins').textContent = session.logins + ' logins, ' + session.renewals + ' renewals, ' + session.oauthFetches + ' OAuth fetches'
  const password = session.password || {}
  text('password', duration(password.ageSeconds))
  $('password-detail').textContent = password.rotationDays > 0 ? 'rotation every ' + password.rotationDays + ' d' : 'scheduled rotation off'
}

function showFleet (fleet) {
  const body = $('replicas')
  body.replaceChildren()
  for (const replica of fleet.replicas || []) {
    const row = document.createElement('tr')
    const marks = [replica.self ? 'this one' : '', replica.id === fleet.lockHolder ? 'holds the login lock' : '', replica.stale ? 'STALE' : '']
    for (const cell of [replica.id, replica.state, replica.ready ? 'yes' : 'no: ' + replica.notReadyReason,
      replica.generation === null ? '-' : String(replica.generation), duration(since(replica.lastSeenAt)) + ' ago',
      marks.filter(Boolean).join(', ')]) {
      const td = document.createElement('td')
      td.textContent = cell
      row.append(td)
    }
    body.append(row)
  }
  $('fleet-mode').textContent = fleet.mode === 'fleet' ? 'fleet mode' : 'single process'
}

function showEvents (events) {
  const body = $('events')
  body.replaceChildren()
  for (const event of events.slice(0, 15)) {
    const row = document.createElement('tr')
    const cause = event.cause === undefined ? '' : [event.cause.status, event.cause.errorCode, event.cause.networkError,
      event.cause.tlsError, event.cause.reason].filter((part) => part !== undefined).join(' ')
    for (const cell of [new Date(event.at).toLocaleTimeString(), event.type, event.outcome || event.reason || '', cause]) {
      const td = document.createElement('td')
      td.textContent = cell
      row.append(td)
    }
    body.append(row)
  }
}

/** Sums a counter's series, or reads a histogram's quantile, from the Prometheus text. */
function parseMetrics (textBody) {
  let requests = 0
  const buckets = new Map()
  for (const line of textBody.split('\\n')) {
    if (line.startsWith('m2m_proxy_requests_total{')) requests += Number(line.split(' ').pop())
    const bucket = /^m2m_proxy_upstream_duration_seconds_bucket\\{.*le="([^"]+)".*\\} (\\S+)$/.exec(line)
    if (bucket !== null) buckets.set(bucket[1], (buckets.get(bucket[1]) || 0) + Number(bucket[2]))
  }
  return { at: Date.now(), requests, buckets }
}

function p95 (now, before) {
  const bounds = [...now.buckets.keys()].filter((le) => le !== '+Inf').map(Number).sort((a, b) => a - b)
  const count = (le) => (now.buckets.get(le) || 0) - ((before && before.buckets.get(le)) || 0)
  const total = count('+Inf')
  if (total <= 0) return 0
  for (const bound of bounds) if (count(String(bound)) >= 0.95 * total) return bound
  return bounds[bounds.length - 1] || 0
}

function chart (id, values) {
  const max = Math.max(...values, 1e-9)
  const points = values.map((value, i) => (i * 300 / Math.max(values.length - 1, 1)).toFixed(1) + ',' + (88 - value / max * 84).toFixed(1))
  $(id).setAttribute('points', points.join(' '))
}

async function showMetrics () {
  const answer = await fetch('/metrics', { cache: 'no-store' })
  const now = parseMetrics(await answer.text())
  if (previous !== undefined) {
    const seconds = (now.at - previous.at) / 1000
    series.requests.push(Math.max(0, (now.requests - previous.requests) / seconds))
    series.latency.push(p95(now, previous))
    for (const values of Object.values(series)) if (values.length > 60) values.shift()
    chart('requests-line', series.requests)
    chart('latency-line', series.latency)
    $('requests-now').textContent = series.requests[series.requests.length - 1].toFixed(1) + ' req/s'
    $('latency-now').textContent = 'p95 ' + series.latency[series.latency.length - 1] + ' s'
  }
  previous = now
}

async function refresh () {
  try {
    const ready = await (await fetch('/readyz', { cache: 'no-store' })).json()
    $('ready').textContent = ready.ready ? 'ready' : 'not ready: ' + ready.reason
    $('ready').className = ready.ready ? 'ok' : 'bad'
    await showMetrics()
    const [session, fleet, events] = await Promise.all([admin('/admin/session'), admin('/admin/fleet'), admin('/admin/events')])
    showSession(session)
    showFleet(fleet)
    showEvents(events.events)
    $('message').textContent = 'updated ' + new Date().toLocaleTimeString()
    $('message').className = 'muted'
  } catch (error) {
    $('message').textContent = error.message
    $('message').className = 'bad'
  }
}

$('token-form').addEventListener('submit', (event) => {
  event.preventDefault()
  sessionStorage.setItem(TOKEN_KEY, $('token').value)
  $('token').value = ''
  void refresh()
})
void refresh()
setInterval(refresh, 2000)
`

const hashOf = (source: string): string => `'sha256-${createHash('sha256').update(source, 'utf8').digest('base64')}'`

/** Only this page's own script and style, by hash; requests to this listener only; nothing framed, posted or loaded. */
export const STATUS_PAGE_CSP = [
  "default-src 'none'",
  `script-src ${hashOf(SCRIPT)}`,
  `style-src ${hashOf(STYLE)}`,
  "connect-src 'self'",
  "img-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'"
].join('; ')

export function statusPage (version: string): string {
  const escapedVersion = version.replace(/[^0-9A-Za-z.+-]/g, '')
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>m2m-session-proxy status</title>
<style>${STYLE}</style>
</head>
<body>
<header>
  <h1>m2m-session-proxy <span class="muted">${escapedVersion}</span></h1>
  <span id="ready" class="muted">...</span>
  <form id="token-form" autocomplete="off">
    <input id="token" type="password" placeholder="admin token (kept in this tab only)" aria-label="admin token">
    <button type="submit">Show</button>
  </form>
</header>
<p id="message" class="muted">type the admin token to see the session</p>
<section class="grid">
  <div class="card"><h2>Session</h2><div id="state" class="value">-</div><div id="state-detail" class="muted"></div></div>
  <div class="card"><h2>Session age</h2><div id="session-age" class="value">-</div><div id="session-idle" class="muted"></div></div>
  <div class="card"><h2>OAuth token retires in</h2><div id="oauth" class="value">-</div></div>
  <div class="card"><h2>Lockout headroom</h2><div id="headroom" class="value">-</div><div id="logins" class="muted"></div></div>
  <div class="card"><h2>Password age</h2><div id="password" class="value">-</div><div id="password-detail" class="muted"></div></div>
  <div class="card"><h2>Requests</h2><svg viewBox="0 0 300 90" role="img" aria-label="requests per second"><polyline id="requests-line"></polyline></svg><div id="requests-now" class="muted"></div></div>
  <div class="card"><h2>ThingSpace latency</h2><svg viewBox="0 0 300 90" role="img" aria-label="upstream p95 latency"><polyline id="latency-line"></polyline></svg><div id="latency-now" class="muted"></div></div>
</section>
<section class="card"><h2>Recent session events</h2>
  <table><thead><tr><th>time</th><th>event</th><th>outcome</th><th>cause</th></tr></thead><tbody id="events"></tbody></table>
</section>
<section class="card"><h2>Replicas <span id="fleet-mode" class="muted"></span></h2>
  <table><thead><tr><th>replica</th><th>state</th><th>ready</th><th>generation</th><th>last seen</th><th></th></tr></thead><tbody id="replicas"></tbody></table>
</section>
<script>${SCRIPT}</script>
</body>
</html>
`
}
