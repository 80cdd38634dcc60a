// The Redis fleet store: the FleetStore port on one Redis primary (node-redis). Secrets are stored sealed with the fleet key.
//
// Keys, all under `${keyPrefix}${sha256(username) first 16 hex}:` (one account's state, so that fleets and accounts share a Redis):
//   session   hash  token (sealed), loggedInAt, lastUsedAt           no TTL: the readers judge idleness by lastUsedAt
//   oauth     hash  token (sealed), expiresAt                        PX until expiresAt
//   lock      string owner id of the login lock                       SET NX PX; released by compare-and-delete
//   rotation-lock string owner id of the password rotation lock         the same
//   failures  string consecutive counted logins                       no TTL: lasts until a success or an operator reset
//   password  hash  generation, password (sealed), changedAt        no TTL
//   changes   pub/sub channel of FleetChange JSON (never a secret)
// The account part is a plain hash of the user name, not keyed with the fleet key: a replica given another fleet key must find
// the same keys and fail loudly (FleetKeyMismatchError), not start a second state and a second lockout budget beside the first.

import { createHash } from 'node:crypto'
import { createClient } from 'redis'
import { systemClock, type Clock } from '../session/clock.js'
import { open, seal } from './crypto.js'
import {
  FleetStoreClosedError, newLockOwner,
  type FleetChange, type FleetChangeListener, type FleetLock, type FleetLockName, type FleetStore, type PasswordGeneration, type SharedOAuthToken, type SharedSession
} from './store.js'

/** Deletes the lock only if it still holds this owner's id. */
const RELEASE_LOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end"
/** Moves lastUsedAt forward only, and only on the stored session logged in at ARGV[1]; 1 when that session is stored. */
const TOUCH_SESSION = `if redis.call('HGET', KEYS[1], 'loggedInAt') ~= ARGV[1] or redis.call('HEXISTS', KEYS[1], 'token') == 0 then return 0 end
local current = tonumber(redis.call('HGET', KEYS[1], 'lastUsedAt')) or 0
if tonumber(ARGV[2]) > current then redis.call('HSET', KEYS[1], 'lastUsedAt', ARGV[2]) end
return 1`
/** Writes the session hash only if none is stored, then notifies. */
const SEED_SESSION = `if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'loggedInAt', ARGV[2], 'lastUsedAt', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1`
/** Decrements, never below 0. */
const UNCOUNT_ATTEMPT = `local current = tonumber(redis.call('GET', KEYS[1])) or 0
if current <= 0 then redis.call('DEL', KEYS[1]) return 0 end
return redis.call('DECR', KEYS[1])`
/** Publishes generation ARGV[1] only if the stored one is ARGV[1] - 1 (ARGV[6] 'next'), or older (ARGV[6] 'seed'), then notifies. */
const PUBLISH_PASSWORD = `local current = tonumber(redis.call('HGET', KEYS[1], 'generation')) or 0
local wanted = tonumber(ARGV[1])
if ARGV[6] == 'next' and wanted ~= current + 1 then return 0 end
if ARGV[6] == 'seed' and wanted <= current then return 0 end
redis.call('HSET', KEYS[1], 'generation', ARGV[1], 'password', ARGV[2], 'changedAt', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1`

/** Key of each lock; the login lock keeps the name `lock`, which earlier versions used. */
const LOCK_KEYS = { login: 'lock', rotation: 'rotation-lock' } as const

/** The Redis could not be reached or answered with an error; the message never holds the URL's password. */
export class FleetStoreUnavailableError extends Error {
  override readonly name = 'FleetStoreUnavailableError'
}

/** The key name part shared by all keys of one account. */
export function accountKeyBase (keyPrefix: string, username: string): string {
  return `${keyPrefix}${createHash('sha256').update(username, 'utf8').digest('hex').slice(0, 16)}:`
}

