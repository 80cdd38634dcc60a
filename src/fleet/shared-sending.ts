// Fleet mode of the upstream gate: a replica that ThingSpace throttles pauses the whole fleet (one key in Redis and a
// notification), a replica that connects during a pause pauses too, and the contracted rate's slots are the fleet's.

import type { UpstreamGate } from '../proxy/upstream-gate.js'
import type { FleetStore } from './store.js'
import { messageOf } from '../errors.js'
import type { PublishFleetEvent } from './events.js'

/** Links `gate` to the fleet through `store`; returns the function that unlinks it (at shutdown). */
export function shareSendingWithFleet (gate: UpstreamGate, store: FleetStore, publish: PublishFleetEvent): () => void {
  // One line when the store starts failing and one when it works again, not one per request.
  let failing = false
  const failed = (what: string, error: unknown): void => {
    if (failing) return
    failing = true
    publish({ type: 'warning', message: `${what}: ${messageOf(error)}; this replica throttles on its own meanwhile` })
  }
  const worked = (): void => {
    if (!failing) return
    failing = false
    publish({ type: 'info', message: 'the fleet\'s sending pause and rate are shared again' })
  }
  gate.share({
    pause: (pauseMs) => {
      store.pauseSending(pauseMs).then(worked, (error: unknown) => failed('the fleet could not be told to pause', error))
    },
    takeSlot: async (intervalMs, notBeforeMs, maxWaitMs) => {
      try {
        const waitMs = await store.takeSendSlot(intervalMs, notBeforeMs, maxWaitMs)
        worked()
        return waitMs
      } catch (error) {
        failed('no slot of the fleet\'s contracted rate could be taken', error)
        throw error
      }
    }
  })
  return store.subscribe((change) => {
    if (change.kind === 'throttle') gate.pauseFor(change.pauseMs)
    else if (change.kind === 'connected') {
      // Connected (again) during another replica's pause: this one pauses for what is left of it.
      store.readSendingPause().then((leftMs) => { if (leftMs > 0) gate.pauseFor(leftMs) }, () => {})
    }
  })
}
