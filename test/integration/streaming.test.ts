// A 20 MB answer streams through: the client gets it whole, and the proxy never holds it all at once.

import t, { type Test } from 'tap'
import http from 'node:http'
import net from 'node:net'
import { createHash } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { startStack } from '../helpers/stack.js'
import { startStandInUpstream } from '../helpers/stand-in-upstream.js'

const MiB = 1024 * 1024
const CHUNK_BYTES = 64 * 1024

/** A bare upstream: token and login answered, and a large body written as fast as the socket takes it. */
async function startStreamingUpstream (
  t: Test,
  totalBytes: number
): Promise<{ url: string; bytesWritten: () => number }> {
  let written = 0
  const chunk = Buffer.alloc(CHUNK_BYTES, 7)
  const upstream = await startStandInUpstream(t, (_request, _body, response) => {
    response.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(totalBytes) })
    const pump = (): void => {
      while (written < totalBytes) {
        written += CHUNK_BYTES
        if (!response.write(chunk)) {
          response.once('drain', pump)
          return
        }
      }
      response.end()
    }
    pump()
  })
  return { url: upstream.url, bytesWritten: () => written }
}

async function download (
  t: Test,
  totalBytes: number
): Promise<{ bytes: number; sha: string; writtenWhilePaused: number }> {
  const upstream = await startStreamingUpstream(t, totalBytes)
  const stack = await startStack(t, { upstream: upstream.url, env: { M2M_PROXY_LOG_LEVEL: 'info' } })
  const url = new URL(stack.proxy.proxyUrl + '/api/m2m/v1/large-download')
  return await new Promise((resolve, reject) => {
    http
      .get(url, (response) => {
        const hash = createHash('sha256')
        let bytes = 0
        let writtenWhilePaused = -1
        response.on('data', (data: Buffer) => {
          if (bytes === 0) {
            // Stop reading for a while: a streaming proxy stops pulling from upstream too.
            response.pause()
            sleep(400).then(() => {
              writtenWhilePaused = upstream.bytesWritten()
              response.resume()
            }, reject)
          }
          bytes += data.length
          hash.update(data)
        })
        response.on('end', () => resolve({ bytes, sha: hash.digest('hex'), writtenWhilePaused }))
        response.on('error', reject)
      })
      .on('error', reject)
  })
}

t.test('a 20 MB answer arrives whole and unchanged', async (t) => {
  const result = await download(t, 20 * MiB)
  t.equal(result.bytes, 20 * MiB, 'every byte arrived')
  t.equal(
    result.sha,
    createHash('sha256')
      .update(Buffer.alloc(20 * MiB, 7))
      .digest('hex'),
    'unchanged'
  )
})

t.test('a large answer is streamed: a paused client stops the upstream instead of filling the proxy', async (t) => {
  // Kernel socket buffers on loopback hold several MiB per connection, so the body must be much larger than them.
  const total = 128 * MiB
  const result = await download(t, total)
  t.equal(result.bytes, total)
  t.ok(
    result.writtenWhilePaused > 0 && result.writtenWhilePaused < total / 3,
    `${(result.writtenWhilePaused / MiB).toFixed(1)} MiB of ${total / MiB} MiB written upstream while the client paused`
  )
})

t.test('a client that stops reading its answer is cut off: its slot is not held for ever', async (t) => {
  // One slot: the client that stops reading holds it; the next request waits for it, up to the queue timeout (10 s).
  const chunk = Buffer.alloc(CHUNK_BYTES, 7)
  const upstream = await startStandInUpstream(t, (request, _body, response) => {
    if (request.url !== '/api/m2m/v1/large-download') {
      response.setHeader('content-type', 'application/json')
      response.end('{}')
      return
    }
    // Far more than the kernel's socket buffers on loopback hold: the proxy's writes to the client stop.
    response.writeHead(200, { 'content-type': 'application/octet-stream' })
    const pump = (): void => {
      while (!response.destroyed && response.write(chunk));
      if (!response.destroyed) response.once('drain', pump)
    }
    pump()
  })
  const stack = await startStack(t, {
    upstream: upstream.url,
    env: { M2M_PROXY_MAX_IN_FLIGHT: '1', M2M_PROXY_REQUEST_TIMEOUT_MS: '1000', M2M_PROXY_QUEUE_TIMEOUT_MS: '10000' }
  })
  const { port } = new URL(stack.proxy.proxyUrl)
  const stalled = net.connect(Number(port), '127.0.0.1', () => {
    stalled.write(`GET /api/m2m/v1/large-download HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`)
  })
  stalled.on('error', () => {})
  t.teardown(() => stalled.destroy())
  // It takes the first bytes, then nothing more: a hung process with its connection still open.
  await new Promise<void>((resolve) => stalled.once('data', () => { stalled.pause(); resolve() }))
  // Without the cut-off it waits out the 10 s queue timeout: 503 QueueTimeout.
  const next = await stack.call('GET', '/api/m2m/v1/devices/actions/list')
  t.equal(next.status, 200, 'the next request is served once the stalled client is cut off')
  // Read again, the stalled client finds its connection closed (the upstream's answer never ends).
  const closed = new Promise<boolean>((resolve) => stalled.once('close', () => resolve(true)))
  stalled.resume()
  t.ok(await Promise.race([closed, sleep(5000, false, { ref: false })]), "the stalled client's connection was closed")
  t.ok(
    stack.logs.entries().some((line) => /took none of their answer/.test(String(line.msg))),
    'a warning says why'
  )
})

t.test('an answer ThingSpace breaks off after its headers still gets its request line, marked cut off', async (t) => {
  const upstream = await startStandInUpstream(t, (_request, _body, response) => {
    response.writeHead(200, { 'content-type': 'application/octet-stream' })
    response.write(Buffer.alloc(CHUNK_BYTES, 7))
    setTimeout(() => response.socket?.destroy(), 100)
  })
  const stack = await startStack(t, { upstream: upstream.url, env: { M2M_PROXY_LOG_LEVEL: 'info' } })
  const { port } = new URL(stack.proxy.proxyUrl)
  const received = await new Promise<string>((resolve) => {
    const client = net.connect(Number(port), '127.0.0.1', () => {
      client.write(`GET /api/m2m/v1/large-download HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`)
    })
    let text = ''
    client.setEncoding('latin1')
    client.on('data', (data: string) => { text += data })
    client.on('close', () => resolve(text))
    client.on('error', () => {})
  })
  t.match(received, /^HTTP\/1\.1 200 /, 'the client got the headers, then a cut connection')
  t.notMatch(received, /\r\n0\r\n\r\n$/, 'no last chunk: the client can tell the answer is incomplete')
  await sleep(100)
  const lines = stack.logs.entries().filter((line) => line.msg === 'request')
  t.equal(lines.length, 1, 'one request line')
  t.match(lines[0], { status: 200, upstreamStatus: 200, cutOff: true })
})
