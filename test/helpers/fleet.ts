// Fleet mode with real processes: `node dist/main.js` replicas sharing one Redis, one key prefix and one fleet key.

import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type { Test } from 'tap'
import { DEMO_CREDENTIALS } from '../../src/simulator/app.js'
import { startProxyProcess, type ProxyProcess } from './process.js'
import { TEST_REDIS_URL } from './redis.js'
import { ADMIN_TOKEN, ECHO_PATH } from './simulator.js'

/** A key prefix of the test's own, so that tests share the machine's Redis without seeing each other. */
export function fleetKeyPrefix (): string {
  return `m2m-session-proxy-test:${randomBytes(6).toString('hex')}:`
}

export interface FleetReplicaOptions {
  simUrl: string
  keyPrefix: string
  fleetKey: string
  /** Default: the shared test Redis. */
  redisUrl?: string
  /** Home of the credentials file and the state; made (with the demo credentials) and removed when absent. */
  dir?: string
  /** More settings, or other values (M2M_PROXY_MAX_LOGIN_FAILURES is 2 unless set here). */
  env?: Record<string, string>
}

export interface FleetReplica extends ProxyProcess {
  dir: string
  credentialsFile: string
}

/**
 * Replica starts of one test file, one at a time: several node processes starting at once on a busy 2-core machine can
 * outlast a start's bound.
 */
let startTurn: Promise<unknown> = Promise.resolve()

/**
 * One replica: its own state directory and credentials file, the fleet's Redis, key prefix and key; killed in teardown.
 */
export async function startFleetReplica (t: Test, options: FleetReplicaOptions): Promise<FleetReplica> {
  const started = startTurn.then(async () => await startOne(t, options))
  startTurn = started.catch(() => {})
  return await started
}

async function startOne (t: Test, options: FleetReplicaOptions): Promise<FleetReplica> {
  let dir = options.dir
  if (dir === undefined) {
    const made = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-fleet-'))
    t.teardown(() => fs.rmSync(made, { recursive: true, force: true }))
    fs.writeFileSync(path.join(made, 'credentials.json'), JSON.stringify(DEMO_CREDENTIALS), { mode: 0o600 })
    dir = made
  }
  const credentialsFile = path.join(dir, 'credentials.json')
  const replica = await startProxyProcess(
    {
      M2M_PROXY_UPSTREAM: options.simUrl,
      M2M_PROXY_CREDENTIALS_FILE: credentialsFile,
      M2M_PROXY_ADMIN_TOKEN: ADMIN_TOKEN,
      M2M_PROXY_MAX_LOGIN_FAILURES: '2',
      M2M_PROXY_REDIS_URL: options.redisUrl ?? TEST_REDIS_URL,
      M2M_PROXY_FLEET_KEY: options.fleetKey,
      M2M_PROXY_REDIS_KEY_PREFIX: options.keyPrefix,
      ...options.env
    },
    dir
  )
  t.teardown(async () => await stopReplica(replica))
  return Object.assign(replica, { dir, credentialsFile })
}

/** SIGKILL, as a crash; nothing when it has already exited. */
export async function stopReplica (replica: ProxyProcess): Promise<void> {
  if (replica.child.exitCode !== null || replica.child.signalCode !== null) return
  replica.child.kill('SIGKILL')
  await replica.exit
}

export async function until (
  test: () => Promise<boolean> | boolean,
  timeoutMs: number,
  what: string,
  intervalMs = 50
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await test())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
}

export async function waitReady (replica: ProxyProcess, timeoutMs = 15_000): Promise<void> {
  await until(
    async () => {
      const response = await fetch(`${replica.adminUrl}/readyz`)
      await response.arrayBuffer()
      return response.status === 200
    },
    timeoutMs,
    'replica ready'
  ).catch((error: unknown) => {
    // What the replica was doing: a timeout alone says nothing on a CI log.
    const recent = replica.lines.slice(-20).map((line) => `  ${String(line.time)} ${String(line.level)} ${String(line.msg)}`)
    throw new Error(`${(error as Error).message}; its last log lines:\n${recent.join('\n')}`)
  })
}

/** The value of an unlabelled metric, NaN when absent. */
export async function metricValue (replica: ProxyProcess, name: string): Promise<number> {
  const text = await (await fetch(`${replica.adminUrl}/metrics`)).text()
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${name} `))
  return line === undefined ? NaN : Number(line.split(' ')[1])
}

/** The password in a replica's credentials file now. */
export function filePassword (replica: FleetReplica): string {
  return (JSON.parse(fs.readFileSync(replica.credentialsFile, 'utf8')) as { password: string }).password
}

/** GET /admin/session of a replica. */
export async function adminSession (
  replica: ProxyProcess
): Promise<{ state: string; password: Record<string, unknown> } & Record<string, unknown>> {
  const response = await fetch(`${replica.adminUrl}/admin/session`, {
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` }
  })
  return (await response.json()) as { state: string; password: Record<string, unknown> }
}

/** The status of one proxied call to the simulator's echo route, its body read. */
export async function echoStatus (replica: ProxyProcess): Promise<number> {
  const response = await fetch(`${replica.proxyUrl}${ECHO_PATH}`)
  await response.arrayBuffer()
  return response.status
}