export interface RedisFleetStoreOptions {
  /** redis:// or rediss://, user and password allowed. */
  url: string
  /** 32 bytes (parseFleetKey). */
  fleetKey: Buffer
  keyPrefix: string
  username: string
  /** Expiry of the OAuth token; default the system clock. */
  clock?: Clock
  /** Told about connection problems and recoveries; the text never holds the URL's password. */
  log?: (level: 'warn' | 'info', message: string) => void
  /** Reconnect backoff: from 100 ms, doubling, up to this (default 5000). */
  reconnectMaxDelayMs?: number
  /** A command not answered within this fails (default 2000). */
  commandTimeoutMs?: number
}

type Client = ReturnType<typeof createClient>

/** Removes the URL and its password (raw and decoded) from a message. */
export function redactor (url: string): (text: string) => string {
  const secrets = [url]
  try {
    const parsed = new URL(url)
    for (const part of [parsed.password, parsed.username]) {
      if (part === '') continue
      secrets.push(part)
      try {
        secrets.push(decodeURIComponent(part))
      } catch {
        // not valid percent-encoding: the raw form is already listed
      }
    }
  } catch {
    // an unparseable URL: only the whole of it is removed
  }
  const sorted = [...new Set(secrets)].filter((secret) => secret.length > 0).sort((a, b) => b.length - a.length)
  return (text) => sorted.reduce((result, secret) => result.split(secret).join('***'), text)
}

export class RedisFleetStore implements FleetStore {
  private readonly client: Client
  private readonly subscriber: Client
  private readonly base: string
  private readonly channel: string
  private readonly key: Buffer
  private readonly clock: Clock
  private readonly redact: (text: string) => string
  private readonly log: (level: 'warn' | 'info', message: string) => void
  private readonly listeners = new Set<FleetChangeListener>()
  private subscribed = false
  private closed = false
  /** Problems logged since the connections were last both up: a Redis down for an hour is a line or two, not one per retry. */
  private readonly problems = new Set<string>()

  /** Starts connecting in the background (reconnecting with backoff) and returns at once; `connected` tells when ready. */
  constructor (options: RedisFleetStoreOptions) {
    this.base = accountKeyBase(options.keyPrefix, options.username)
    this.channel = `${this.base}changes`
    this.key = options.fleetKey
    this.clock = options.clock ?? systemClock
    this.redact = redactor(options.url)
    this.log = options.log ?? (() => {})
    const maxDelay = options.reconnectMaxDelayMs ?? 5000
    this.client = createClient({
      url: options.url,
      // Redis down: fail at once rather than queue a login decision for later.
      disableOfflineQueue: true,
      commandOptions: { timeout: options.commandTimeoutMs ?? 2000 },
      socket: { reconnectStrategy: (retries: number) => Math.min(100 * 2 ** Math.min(retries, 16), maxDelay) }
    })
    // Pub/sub needs a connection of its own; its SUBSCRIBE waits in its queue until it connects, and node-redis resubscribes after a reconnect.
    this.subscriber = this.client.duplicate({ disableOfflineQueue: false })
    this.watch(this.client)
    this.watch(this.subscriber)
    this.client.connect().catch(() => {}) // errors arrive through the 'error' listener; a closed store ends the attempts
    this.subscriber.connect().catch(() => {})
    this.subscriber.subscribe(this.channel, (message) => this.dispatch(message))
      .then(() => { this.subscribed = true }, () => {})
  }

  get connected (): boolean {
    return !this.closed && this.client.isReady && this.subscriber.isReady && this.subscribed
  }

  async readSession (): Promise<SharedSession | undefined> {
    const key = this.keyOf('session')
    const fields = await this.run('read the shared session', () => this.client.hGetAll(key))
    if (fields.token === undefined) return undefined
    return {
      token: open(this.key, `${key}#token`, fields.token),
      loggedInAt: Number(fields.loggedInAt),
      lastUsedAt: Number(fields.lastUsedAt)
    }
  }

