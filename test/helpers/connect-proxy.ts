// A minimal forward proxy that only tunnels (CONNECT) to 127.0.0.1, recording what it was asked.

import http from 'node:http'
import net from 'node:net'
import type { Test } from 'tap'

export interface ConnectProxy {
  url: string
  tunnels: Array<{ target: string, authorization: string | undefined }>
}

export async function startConnectProxy (t: Test): Promise<ConnectProxy> {
  const tunnels: ConnectProxy['tunnels'] = []
  const server = http.createServer((_request, response) => {
    response.writeHead(405).end('this proxy only tunnels')
  })
  const sockets = new Set<net.Socket>()
  server.on('connect', (request: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    const target = request.url ?? ''
    tunnels.push({ target, authorization: request.headers['proxy-authorization'] })
    const [host, port] = target.split(':')
    if (host !== '127.0.0.1' || port === undefined) {
      client.end('HTTP/1.1 403 Forbidden\r\n\r\n')
      return
    }
    const upstream = net.connect(Number(port), host, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n')
      upstream.write(head)
      upstream.pipe(client)
      client.pipe(upstream)
    })
    for (const socket of [client, upstream]) {
      sockets.add(socket)
      socket.on('close', () => sockets.delete(socket))
      socket.on('error', () => { client.destroy(); upstream.destroy() })
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => {
    for (const socket of sockets) socket.destroy()
    server.close(() => resolve())
  }))
  return { url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, tunnels }
}
