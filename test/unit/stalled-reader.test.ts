// The stalled-reader sweep (hardenListener): a client that takes none of its answer is cut off, one that reads a large
// write slowly but steadily is not.

import t, { type Test } from 'tap'
import net from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify, { type FastifyInstance } from 'fastify'
import { hardenListener } from '../../src/listener/hardening.js'

const MiB = 1024 * 1024
const STALL_MS = 1000

async function startListener (t: Test, answer: Buffer): Promise<{ port: number; warnings: string[] }> {
  const app: FastifyInstance = Fastify({ logger: false })
  const warnings: string[] = []
  const log = app.log.child({})
  log.warn = ((_: unknown, message: string) => { warnings.push(message) }) as typeof log.warn
  hardenListener(app, { guard: undefined, maxConnections: 16, maxConnectionsSetting: 'TEST', stalledReaderTimeoutMs: STALL_MS, log })
  // One write of the whole answer, as for a page of callbacks: far more than the kernel's buffers on loopback hold.
  app.get('/large', async (_request, reply) => await reply.type('application/octet-stream').send(answer))
  await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(async () => await app.close())
  return { port: (app.server.address() as net.AddressInfo).port, warnings }
}

/** Reads the answer at `bytesPerSecond`, in small steps; resolves with the bytes read when the connection closes. */
async function readAt (port: number, bytesPerSecond: number): Promise<number> {
  return await new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.write(`GET /large HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`)
    })
    let received = 0
    let allowance = 0
    const take = (): void => {
      let chunk: Buffer | null
      while (allowance > 0 && (chunk = socket.read() as Buffer | null) !== null) {
        received += chunk.length
        allowance -= chunk.length
      }
    }
    socket.on('readable', take)
    const stepMs = 50
    const pace = setInterval(() => { allowance += (bytesPerSecond * stepMs) / 1000; take() }, stepMs)
    socket.on('error', () => {})
    socket.on('close', () => { clearInterval(pace); resolve(received) })
  })
}

t.test('a client reading one large write steadily, slower than the write could go out in the limit, gets it whole', async (t) => {
  const answer = Buffer.alloc(24 * MiB, 7)
  const { port, warnings } = await startListener(t, answer)
  // 8 MiB/s: about 3 s for the answer, three times the limit, with bytes leaving at every sweep.
  const received = await readAt(port, 8 * MiB)
  t.ok(received > answer.length, `whole answer and headers read (${received} bytes)`)
  t.same(warnings, [], 'no connection closed')
})

t.test('a client that takes none of its answer is still cut off', async (t) => {
  const { port, warnings } = await startListener(t, Buffer.alloc(24 * MiB, 7))
  const started = performance.now()
  const socket = net.connect(port, '127.0.0.1', () => {
    socket.write(`GET /large HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`)
  })
  socket.pause() // never reads
  socket.on('error', () => {})
  t.teardown(() => socket.destroy())
  while (warnings.length === 0 && performance.now() - started < 20_000) await sleep(100)
  t.match(warnings, [/took none of their answer/], 'closed, with the warning')
  t.ok(performance.now() - started >= STALL_MS, 'once the limit had passed')
})
