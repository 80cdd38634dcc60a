// Test harness: the simulator and a proxy pointed at it, both on 127.0.0.1 port 0, with logs collected in memory.

import fs from 'node:fs'
import path from 'node:path'
import { Writable } from 'node:stream'
import { setImmediate as nextImmediate } from 'node:timers/promises'
import { brotliDecompressSync, gunzipSync, inflateSync } from 'node:zlib'
import type { Test } from 'tap'
import { Agent, request, type Dispatcher } from 'undici'
import { createConfig, type ProxyConfig } from '../../src/config/load.js'
import { loadCredentials, type Credentials } from '../../src/credentials/credentials.js'
import { createLogger } from '../../src/logging.js'
import { startProxy, type RunningProxy } from '../../src/server.js'
import type { Clock } from '../../src/clock.js'
import { DEMO_CREDENTIALS, type Simulator, type SimulatorOptions } from '../../src/simulator/app.js'
import { ADMIN_TOKEN, startSimulator } from './simulator.js'

export { ADMIN_TOKEN, ECHO_PATH, sha256, startSimulator, type Echo } from './simulator.js'

export class LogCollector extends Writable {
  readonly lines: string[] = []
  override _write (chunk: Buffer, _encoding: string, callback: () => void): void {
    this.lines.push(
      ...chunk
        .toString('utf8')
        .split('\n')
        .filter((line) => line !== '')
    )
    callback()
  }

  get text (): string {
    return this.lines.join('\n')
  }

  entries (): Array<Record<string, unknown>> {
    return this.lines.map((line) => JSON.parse(line) as Record<string, unknown>)
  }
}

export interface StackOptions {
  simulator?: Partial<SimulatorOptions>
  credentials?: Partial<Credentials>
  /** Written to the credentials file besides the four fields (rotation must keep them). */
  extraCredentialFields?: Record<string, unknown>
  env?: Record<string, string>
  clock?: Clock
  /** Reuse a state/credentials directory (restart tests). */
  dir?: string
  /** Upstream origin instead of the simulator's (the simulator still runs). */
  upstream?: string
  waitForLogin?: boolean
  /**
   * `call` and `adminCall` send `Accept-Encoding: gzip, deflate, br` (as Verizon's SDK does) and decode
   * the answer before `text`, so that every test meets the simulator's compressed answers, error
   * answers included; default true. A test's own Accept-Encoding header wins.
   */
  acceptCompressed?: boolean
}

export interface Stack {
  sim: Simulator
  simUrl: string
  proxy: RunningProxy
  config: ProxyConfig
  dir: string
  logs: LogCollector
  client: Dispatcher
  /** A request to the proxy listener; the body is read whole. */
  call: (method: string, urlPath: string, options?: CallOptions) => Promise<CallResult>
  /** The same against the admin listener. */
  adminCall: (method: string, urlPath: string, options?: CallOptions) => Promise<CallResult>
  stopProxy: () => Promise<void>
}

export interface CallOptions {
  headers?: Record<string, string>
  body?: string | Buffer
}
export interface CallResult {
  status: number
  headers: Record<string, string | string[] | undefined>
  text: string
  json: () => unknown
}

export const CLIENT_ACCEPT_ENCODING = 'gzip, deflate, br'

const DECODERS: Record<string, (body: Buffer) => Buffer> = {
  gzip: gunzipSync,
  'x-gzip': gunzipSync,
  deflate: inflateSync,
  br: brotliDecompressSync
}

/** The body as the client would read it: decoded when the answer says Content-Encoding (gzip, deflate, br). */
export function decodeBody (bytes: Buffer, contentEncoding: string | string[] | undefined): Buffer {
  const codings = (Array.isArray(contentEncoding) ? contentEncoding.join(',') : (contentEncoding ?? ''))
    .split(',')
    .map((coding) => coding.trim().toLowerCase())
    .filter((coding) => coding !== '' && coding !== 'identity')
  return codings.reduceRight((body, coding) => {
    const decode = DECODERS[coding]
    if (decode === undefined) throw new Error(`answer has an unknown Content-Encoding: ${coding}`)
    return decode(body)
  }, bytes)
}

export async function startStack (t: Test, options: StackOptions = {}): Promise<Stack> {
  const { sim, simUrl } = await startSimulator(t, options.simulator)
  const dir = options.dir ?? t.testdir({})
  const credentialsFile = path.join(dir, 'credentials.json')
  if (options.dir === undefined || !fs.existsSync(credentialsFile)) {
    fs.writeFileSync(
      credentialsFile,
      JSON.stringify({ ...DEMO_CREDENTIALS, ...options.credentials, ...options.extraCredentialFields }),
      { mode: 0o600 }
    )
  }
  const config = createConfig({
    env: {
      M2M_PROXY_UPSTREAM: options.upstream ?? simUrl,
      M2M_PROXY_CREDENTIALS_FILE: credentialsFile,
      M2M_PROXY_PORT: '0',
      M2M_PROXY_ADMIN_PORT: '0',
      M2M_PROXY_LOG_LEVEL: 'debug',
      M2M_PROXY_ADMIN_TOKEN: ADMIN_TOKEN,
      ...options.env
    },
    readTextFile: (file) => fs.readFileSync(file, 'utf8'),
    cwd: dir
  })
  const logs = new LogCollector()
  const proxy = await startProxy(
    config,
    loadCredentials(credentialsFile),
    createLogger(config.logLevel, { bufferBytes: 0, destination: logs }),
    options.clock
  )
  let stopped = false
  const stopProxy = async (): Promise<void> => {
    if (stopped) return
    stopped = true
    await proxy.app.close()
  }
  t.teardown(stopProxy)
  if (options.waitForLogin !== false) await proxy.initialLogin
  const client = new Agent({ connections: 512, pipelining: 0 })
  t.teardown(() => client.close())
  const acceptCompressed = options.acceptCompressed ?? true
  const callTo =
    (base: string): Stack['call'] =>
      async (method, urlPath, callOptions = {}) => {
        const headers =
        acceptCompressed &&
        !Object.keys(callOptions.headers ?? {}).some((name) => name.toLowerCase() === 'accept-encoding')
          ? { 'accept-encoding': CLIENT_ACCEPT_ENCODING, ...callOptions.headers }
          : callOptions.headers
        const response = await request(base + urlPath, {
          method: method as Dispatcher.HttpMethod,
          headers,
          body: callOptions.body,
          dispatcher: client
        })
        const bytes = Buffer.from(await response.body.arrayBuffer())
        const text = (acceptCompressed ? decodeBody(bytes, response.headers['content-encoding']) : bytes).toString('utf8')
        // The proxy writes its request lines in a setImmediate scheduled when it answered: ours runs after it.
        await nextImmediate()
        return { status: response.statusCode, headers: response.headers, text, json: () => JSON.parse(text) as unknown }
      }
  return {
    sim,
    simUrl,
    proxy,
    config,
    dir,
    logs,
    client,
    call: callTo(proxy.proxyUrl),
    adminCall: callTo(proxy.adminUrl),
    stopProxy
  }
}