  async writeSession (session: SharedSession): Promise<void> {
    const key = this.keyOf('session')
    const token = seal(this.key, `${key}#token`, session.token)
    await this.run('write the shared session', () => this.client.multi()
      .del(key)
      .hSet(key, { token, loggedInAt: String(session.loggedInAt), lastUsedAt: String(session.lastUsedAt) })
      .publish(this.channel, JSON.stringify({ kind: 'session' } satisfies FleetChange))
      .exec())
  }

  async touchSession (loggedInAt: number, lastUsedAt: number): Promise<boolean> {
    const key = this.keyOf('session')
    const stored = await this.run('touch the shared session', () => this.client.eval(TOUCH_SESSION, { keys: [key], arguments: [String(loggedInAt), String(lastUsedAt)] }))
    return stored === 1
  }

  async seedSession (session: SharedSession): Promise<boolean> {
    const key = this.keyOf('session')
    const token = seal(this.key, `${key}#token`, session.token)
    const written = await this.run('re-seed the shared session', () => this.client.eval(SEED_SESSION, {
      keys: [key],
      arguments: [token, String(session.loggedInAt), String(session.lastUsedAt), this.channel, JSON.stringify({ kind: 'session' } satisfies FleetChange)]
    }))
    return written === 1
  }

  async clearSession (): Promise<void> {
    const key = this.keyOf('session')
    await this.run('clear the shared session', () => this.client.multi()
      .del(key)
      .publish(this.channel, JSON.stringify({ kind: 'session' } satisfies FleetChange))
      .exec())
  }

  async readOAuthToken (): Promise<SharedOAuthToken | undefined> {
    const key = this.keyOf('oauth')
    const fields = await this.run('read the shared OAuth token', () => this.client.hGetAll(key))
    if (fields.token === undefined) return undefined
    const expiresAt = Number(fields.expiresAt)
    if (!(expiresAt > this.clock.now())) return undefined
    return { token: open(this.key, `${key}#token`, fields.token), expiresAt }
  }

  async writeOAuthToken (token: SharedOAuthToken): Promise<void> {
    const key = this.keyOf('oauth')
    const ttlMs = Math.ceil(token.expiresAt - this.clock.now())
    const sealed = seal(this.key, `${key}#token`, token.token)
    await this.run('write the shared OAuth token', async () => {
      if (ttlMs <= 0) await this.client.del(key) // already expired: nothing worth sharing
      else await this.client.multi().del(key).hSet(key, { token: sealed, expiresAt: String(token.expiresAt) }).pExpire(key, ttlMs).exec()
    })
  }

  async takeLock (name: FleetLockName, ttlMs: number): Promise<FleetLock | undefined> {
    const owner = newLockOwner()
    const key = this.keyOf(LOCK_KEYS[name])
    const reply = await this.run(`take the ${name} lock`, () => this.client.set(key, owner, { condition: 'NX', expiration: { type: 'PX', value: Math.max(1, Math.ceil(ttlMs)) } }))
    return reply === 'OK' ? { name, owner } : undefined
  }

  async releaseLock (lock: FleetLock): Promise<boolean> {
    const key = this.keyOf(LOCK_KEYS[lock.name])
    const deleted = await this.run(`release the ${lock.name} lock`, () => this.client.eval(RELEASE_LOCK, { keys: [key], arguments: [lock.owner] }))
    return deleted === 1
  }

  async countLoginAttempt (): Promise<number> {
    const key = this.keyOf('failures')
    return await this.run('count a login attempt', () => this.client.incr(key))
  }

  async uncountLoginAttempt (): Promise<number> {
    const key = this.keyOf('failures')
    return Number(await this.run('take back a login attempt', () => this.client.eval(UNCOUNT_ATTEMPT, { keys: [key] })))
  }

