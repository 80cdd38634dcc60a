// The in-memory fleet store against the FleetStore contract, on a hand-moved clock.
import t from 'tap'
import { MemoryFleet, MemoryFleetStore } from '../helpers/memory-store.js'
import { fleetStoreContract } from '../helpers/fleet-store-contract.js'

let now = Date.now()
const fleet = new MemoryFleet({ now: () => now })

fleetStoreContract(t, {
  open: async (keyPrefix, username) => new MemoryFleetStore({ fleet, keyPrefix, username }),
  elapse: async (ms) => { now += ms },
  now: () => now,
  cleanup: async () => {}
})

t.test('expiries follow the injected clock, not real time', async (t) => {
  const store = new MemoryFleetStore({ fleet, keyPrefix: 'clock-test:', username: 'u' })
  t.ok(await store.takeLock('login', 1000))
  now += 999
  t.equal(await store.takeLock('login', 1000), undefined, 'held until its TTL has passed')
  now += 1
  t.ok(await store.takeLock('login', 1000), 'free at its TTL')
  await store.writeOAuthToken({ token: 'tok', expiresAt: now + 10 })
  now += 10
  t.equal(await store.readOAuthToken(), undefined)
})
