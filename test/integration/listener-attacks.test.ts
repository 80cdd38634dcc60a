// Both listeners under attack, over raw sockets: admin paths spelled every way, stalled requests, too many connections,
// foreign Host and Origin, CONNECT.

import t from 'tap'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { rawExchange } from '../helpers/raw-http.js'
import { metricValue } from '../helpers/metrics.js'
import { ADMIN_TOKEN, startStack, type Stack } from '../helpers/stack.js'

const ADMIN_ROUTES: Array<[string, string]> = [
  ['POST', '/admin/password/rotate'],
  ['POST', '/admin/session/end'],
  ['POST', '/admin/session/start'],
  ['POST', '/admin/credentials/reload'],
  ['GET', '/admin/session']
]

/** Every spelling of `route` that some router, proxy or servlet container might take for it. */
function spellingsOf (route: string, port: number): string[] {
  const rest = route.slice('/admin'.length) // "/password/rotate"
  const [, second = '', ...tail] = rest.split('/')
  const encodedLater = `/admin/%${second.charCodeAt(0).toString(16)}${second.slice(1)}${tail.map((segment) => `/${segment}`).join('')}`
  return [
    route,
    `/%61dmin${rest}`,
    `/adm%69n${rest}`,
    `/%2561dmin${rest}`,
    encodedLater,
    `http://127.0.0.1:${port}${route}`,
    `http://127.0.0.1${route}`,
    `HTTP://localhost:${port}${route}`,
    `http://attacker.example${route}`,
    `/./admin${rest}`,
    `/x/../admin${rest}`,
    `/admin/.${rest}`,
    `//admin${rest}`,
    `/admin%2f${rest.slice(1)}`,
    `/admin%2F${rest.slice(1)}`,
    `/ADMIN${rest}`,
    `/Admin${rest}`,
    route.toUpperCase(),
    `/admin/${rest.slice(1).replace('/', '//')}`,
    `${route}/`,
    `${route};x`,
    `/admin;x${rest}`,
    `${route}?x=1`,
    `${route}#x`,
    `${route}%00`,
    `/admin\\${rest.slice(1)}`
  ]
}

function readCredentials (stack: Stack): string {
  return fs.readFileSync(path.join(stack.dir, 'credentials.json'), 'utf8')
}

function statusOf (answer: string): number {
  return Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0)
}

