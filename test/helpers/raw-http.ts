// Sends bytes exactly as given to a listener and collects whatever comes back until the server closes.

import net from 'node:net'

/**
 * `url` gives host and port. The request should say `Connection: close`. The socket is written, not
 * ended: a client that half-closes is treated as gone by Node's HTTP server, as by nginx.
 */
export function rawExchange (url: string, requestText: string | Buffer, timeoutMs = 5000): Promise<string> {
  const { hostname, port } = new URL(url)
  return new Promise((resolve) => {
    const socket = net.connect(Number(port), hostname, () => socket.write(requestText))
    let answer = ''
    socket.setEncoding('latin1')
    socket.on('data', (chunk: string) => { answer += chunk })
    socket.on('close', () => resolve(answer))
    socket.on('error', () => resolve(answer))
    socket.setTimeout(timeoutMs, () => socket.destroy())
  })
}

/** Opens a connection to `url` and writes `requestText`: a client that stays until the test destroys the socket. */
export function sendAndStay (url: string, requestText: string): net.Socket {
  const { hostname, port } = new URL(url)
  const socket = net.connect(Number(port), hostname, () => socket.write(requestText))
  socket.on('error', () => {}) // the test's own destroy(), or the proxy closing it
  return socket
}
