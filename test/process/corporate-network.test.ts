// Corporate networks: egress through an HTTP CONNECT proxy (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) and extra CAs
// (NODE_EXTRA_CA_CERTS).

import t, { type Test } from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { buildSimulator, DEMO_CREDENTIALS } from '../../src/simulator/app.js'
import { ECHO_PATH, startStack } from '../helpers/stack.js'
import { startConnectProxy } from '../helpers/connect-proxy.js'
import { startProxyProcess } from '../helpers/process.js'
import { generateSelfSigned } from '../helpers/tls.js'

t.test(
  'HTTP_PROXY: token, login and data all go through the CONNECT proxy; its password is never logged',
  async (t) => {
    const egress = await startConnectProxy(t)
    const proxyWithAuth = egress.url.replace('http://', 'http://corp-user:corp-pass-123@')
    const stack = await startStack(t, {
      env: { HTTP_PROXY: proxyWithAuth, HTTPS_PROXY: proxyWithAuth, M2M_PROXY_LOG_LEVEL: 'trace' }
    })
    const answer = await stack.call('GET', ECHO_PATH)
    t.equal(answer.status, 200)
    const simPort = new URL(stack.simUrl).port
    t.ok(egress.tunnels.length >= 1, `${egress.tunnels.length} tunnel(s) opened`)
    t.ok(
      egress.tunnels.every((tunnel) => tunnel.target === `127.0.0.1:${simPort}`),
      'to the upstream'
    )
    t.equal(
      egress.tunnels[0]?.authorization,
      `Basic ${Buffer.from('corp-user:corp-pass-123').toString('base64')}`,
      'proxy credentials sent to the proxy'
    )
    t.equal(stack.sim.stats.logins, 1)
    t.notOk(stack.logs.text.includes('corp-pass-123'), 'the egress password is not logged')
    t.ok(
      stack.logs.entries().some((entry) => entry.msg === 'listening' && entry.egressProxy === egress.url),
      'the egress proxy is logged without credentials'
    )
  }
)

t.test('NO_PROXY bypasses the egress proxy', async (t) => {
  const egress = await startConnectProxy(t)
  const stack = await startStack(t, { env: { HTTP_PROXY: egress.url, NO_PROXY: 'localhost,127.0.0.1' } })
  t.equal((await stack.call('GET', ECHO_PATH)).status, 200)
  t.equal(egress.tunnels.length, 0)
})

t.test('an unreachable egress proxy gives clear 503s, not a crash, and the log names it', async (t) => {
  const stack = await startStack(t, { env: { HTTP_PROXY: 'http://proxy-user:proxy-secret@127.0.0.1:9' } })
  const answer = await stack.call('GET', ECHO_PATH)
  t.equal(answer.status, 503)
  t.equal(stack.sim.stats.tokenRequests, 0)
  const failed = stack.logs.entries().find((entry) => String(entry.msg).startsWith('OAuth token fetch failed'))
  t.match(
    failed?.msg,
    /no answer from the egress proxy at http:\/\/127\.0\.0\.1:9 \(HTTPS_PROXY, HTTP_PROXY\) or from ThingSpace at .* behind it \(ECONNREFUSED\)/,
    'the egress proxy is named, not only ThingSpace'
  )
  t.notOk(stack.logs.text.includes('proxy-secret'), "never the egress proxy's password")
})

async function startHttpsSimulator (
  t: Test
): Promise<{ url: string; certFile: string; sim: ReturnType<typeof buildSimulator> }> {
  const pair = generateSelfSigned(t)
  const sim = buildSimulator({ ...DEMO_CREDENTIALS, https: { key: pair.key, cert: pair.cert } })
  await sim.app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => sim.app.close())
  const address = sim.app.server.address()
  return {
    url: `https://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`,
    certFile: pair.certFile,
    sim
  }
}

t.test('NODE_EXTRA_CA_CERTS: a private CA is trusted; without it the same upstream is refused', async (t) => {
  const { url, certFile, sim } = await startHttpsSimulator(t)
  const dir = t.testdir({ 'credentials.json': JSON.stringify(DEMO_CREDENTIALS) })
  fs.copyFileSync(certFile, path.join(dir, 'corporate-ca.pem'))
  const base = { M2M_PROXY_UPSTREAM: url, M2M_PROXY_CREDENTIALS_FILE: 'credentials.json' }

  const untrusted = await startProxyProcess(base, dir)
  t.teardown(() => {
    untrusted.child.kill('SIGKILL')
  })
  const failure = await untrusted.waitFor(
    (line) => typeof line.msg === 'string' && (line.msg.includes('OAuth') || line.msg.includes('login'))
  )
  t.notMatch(String(failure.msg), /logged in/, 'verification on: no login without the CA')
  t.equal((await fetch(`${untrusted.proxyUrl}${ECHO_PATH}`)).status, 503)
  untrusted.child.kill('SIGKILL')
  t.equal(sim.stats.logins, 0)

  const trusted = await startProxyProcess({ ...base, NODE_EXTRA_CA_CERTS: path.join(dir, 'corporate-ca.pem') }, dir)
  t.teardown(() => {
    trusted.child.kill('SIGKILL')
  })
  await trusted.waitFor((line) => line.msg === 'logged in to ThingSpace')
  const answer = await fetch(`${trusted.proxyUrl}${ECHO_PATH}`)
  t.equal(answer.status, 200, 'trusted through the extra CA')
  t.equal(sim.stats.logins, 1)
})

t.test('HTTPS_PROXY to an HTTPS upstream: TLS inside the tunnel is verified against the extra CA', async (t) => {
  const { url, certFile, sim } = await startHttpsSimulator(t)
  const egress = await startConnectProxy(t)
  const dir = t.testdir({ 'credentials.json': JSON.stringify(DEMO_CREDENTIALS) })
  const proxy = await startProxyProcess(
    {
      M2M_PROXY_UPSTREAM: url,
      M2M_PROXY_CREDENTIALS_FILE: 'credentials.json',
      HTTPS_PROXY: egress.url,
      NODE_EXTRA_CA_CERTS: certFile
    },
    dir
  )
  t.teardown(() => {
    proxy.child.kill('SIGKILL')
  })
  await proxy.waitFor((line) => line.msg === 'logged in to ThingSpace')
  t.equal((await fetch(`${proxy.proxyUrl}${ECHO_PATH}`)).status, 200)
  t.ok(egress.tunnels.length >= 1, 'through the tunnel')
  t.equal(sim.stats.logins, 1)
})