t.test('admin routes: no spelling reaches a handler without the token; every call is audited', async (t) => {
  const stack = await startStack(t)
  const adminPort = Number(new URL(stack.proxy.adminUrl).port)
  const credentialsBefore = readCredentials(stack)
  const requestIds: string[] = []
  for (const [method, route] of ADMIN_ROUTES) {
    for (const target of spellingsOf(route, adminPort)) {
      const answer = await rawExchange(
        stack.proxy.adminUrl,
        `${method} ${target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`
      )
      const status = statusOf(answer)
      const requestId = /\r\nx-request-id: (\S+)\r\n/i.exec(answer)?.[1]
      // Without an id, Node's parser refused the target before any request existed (raw 400).
      if (requestId === undefined) {
        t.match(
          answer,
          /^HTTP\/1\.1 400 [^]*"errorCode":"Proxy\.BadRequest"/,
          `${method} ${target}: refused by the parser`
        )
      } else requestIds.push(requestId)
      // 400: refused target or Node's parser; 401: the admin routes' own hook; 404: no route.
      t.ok([400, 401, 404].includes(status), `${method} ${target} → ${status}`)
      t.notMatch(
        answer,
        /"rotated"|"ended"|"sessionTokenFingerprint"|"reloaded"/,
        `${method} ${target}: no handler answered`
      )
    }
  }
  t.equal(stack.sim.stats.passwordResets, 0, 'no password reset upstream')
  t.equal(stack.sim.stats.logouts, 0, 'no logout upstream')
  t.equal(stack.sim.stats.logins, 1, 'no login but the start-up one')
  t.equal(readCredentials(stack), credentialsBefore, 'credentials file unchanged')
  await sleep(50) // the last audit line is written after its answer
  const audits = stack.logs.entries().filter((entry) => entry.audit === true)
  const auditedIds = new Set(audits.map((entry) => entry.reqId))
  t.ok(requestIds.length >= 20 * ADMIN_ROUTES.length, `${requestIds.length} calls parsed`)
  t.same(
    requestIds.filter((id) => !auditedIds.has(id)),
    [],
    'every call has its audit line'
  )
  t.ok(
    audits.every(
      (entry) => typeof entry.status === 'number' && typeof entry.route === 'string' && entry.caller === '127.0.0.1'
    )
  )
  t.ok(
    audits.some(
      (entry) => entry.route === `http://127.0.0.1:${adminPort}/admin/password/rotate` && entry.status === 400
    ),
    'absolute-form refused and audited'
  )
  t.ok(
    audits.some((entry) => entry.route === '/%61dmin/password/rotate' && entry.status === 401),
    'encoded spelling refused by the admin hook and audited'
  )

  // With the token, the same encoded spelling is the same route: it works.
  const rotated = await stack.adminCall('POST', '/%61dmin/session/start', {
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` }
  })
  t.equal(rotated.status, 200, 'the router decodes: with the token an encoded spelling reaches the route')
})

t.test('a stalled request is answered 408 and closed, on each listener; headers too', async (t) => {
  const stack = await startStack(t, { env: { M2M_PROXY_REQUEST_TIMEOUT_MS: '400' } })
  const stalls: Array<[string, string, string]> = [
    [
      'proxy',
      stack.proxy.proxyUrl,
      'POST /api/m2m/v1/devices/actions/list HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n{"accountName":'
    ],
    [
      'admin',
      stack.proxy.adminUrl,
      `POST /admin/session/start HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${ADMIN_TOKEN}\r\nContent-Length: 100\r\n\r\n{"a":`
    ],
    [
      'proxy headers',
      stack.proxy.proxyUrl,
      'GET /api/m2m/v1/accounts/0000123456-00001 HTTP/1.1\r\nHost: localhost\r\nX-Slow: '
    ],
    ['admin headers', stack.proxy.adminUrl, 'GET /healthz HTTP/1.1\r\nHost: loc']
  ]
  const dataRequestsBefore = stack.sim.stats.dataRequests
  for (const [listener, url, text] of stalls) {
    const startedAt = performance.now()
    const answer = await rawExchange(url, text, 10_000)
    const elapsedMs = performance.now() - startedAt
    t.equal(statusOf(answer), 408, `${listener}: 408`)
    t.match(answer, /"errorCode":"Proxy\.RequestTimeout"/, `${listener}: in the Proxy.* shape`)
    t.ok(elapsedMs >= 350 && elapsedMs < 5000, `${listener}: closed after ${Math.round(elapsedMs)} ms`)
  }
  t.equal(stack.sim.stats.dataRequests, dataRequestsBefore, 'nothing forwarded')
  t.equal(stack.sim.stats.logins, 1, 'the admin route never ran')
  const healthy = await stack.adminCall('GET', '/healthz')
  t.equal(healthy.status, 200, 'still serving')
})

/** Opens `count` connections that send half a request and then nothing. */
async function openStalledConnections (url: string, count: number): Promise<net.Socket[]> {
  const { hostname, port } = new URL(url)
  return await Promise.all(
    Array.from(
      { length: count },
      async () =>
        await new Promise<net.Socket>((resolve) => {
          const socket = net.connect(Number(port), hostname, () => {
            socket.write('GET /healthz HTTP/1.1\r\nHost: local')
            resolve(socket)
          })
          socket.on('error', () => {})
        })
    )
  )
}

async function eventually (check: () => Promise<boolean>, timeoutMs = 3000): Promise<boolean> {
  const deadline = performance.now() + timeoutMs
  while (performance.now() < deadline) {
    if (await check()) return true
    await sleep(50)
  }
  return false
}

t.test('a cap on concurrent connections per listener; served again once they are gone', async (t) => {
  const stack = await startStack(t, { env: { M2M_PROXY_MAX_CONNECTIONS: '3', M2M_PROXY_ADMIN_MAX_CONNECTIONS: '2' } })
  for (const [listener, url, max, setting] of [
    ['proxy', stack.proxy.proxyUrl, 3, 'M2M_PROXY_MAX_CONNECTIONS'],
    ['admin', stack.proxy.adminUrl, 2, 'M2M_PROXY_ADMIN_MAX_CONNECTIONS']
  ] as const) {
    const request =
      listener === 'proxy'
        ? 'GET /api/m2m/v1/accounts/0000123456-00001 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'
        : 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'
    const held = await openStalledConnections(url, max)
    await sleep(100) // the server has accepted them
    const refused = await rawExchange(url, request, 3000)
    t.equal(refused, '', `${listener}: connection ${max + 1} closed without an answer`)
    for (const socket of held) socket.destroy()
    t.ok(
      await eventually(async () => statusOf(await rawExchange(url, request, 3000)) === 200),
      `${listener}: served again`
    )
    t.ok(
      stack.logs
        .entries()
        .some(
          (entry) =>
            entry.listener === listener &&
            typeof entry.msg === 'string' &&
            entry.msg.includes(setting) &&
            entry.maxConnections === max
        ),
      `${listener}: the refusal is logged with the setting's name`
    )
  }
})

t.test('Host allow-list and cross-site refusals on both listeners, before any route runs', async (t) => {
  const stack = await startStack(t, { env: { M2M_PROXY_ALLOWED_HOSTS: 'm2m-session-proxy, Proxy.Internal' } })
  const proxyPort = new URL(stack.proxy.proxyUrl).port
  const requests: Array<[string, string, string]> = [
    [
      'proxy',
      stack.proxy.proxyUrl,
      'POST /api/m2m/v1/devices/actions/list HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 34\r\n%HEADERS%Connection: close\r\n\r\n{"accountName":"0000123456-00001"}'
    ],
    [
      'admin',
      stack.proxy.adminUrl,
      `GET /admin/session HTTP/1.1\r\nAuthorization: Bearer ${ADMIN_TOKEN}\r\n%HEADERS%Connection: close\r\n\r\n`
    ],
    ['probe', stack.proxy.adminUrl, 'GET /readyz HTTP/1.1\r\n%HEADERS%Connection: close\r\n\r\n']
  ]
  const refused: Array<[string, string]> = [
    ['Host: attacker.example\r\n', 'Proxy.Forbidden.HostNotAllowed'],
    [`Host: attacker.example:${proxyPort}\r\n`, 'Proxy.Forbidden.HostNotAllowed'],
    ['Host: localhost.attacker.example\r\n', 'Proxy.Forbidden.HostNotAllowed'],
    ['Host: localhost\r\nOrigin: http://attacker.example\r\n', 'Proxy.Forbidden.CrossSiteRequest'],
    ['Host: localhost\r\nOrigin: null\r\n', 'Proxy.Forbidden.CrossSiteRequest'],
    ['Host: localhost\r\nSec-Fetch-Site: cross-site\r\n', 'Proxy.Forbidden.CrossSiteRequest']
  ]
  const allowed = [
    'Host: localhost\r\n',
    `Host: localhost:${proxyPort}\r\n`,
    'Host: 127.0.0.1\r\n',
    'Host: 10.20.30.40:9090\r\n',
    'Host: [::1]:8080\r\n',
    'Host: m2m-session-proxy:8080\r\n',
    'Host: proxy.internal\r\n',
    'Host: localhost\r\nOrigin: http://localhost:3000\r\nSec-Fetch-Site: same-site\r\n'
  ]
  const dataRequestsBefore = stack.sim.stats.dataRequests
  for (const [listener, url, template] of requests) {
    for (const [headers, code] of refused) {
      const answer = await rawExchange(url, template.replace('%HEADERS%', headers))
      t.equal(statusOf(answer), 403, `${listener} ${JSON.stringify(headers)} → 403`)
      t.match(answer, new RegExp(`"errorCode":"${code.replace(/\./g, '\\.')}"`))
    }
  }
  t.equal(stack.sim.stats.dataRequests, dataRequestsBefore, 'nothing forwarded')
  for (const [listener, url, template] of requests) {
    for (const headers of allowed) {
      const answer = await rawExchange(url, template.replace('%HEADERS%', headers))
      t.equal(statusOf(answer), 200, `${listener} ${JSON.stringify(headers)} → 200`)
    }
  }
  t.equal(stack.sim.stats.dataRequests, dataRequestsBefore + allowed.length, 'the allowed ones were forwarded')
  await sleep(50)
  const logged = stack.logs.entries()
  t.ok(
    logged.some((entry) => entry.listener === 'proxy' && entry.msg === 'request' && entry.status === 403),
    'refusals on the proxy listener get their request line'
  )
  t.ok(
    logged.some((entry) => entry.audit === true && entry.route === '/readyz' && entry.status === 403),
    'a probe refused by the Host check is audited'
  )
  t.notOk(
    logged.some((entry) => entry.audit === true && entry.route === '/readyz' && entry.status === 200),
    'probes that reached their route are not'
  )
})

t.test('CONNECT is answered 405 in the Proxy.* shape on both listeners, not left hanging', async (t) => {
  const stack = await startStack(t)
  for (const url of [stack.proxy.proxyUrl, stack.proxy.adminUrl]) {
    const startedAt = performance.now()
    const answer = await rawExchange(
      url,
      'CONNECT thingspace.verizon.com:443 HTTP/1.1\r\nHost: thingspace.verizon.com:443\r\n\r\n',
      10_000
    )
    t.equal(statusOf(answer), 405, url)
    t.match(answer, /"errorCode":"Proxy\.MethodNotAllowed"/)
    t.ok(performance.now() - startedAt < 5000, 'closed at once')
  }
  t.equal(
    stack.sim.stats.requestsReceived,
    stack.sim.stats.tokenRequests + stack.sim.stats.logins,
    'nothing but the start-up login reached upstream'
  )
  const metrics = await stack.adminCall('GET', '/metrics')
  t.equal(
    metricValue(metrics.text, 'm2m_proxy_requests_total', { method: 'OTHER', status_class: '4xx' }),
    1,
    'counted on the proxy listener'
  )
})

/** A connection that sends headers and part of a declared body, then nothing. */
async function stallUpload (url: string): Promise<net.Socket> {
  const { hostname, port } = new URL(url)
  return await new Promise((resolve) => {
    const socket = net.connect(Number(port), hostname, () => {
      socket.write(
        'POST /api/m2m/v1/devices/actions/list HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"accountName":'
      )
      resolve(socket)
    })
    socket.on('error', () => {})
  })
}

t.test('a stalled upload holds neither an immediate close nor a shutdown past its grace', async (t) => {
  // A closing Node server stops checking request timeouts: the stalled upload must be cut by the proxy itself.
  t.test('close()', async (t) => {
    const stack = await startStack(t)
    const socket = await stallUpload(stack.proxy.proxyUrl)
    t.teardown(() => {
      socket.destroy()
    })
    await sleep(100)
    const startedAt = performance.now()
    const closed = await Promise.race([stack.stopProxy().then(() => 'closed'), sleep(5000, 'still closing', { ref: false })])
    t.equal(closed, 'closed', `closed after ${Math.round(performance.now() - startedAt)} ms (request timeout 30 s)`)
  })
  t.test('shutdown()', async (t) => {
    const stack = await startStack(t, { env: { M2M_PROXY_SHUTDOWN_GRACE_MS: '300' } })
    const socket = await stallUpload(stack.proxy.proxyUrl)
    t.teardown(() => {
      socket.destroy()
    })
    await sleep(100)
    const startedAt = performance.now()
    const done = await Promise.race([stack.proxy.app.shutdown().then(() => 'done'), sleep(5000, 'still draining', { ref: false })])
    t.equal(
      done,
      'done',
      `shut down after ${Math.round(performance.now() - startedAt)} ms (grace 300 ms, request timeout 30 s)`
    )
  })
})

/** Opens `count` connections that send nothing at all. */
async function openIdleConnections (url: string, count: number): Promise<net.Socket[]> {
  const { hostname, port } = new URL(url)
  return await Promise.all(
    Array.from(
      { length: count },
      async () =>
        await new Promise<net.Socket>((resolve) => {
          const socket = net.connect(Number(port), hostname, () => resolve(socket))
          socket.on('error', () => {})
        })
    )
  )
}

// Issue 18, item 4: 32 idle connections to the admin listener (its default cap), reopened as they were closed, made
// every probe fail: kubelet would restart the container every 30 s. With default settings, each listener held by 64
// idle or stalled connections (and reopened ones) still answers its probes.
t.test(
  'probes are answered while each listener is held by 64 idle or stalled connections, reopened as they close',
  async (t) => {
    const stack = await startStack(t)
    const attackers: net.Socket[] = []
    let stopped = false
    const hold = async (url: string): Promise<void> => {
      const sockets = [...(await openIdleConnections(url, 32)), ...(await openStalledConnections(url, 32))]
      attackers.push(...sockets)
      for (const socket of sockets) {
        // Reopened as soon as the proxy closes it, as an attacker would.
        socket.once('close', () => {
          if (!stopped) {
            setTimeout(() => {
              void hold1(url)
            }, 50)
          }
        })
      }
    }
    const hold1 = async (url: string): Promise<void> => {
      const [socket] = await openIdleConnections(url, 1)
      if (socket === undefined) return
      attackers.push(socket)
      socket.once('close', () => {
        if (!stopped) {
          setTimeout(() => {
            void hold1(url)
          }, 50)
        }
      })
    }
    t.teardown(() => {
      stopped = true
      for (const socket of attackers) socket.destroy()
    })
    await hold(stack.proxy.adminUrl)
    await hold(stack.proxy.proxyUrl)
    await sleep(1200) // the held connections have been idle for over a second
    for (const path of ['/healthz', '/readyz', '/metrics']) {
      const startedAt = performance.now()
      const answer = await rawExchange(
        stack.proxy.adminUrl,
        `GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`,
        5000
      )
      const elapsedMs = Math.round(performance.now() - startedAt)
      t.equal(statusOf(answer), 200, `${path}: 200 after ${elapsedMs} ms`)
    }
    const proxied = await rawExchange(
      stack.proxy.proxyUrl,
      'GET /api/m2m/v1/simulator/echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n',
      5000
    )
    t.equal(statusOf(proxied), 200, 'a client of the proxy listener is served too')
  }
)

t.test(
  'at the connection cap, a new connection closes the oldest one idle for a second instead of being refused; said in the log',
  async (t) => {
    const stack = await startStack(t, { env: { M2M_PROXY_ADMIN_MAX_CONNECTIONS: '4' } })
    const idle = await openIdleConnections(stack.proxy.adminUrl, 4)
    const closed = idle.map(
      (socket) =>
        new Promise<boolean>((resolve) => {
          socket.resume()
          socket.once('close', () => resolve(true))
        })
    )
    await sleep(1200)
    const answer = await rawExchange(
      stack.proxy.adminUrl,
      'GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n',
      3000
    )
    t.equal(statusOf(answer), 200, 'the probe is served')
    t.equal(
      await Promise.race([closed[0] as Promise<boolean>, sleep(1000, false, { ref: false })]),
      true,
      'the oldest idle connection made room'
    )
    t.ok(
      stack.logs
        .entries()
        .some(
          (entry) =>
            typeof entry.msg === 'string' &&
            entry.msg.startsWith('idle connections closed to make room: M2M_PROXY_ADMIN_MAX_CONNECTIONS (4)')
        ),
      'said in the log'
    )
    for (const socket of idle) socket.destroy()
  }
)

t.test(
  'a connection that sends nothing is closed after M2M_PROXY_IDLE_CONNECTION_TIMEOUT_MS, not the request timeout',
  async (t) => {
    const stack = await startStack(t, { env: { M2M_PROXY_IDLE_CONNECTION_TIMEOUT_MS: '500' } })
    for (const url of [stack.proxy.proxyUrl, stack.proxy.adminUrl]) {
      const [socket] = await openIdleConnections(url, 1)
      socket?.resume() // read what the proxy sends (its 408), so that its close is seen
      const startedAt = performance.now()
      const closedAfter = await new Promise<number>((resolve) =>
        socket?.once('close', () => resolve(performance.now() - startedAt))
      )
      t.ok(
        closedAfter >= 400 && closedAfter < 5000,
        `${url}: closed after ${Math.round(closedAfter)} ms (the request timeout is 30 s)`
      )
    }
    t.equal((await stack.adminCall('GET', '/healthz')).status, 200)
  }
)
