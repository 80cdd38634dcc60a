// Minimal upstream for the benchmark: answers the token and login endpoints and every other request with a small JSON
// body. Checks nothing.
import http from 'node:http'

const body = JSON.stringify({
  hasMoreData: false,
  devices: [{ deviceIds: [{ id: '355270381003193', kind: 'imei' }], state: 'active' }]
})
const token = JSON.stringify({ access_token: 'bench-oauth-token', token_type: 'bearer', expires_in: 3600 })
const session = JSON.stringify({ sessionToken: 'bench-session-token' })

const server = http.createServer((request, response) => {
  request.on('data', () => {})
  request.on('end', () => {
    const payload =
      request.url === '/api/ts/v1/oauth2/token' ? token : request.url === '/api/m2m/v1/session/login' ? session : body
    response.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) })
    response.end(payload)
  })
})
server.keepAliveTimeout = 60_000
server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => {
  process.stdout.write(`${server.address().port}\n`)
})
