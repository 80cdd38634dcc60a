// The floor for a Node proxy (issue 19, item 8): node:http in front of an undici pool, two fixed headers, nothing else.
import http from 'node:http'
import { Pool } from 'undici'

const [upstreamPort, port] = process.argv.slice(2)
const pool = new Pool(`http://127.0.0.1:${upstreamPort}`, { connections: 128 })
const HOP_BY_HOP = ['connection', 'keep-alive', 'transfer-encoding', 'host']
const server = http.createServer(async (request, response) => {
  const headers = {
    ...request.headers,
    authorization: 'Bearer fixed-oauth-token',
    'vz-m2m-token': 'fixed-session-token'
  }
  for (const name of HOP_BY_HOP) delete headers[name]
  try {
    const bodiless = request.method === 'GET' || request.method === 'HEAD'
    const answer = await pool.request({
      path: request.url,
      method: request.method,
      headers,
      body: bodiless ? null : request
    })
    for (const name of HOP_BY_HOP) delete answer.headers[name]
    response.writeHead(answer.statusCode, answer.headers)
    for await (const chunk of answer.body) response.write(chunk)
    response.end()
  } catch {
    response.writeHead(502).end()
  }
})
server.keepAliveTimeout = 60_000
server.listen(Number(port ?? 0), '127.0.0.1', () => {
  process.stdout.write(`${server.address().port}\n`)
})
