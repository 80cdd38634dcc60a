// A stack with the callback inbox on (the simulator delivering its callbacks quickly), and the admin's callback route.

import type { Test } from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { ADMIN_TOKEN, startStack, type Stack } from './stack.js'
import { DEMO_ACCOUNT_NAME } from '../../src/simulator/app.js'

const AUTH = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }

/** The inbox on, in a state directory of its own, M2M_PROXY_ACCOUNT_NAME the simulator's account; `env` on top. */
export async function callbackStack (t: Test, env: Record<string, string> = {}): Promise<Stack> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-callbacks-'))
  t.teardown(() => { fs.rmSync(dir, { recursive: true, force: true, maxRetries: 5 }) })
  return await startStack(t, {
    dir,
    env: { M2M_PROXY_CALLBACK_PORT: '0', M2M_PROXY_ACCOUNT_NAME: DEMO_ACCOUNT_NAME, ...env },
    simulator: { callbackDelivery: { firstDelayMs: 5, retryDelayMs: 20 } }
  })
}

/** POST, GET or DELETE /admin/callbacks with the admin token, the body as JSON. */
export async function adminCallbacks (
  stack: Stack,
  method: string,
  body?: unknown
): Promise<{ status: number; json: any }> {
  const answer = await stack.adminCall(method, '/admin/callbacks', {
    headers: AUTH,
    ...(body === undefined ? {} : { body: JSON.stringify(body) })
  })
  return { status: answer.status, json: answer.json() }
}