  async readLoginFailures (): Promise<number> {
    const key = this.keyOf('failures')
    const value = await this.run('read the login failure count', () => this.client.get(key))
    return value === null ? 0 : Number(value)
  }

  async resetLoginFailures (): Promise<void> {
    const key = this.keyOf('failures')
    await this.run('reset the login failure count', () => this.client.del(key))
  }

  async readPassword (): Promise<PasswordGeneration | undefined> {
    const key = this.keyOf('password')
    const fields = await this.run('read the password generation', () => this.client.hGetAll(key))
    if (fields.password === undefined) return undefined
    return {
      generation: Number(fields.generation),
      password: open(this.key, `${key}#password`, fields.password),
      changedAt: Number(fields.changedAt)
    }
  }

  async publishPassword (next: PasswordGeneration): Promise<boolean> {
    return await this.storePassword(next, 'next')
  }

  async seedPassword (held: PasswordGeneration): Promise<boolean> {
    return await this.storePassword(held, 'seed')
  }

  private async storePassword (generation: PasswordGeneration, rule: 'next' | 'seed'): Promise<boolean> {
    const key = this.keyOf('password')
    const sealed = seal(this.key, `${key}#password`, generation.password)
    const change: FleetChange = { kind: 'password', generation: generation.generation }
    const stored = await this.run(rule === 'next' ? 'publish the password generation' : 're-seed the password generation', () => this.client.eval(PUBLISH_PASSWORD, {
      keys: [key],
      arguments: [String(generation.generation), sealed, String(generation.changedAt), this.channel, JSON.stringify(change), rule]
    }))
    return stored === 1
  }

  subscribe (listener: FleetChangeListener): () => void {
    const wrapper: FleetChangeListener = (change) => listener(change)
    this.listeners.add(wrapper)
    return () => { this.listeners.delete(wrapper) }
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.listeners.clear()
    // destroy(), not close(): a client still retrying its first connection has nothing to flush, and close() would wait for it.
    for (const client of [this.client, this.subscriber]) {
      if (client.isOpen) client.destroy()
    }
  }

  private keyOf (name: 'session' | 'oauth' | 'lock' | 'rotation-lock' | 'failures' | 'password'): string {
    return `${this.base}${name}`
  }

  /** Runs one command; any failure becomes a FleetStoreUnavailableError naming what failed, without the URL or its password. */
  private async run<T> (what: string, command: () => Promise<T>): Promise<T> {
    if (this.closed) throw new FleetStoreClosedError()
    try {
      return await command()
    } catch (error) {
      throw new FleetStoreUnavailableError(`cannot ${what} in Redis: ${this.describe(error)}`)
    }
  }

  private describe (error: unknown): string {
    const text = error instanceof Error ? `${error.name === 'Error' ? '' : `${error.name}: `}${error.message}` : String(error)
    return this.redact(text === '' ? 'unknown error' : text)
  }

  private watch (client: Client): void {
    client.on('error', (error: unknown) => {
      if (this.closed) return
      const message = this.describe(error)
      if (this.problems.has(message)) return
      this.problems.add(message)
      this.log('warn', `fleet store: Redis: ${message}`)
    })
    client.on('ready', () => {
      if (this.closed || !this.client.isReady || !this.subscriber.isReady) return
      if (this.problems.size > 0) {
        this.problems.clear()
        this.log('info', 'fleet store: Redis connection restored')
      }
      // After an outage the Redis may have lost its state (no persistence): the replicas re-seed it.
      this.dispatchLocal({ kind: 'connected' })
    })
  }

  private dispatch (message: string): void {
    let change: FleetChange
    try {
      change = JSON.parse(message) as FleetChange
    } catch {
      return // not ours: nothing on this channel is worth a crash
    }
    this.dispatchLocal(change)
  }

  private dispatchLocal (change: FleetChange): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(change)
      } catch (error) {
        this.log('warn', `fleet store: a change listener failed: ${this.describe(error)}`)
      }
    }
  }
}
