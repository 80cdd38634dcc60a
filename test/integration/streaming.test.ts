// A 20 MB answer streams through: the client gets it whole, and the proxy never holds it all at once.

import t, { type Test } from 'tap'
import http from 'node:http'
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
