// The status page's recent session events: what is kept (codes, not messages), newest first, bounded.

import t from 'tap'
import { RecentSessionEvents } from '../../src/admin/recent-events.js'

t.test('kept newest first, bounded, the per-request fleet events left out', async (t) => {
  let now = Date.UTC(2026, 0, 1)
  const recent = new RecentSessionEvents(() => now, 3)
  recent.record({ type: 'login', outcome: 'success', consecutiveRejections: 0 })
  now += 1000
  recent.record({ type: 'fleet-lock-wait' })
  recent.record({ type: 'fleet-login-avoided' })
  recent.record({ type: 'renewal', reason: 'expired' })
  recent.record({ type: 'background-retry', delayMs: 1000, cause: 'upstream-unavailable' })
  recent.record({ type: 'login', outcome: 'rejected', consecutiveRejections: 1, message: 'wrong password hunter2', cause: { status: 400, errorCode: 'UnifiedWebService.INPUT_INVALID' } })
  t.same(recent.list(), [
    { at: '2026-01-01T00:00:01.000Z', type: 'login', outcome: 'rejected', cause: { status: 400, errorCode: 'UnifiedWebService.INPUT_INVALID' }, consecutiveRejections: 1 },
    { at: '2026-01-01T00:00:01.000Z', type: 'background-retry', reason: 'upstream-unavailable' },
    { at: '2026-01-01T00:00:01.000Z', type: 'renewal', reason: 'expired' }
  ])
  t.notMatch(JSON.stringify(recent.list()), 'hunter2', 'no message kept')
})
