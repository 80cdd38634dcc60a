// What a Node user would write instead: @fastify/http-proxy injecting two fixed headers, no auth logic, no logging.
import Fastify from 'fastify'
import proxy from '@fastify/http-proxy'

const [upstreamPort, port] = process.argv.slice(2)
const app = Fastify({ logger: false })
await app.register(proxy, {
  upstream: `http://127.0.0.1:${upstreamPort}`,
  prefix: '/api/m2m',
  rewritePrefix: '/api/m2m',
  replyOptions: {
    rewriteRequestHeaders: (_request, headers) => ({ ...headers, authorization: 'Bearer fixed-oauth-token', 'vz-m2m-token': 'fixed-session-token' })
  }
})
await app.listen({ host: '127.0.0.1', port: Number(port ?? 0) })
process.stdout.write(`${app.server.address().port}\n`)
