// Lifecycle events on node:diagnostics_channel: what an outside subscriber sees, and one proxy's subscriptions apart
// from another's.

import diagnosticsChannel from 'node:diagnostics_channel'
import t from 'tap'
import { EVENT_CHANNELS, ProxyEvents, type ProxyEventMessage } from '../../src/events.js'
import type { SessionEvent } from '../../src/session/events.js'

t.test(
  "an outside subscriber of the channel sees every proxy's events, each with the proxy that published it",
  async (t) => {
    const seen: ProxyEventMessage[] = []
    const listener = (message: unknown): void => {
      seen.push(message as ProxyEventMessage)
    }
    diagnosticsChannel.subscribe(EVENT_CHANNELS.session, listener)
    t.teardown(() => {
      diagnosticsChannel.unsubscribe(EVENT_CHANNELS.session, listener)
    })
    const first = new ProxyEvents()
    const second = new ProxyEvents()
    first.publisher('session')({ type: 'renewal', reason: 'idle' })
    second.publisher('session')({ type: 'fleet-lock-wait' })
    first.publisher('credentials')({ type: 'info', message: 'on another channel' })
    t.same(
      seen.map((message) => message.event),
      [{ type: 'renewal', reason: 'idle' }, { type: 'fleet-lock-wait' }]
    )
    t.equal(seen[0]?.source, first)
    t.equal(seen[1]?.source, second)
  }
)

t.test("a proxy's subscription sees its own events only, and none after close()", async (t) => {
  const first = new ProxyEvents()
  const second = new ProxyEvents()
  const received: SessionEvent[] = []
  first.subscribe('session', (event) => received.push(event))
  const publishFirst = first.publisher('session')
  publishFirst({ type: 'login', outcome: 'success', consecutiveRejections: 0 })
  second.publisher('session')({ type: 'login', outcome: 'rejected', consecutiveRejections: 1 })
  t.same(received, [{ type: 'login', outcome: 'success', consecutiveRejections: 0 }])
  t.equal(diagnosticsChannel.hasSubscribers(EVENT_CHANNELS.session), true)
  first.close()
  publishFirst({ type: 'warning', message: 'after close' })
  t.equal(received.length, 1, 'nothing after close()')
  t.equal(diagnosticsChannel.hasSubscribers(EVENT_CHANNELS.session), false, 'its subscription is gone from the channel')
})
