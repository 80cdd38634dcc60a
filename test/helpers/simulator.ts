// The simulated ThingSpace on 127.0.0.1 port 0, and what tests of the proxy share about it, without the proxy itself:
// a test of real proxy processes imports this rather than stack.ts, which loads the whole proxy (src/server.ts) into
// the test process for nothing (about half a CPU-second of a test file under tap).

import { createHash } from 'node:crypto'
import type { Test } from 'tap'
import { buildSimulator, DEMO_CREDENTIALS, type Simulator, type SimulatorOptions } from '../../src/simulator/app.js'

export const ADMIN_TOKEN = 'test-admin-token-0123456789abcdef'

export async function startSimulator (
  t: Test,
  options: Partial<SimulatorOptions> = {}
): Promise<{ sim: Simulator; simUrl: string }> {
  const sim = buildSimulator({ ...DEMO_CREDENTIALS, ...options })
  await sim.app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => sim.app.close())
  const address = sim.app.server.address()
  if (address === null || typeof address === 'string') throw new Error('simulator has no port')
  return { sim, simUrl: `http://127.0.0.1:${address.port}` }
}

export const ECHO_PATH = '/api/m2m/v1/simulator/echo'

/** What the simulator's echo route answers: the request as it arrived upstream (tokens as fingerprints). */
export interface Echo {
  method: string
  url: string
  headers: Record<string, string>
  bodyLength: number
  bodySha256: string
}

export const sha256 = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex')
