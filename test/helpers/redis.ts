// Redis for the fleet tests: the shared test Redis (M2M_PROXY_TEST_REDIS_URL, else 127.0.0.1:6379), private
// redis-server children, and raw reads.

import { spawn, type ChildProcess } from 'node:child_process'
import net from 'node:net'
import type { Test } from 'tap'
import { createClient } from '@redis/client'

export const TEST_REDIS_URL = process.env.M2M_PROXY_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379'
export const HOW_TO_RUN =
  "start one with `redis-server --save '' --appendonly no` (127.0.0.1:6379) or set M2M_PROXY_TEST_REDIS_URL"

/** True when a PING at `url` is answered within a second. */
export async function redisReachable (url: string): Promise<boolean> {
  const client = createClient({ url, socket: { reconnectStrategy: false, connectTimeout: 1000 } })
  client.on('error', () => {})
  try {
    await client.connect()
    await client.ping()
    return true
  } catch {
    return false
  } finally {
    if (client.isOpen) client.destroy()
  }
}

/**
 * Whether the fleet tests can run: false (with one line saying how to run them) where no Redis is
 * reachable, except under CI=true, where that is a failure: CI must never skip them silently.
 */
export async function haveTestRedis (t: Test): Promise<boolean> {
  if (await redisReachable(TEST_REDIS_URL)) return true
  if (process.env.CI === 'true') {
    t.fail(`no Redis at ${TEST_REDIS_URL.replace(/\/\/[^@/]*@/, '//***@')}: CI must run the fleet tests; ${HOW_TO_RUN}`)
  } else {
    t.skip(
      `fleet Redis tests skipped: no Redis at ${TEST_REDIS_URL.replace(/\/\/[^@/]*@/, '//***@')}; to run them, ${HOW_TO_RUN}`,
      () => {}
    )
  }
  return false
}

function plainClient (url: string) {
  return createClient({ url, socket: { reconnectStrategy: false } })
}

type Client = ReturnType<typeof plainClient>

async function withClient<T> (url: string, body: (client: Client) => Promise<T>): Promise<T> {
  const client = plainClient(url)
  client.on('error', () => {})
  await client.connect()
  try {
    return await body(client)
  } finally {
    client.destroy()
  }
}

async function keysUnder (client: Client, keyPrefix: string): Promise<string[]> {
  const keys: string[] = []
  for await (const batch of client.scanIterator({ MATCH: `${keyPrefix}*`, COUNT: 1000 })) keys.push(...batch)
  return keys
}

/** Deletes every key under `keyPrefix`. */
export async function deleteKeys (url: string, keyPrefix: string): Promise<void> {
  await withClient(url, async (client) => {
    const keys = await keysUnder(client, keyPrefix)
    if (keys.length > 0) await client.del(keys)
  })
}

/** Every key name, hash field and value stored under `keyPrefix`, as Redis holds them. */
export async function rawValues (url: string, keyPrefix: string): Promise<string[]> {
  return await withClient(url, async (client) => {
    const values: string[] = []
    for (const key of await keysUnder(client, keyPrefix)) {
      values.push(key)
      const type = await client.type(key)
      if (type === 'string') values.push(String(await client.get(key)))
      else if (type === 'hash') values.push(...Object.entries(await client.hGetAll(key)).flat())
      else throw new Error(`unexpected type ${type} at ${key}`)
    }
    return values
  })
}

export async function waitUntil (test: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const started = Date.now()
  while (!test()) {
    if (Date.now() - started > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

/**
 * A private redis-server on `port` (nothing saved to disk), killed in the test's teardown; resolves once it answers.
 */
export async function startRedisServer (t: Test, port: number, extraArgs: string[] = []): Promise<ChildProcess> {
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...extraArgs],
    { stdio: 'ignore' }
  )
  t.teardown(() => {
    child.kill('SIGKILL')
  })
  const started = Date.now()
  for (;;) {
    if (child.exitCode !== null) throw new Error(`redis-server on port ${port} exited with ${child.exitCode}`)
    const open = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.destroy()
        resolve(true)
      })
      socket.on('error', () => resolve(false))
    })
    if (open) return child
    if (Date.now() - started > 10_000) throw new Error(`redis-server on port ${port} did not start`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}
