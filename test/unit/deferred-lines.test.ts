// Request lines are written after the phase that finished their requests: all of them, in order, once each.

import t from 'tap'
import { Writable } from 'node:stream'
import { setImmediate as nextImmediate } from 'node:timers/promises'
import pino from 'pino'
import { DeferredLines } from '../../src/listener/deferred-lines.js'

function capturedLogger (): { log: pino.Logger; written: Array<Record<string, unknown>> } {
  const written: Array<Record<string, unknown>> = []
  const destination = new Writable({
    write (chunk: Buffer, _encoding, done) {
      written.push(JSON.parse(chunk.toString()) as Record<string, unknown>)
      done()
    }
  })
  return { log: pino({ level: 'info' }, destination), written }
}

t.test('lines wait for the phase to end, then are written in order, once each', async (t) => {
  const { log, written } = capturedLogger()
  const lines = new DeferredLines<{ n: number }>(log, 'request')
  for (let n = 1; n <= 3; n++) lines.add({ n })
  await Promise.resolve()
  t.equal(written.length, 0, 'nothing written within the phase')
  await nextImmediate()
  t.same(written.map((line) => [line.msg, line.n]), [['request', 1], ['request', 2], ['request', 3]])
  lines.add({ n: 4 })
  await nextImmediate()
  await nextImmediate()
  t.same(written.map((line) => line.n), [1, 2, 3, 4], 'a later phase schedules its own write')
})

t.test('write() on close writes what is held; the scheduled write then has nothing left', async (t) => {
  const { log, written } = capturedLogger()
  const lines = new DeferredLines<{ n: number }>(log, 'request')
  lines.add({ n: 1 })
  lines.add({ n: 2 })
  lines.write()
  t.same(written.map((line) => line.n), [1, 2], 'written at once')
  await nextImmediate()
  await nextImmediate()
  t.same(written.map((line) => line.n), [1, 2], 'not written twice')
})
