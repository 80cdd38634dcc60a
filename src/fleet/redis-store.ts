// The Redis fleet store: the FleetStore port on one Redis primary (node-redis). Every record the replicas act on is
// sealed with the fleet key (AES-256-GCM, the key name as associated data), so that someone who can write Redis but has
// no fleet key can at worst deny service: a changed field does not verify, a replayed record is older than what the
// replicas verified before (their ledgers: a replica with an empty state directory has none, docs/fleet.md).
//
// Keys, all under `${keyPrefix}${sha256(username) first 16 hex}:` (one account's state, so that fleets and accounts
// share a Redis): session   hash  record (sealed {token, loggedInAt}), loggedInAt, lastUsedAt (plain copies for the Lua
// scripts only), use (sealed {loggedInAt, lastUsedAt})                no TTL: the readers judge idleness by the sealed
// use oauth     hash  record (sealed {token, expiresAt})                  PX until expiresAt lock      string owner id
// of the login lock                       SET NX PX; released by compare-and-delete rotation-lock string owner id of
// the password rotation lock         the same oauth-lock string owner id of the OAuth token fetch lock           the
// same failures  string consecutive counted logins                       no TTL: lasts until a success; each replica
// also keeps the highest count it saw (FleetLedger), so a count set back from outside buys no extra attempt password
// hash  generation (plain copy for the Lua script), record (sealed {generation, password, changedAt, publisher})
// throttle  string end of the fleet's sending pause (Redis clock, ms)  PX the pause: replicas read only its time to
// live send-slots string next free slot of the contracted rate (Redis clock, µs)  PX until idle again location-keys
// hash  field per Device Location callback service: sealed [key, previous key] (callbacks/location-keys.ts)
// changes   pub/sub channel of FleetChange JSON (never a secret; a forged one only makes replicas re-read, or pause)
// The plain copies are never trusted: a reader refuses a record whose plain copy disagrees with the sealed one. The
// account part is a plain
// hash of the user name, not keyed with the fleet key: a replica given another fleet key must find the same keys and
// fail loudly (FleetKeyMismatchError), not start a second state and a second lockout budget beside the first.

import { createHash } from 'node:crypto'
import { hostname } from 'node:os'
import { createClient, ErrorReply } from '@redis/client'
import { systemClock, type Clock } from '../clock.js'
import { AnswerDeadline } from './answer-deadline.js'
import { FleetKeyMismatchError, FleetRecordForgedError, openRecord, sealRecord } from './crypto.js'
import { isKeyList, withNewKey, type LocationKeyStore } from '../callbacks/location-keys.js'
import { isReplicaBeat, lockTag, type ReplicaBeat } from './replicas.js'
import { orInboxUnavailable, RedisCallbackInbox, type InboxRetention } from './redis-inbox.js'
import { UntrustedRecordError } from '../session/shared-session.js'
import {
  FleetStoreClosedError,
  newLockOwner,
  type FleetChange,
  type FleetChangeListener,
  type FleetLock,
  type FleetLockName,
  type FleetStore,
  type PasswordGeneration,
  type SharedOAuthToken,
  type SharedSession
} from './store.js'

/**
 * A lock whose time left no replica could have given it (no expiry, or more than this many times the TTL asked for) was
 * written from outside: waited for, it would hold every login of the fleet (for ever, or an hour); it is taken over.
 */
const FORGED_LOCK_TTL_FACTOR = 10
/**
 * Takes the lock for owner ARGV[1] for ARGV[2] ms: 'taken'; or, held by a lock with no expiry or more than ARGV[3] ms
 * left (forged), takes it over and returns the time it had left (-1: none); nil while another holder has it.
 */
const TAKE_LOCK = `if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 'taken' end
local left = redis.call('PTTL', KEYS[1])
if left == -1 or left > tonumber(ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return left
end
return nil`
/** A refusal of Redis (see reportRefusal) is logged at most once in this time per message. */
const REFUSAL_REPORT_INTERVAL_MS = 60_000
/** Deletes the lock only if it still holds this owner's id. */
const RELEASE_LOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end"
/**
 * Moves the last use forward only (ARGV[2], sealed in ARGV[3]), and only on the stored session logged in at ARGV[1]; 1
 * when that session is stored. The plain fields only order the writes: readers trust the sealed ones.
 */
const TOUCH_SESSION = `if redis.call('HGET', KEYS[1], 'loggedInAt') ~= ARGV[1] or redis.call('HEXISTS', KEYS[1], 'record') == 0 then return 0 end
local current = tonumber(redis.call('HGET', KEYS[1], 'lastUsedAt')) or 0
if tonumber(ARGV[2]) > current then redis.call('HSET', KEYS[1], 'lastUsedAt', ARGV[2], 'use', ARGV[3]) end
return 1`
/** Writes the session hash only if none is stored, then notifies. */
const SEED_SESSION = `if redis.call('HEXISTS', KEYS[1], 'record') == 1 then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'record', ARGV[1], 'loggedInAt', ARGV[2], 'lastUsedAt', ARGV[3], 'use', ARGV[6])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1`
/** Decrements, never below 0. */
const UNCOUNT_ATTEMPT = `local current = tonumber(redis.call('GET', KEYS[1])) or 0
if current <= 0 then redis.call('DEL', KEYS[1]) return 0 end
return redis.call('DECR', KEYS[1])`
/**
 * Publishes generation ARGV[1] only if the stored one is ARGV[1] - 1 (ARGV[6] 'next'), or older (ARGV[6] 'seed'), then
 * notifies. A hash without a sealed record (deleted, or an earlier version's format) counts as none. The plain
 * generation only orders the writes: raised from outside it can block publishing (denial of service), never make a
 * replica act.
 */
const PUBLISH_PASSWORD = `local current = 0
if redis.call('HEXISTS', KEYS[1], 'record') == 1 then current = tonumber(redis.call('HGET', KEYS[1], 'generation')) or 0 end
local wanted = tonumber(ARGV[1])
if ARGV[6] == 'next' and wanted ~= current + 1 then return 0 end
if ARGV[6] == 'seed' and wanted <= current then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'generation', ARGV[1], 'record', ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1`
/** Raises the count to at least ARGV[1] (a replica that saw a higher count than the store now holds puts it back). */
const RAISE_FAILURES = `local raw = redis.call('GET', KEYS[1])
local current = 0
if raw then
  current = (string.match(raw, '^%d+$') and #raw <= 15) and tonumber(raw) or -1
  if current > tonumber(ARGV[2]) then current = -1 end
end
local wanted = tonumber(ARGV[1])
if wanted > current then redis.call('SET', KEYS[1], ARGV[1]) return wanted end
return current`

/** The Redis server's clock in microseconds (TIME), so that the replicas' clocks need not agree. */
const REDIS_NOW_US = "local time = redis.call('TIME')\nlocal now = tonumber(time[1]) * 1000000 + tonumber(time[2])\n"
/** Extends (never shortens) the fleet's pause to ARGV[1] ms from now, then notifies. */
const PAUSE_SENDING = `${REDIS_NOW_US}local pause = tonumber(ARGV[1])
local ending = math.floor(now / 1000) + pause
if ending > (tonumber(redis.call('GET', KEYS[1])) or 0) then redis.call('SET', KEYS[1], string.format('%.0f', ending), 'PX', pause) end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1`
/**
 * Takes the next slot of the contracted rate (interval ARGV[1] µs) at least ARGV[2] µs from now: returns the wait in
 * µs, or -1 when it would pass ARGV[3] µs. A next slot further ahead than any taker could have set was written from
 * outside: ignored.
 */
const TAKE_SEND_SLOT = `${REDIS_NOW_US}local interval = tonumber(ARGV[1])
local maxWait = tonumber(ARGV[3])
local nextAt = tonumber(redis.call('GET', KEYS[1])) or 0
if nextAt > now + maxWait + interval then nextAt = 0 end
local sendAt = math.max(nextAt, now + tonumber(ARGV[2]))
if sendAt - now > maxWait then return -1 end
redis.call('SET', KEYS[1], string.format('%.0f', sendAt + interval), 'PX', math.ceil((sendAt + interval - now) / 1000) + 1000)
return math.floor(sendAt - now)`

interface SessionRecord {
  token: string
  loggedInAt: number
}
interface UseRecord {
  loggedInAt: number
  lastUsedAt: number
}
interface OAuthRecord {
  token: string
  expiresAt: number
}
interface PasswordRecord {
  generation: number
  password: string
  changedAt: number
  publisher: string
}

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null
const isTime = (value: unknown): value is number => typeof value === 'number' && Number.isFinite(value)
const isSessionRecord = (value: unknown): value is SessionRecord =>
  isObject(value) && typeof value.token === 'string' && isTime(value.loggedInAt)
const isUseRecord = (value: unknown): value is UseRecord =>
  isObject(value) && isTime(value.loggedInAt) && isTime(value.lastUsedAt)
const isOAuthRecord = (value: unknown): value is OAuthRecord =>
  isObject(value) && typeof value.token === 'string' && isTime(value.expiresAt)
const isPasswordRecord = (value: unknown): value is PasswordRecord =>
  isObject(value) &&
  Number.isSafeInteger(value.generation) &&
  typeof value.password === 'string' &&
  isTime(value.changedAt) &&
  typeof value.publisher === 'string'

/** Key of each lock; the login lock keeps the name `lock`, which earlier versions used. */
const LOCK_KEYS = { login: 'lock', rotation: 'rotation-lock', oauth: 'oauth-lock' } as const

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
  /**
   * A command not answered within this fails, and Redis counts as unreachable until it answers (answer-deadline.ts;
   * default 2000, M2M_PROXY_REDIS_TIMEOUT_MS).
   */
  commandTimeoutMs?: number
  /** Who publishes a password generation (host and process), sealed with it; default this host and pid. */
  replicaId?: string
  /**
   * Redis refused the first connection in a way no retry can fix (wrong password or user, a database number it does
   * not have); called once, with the reason (never the URL or its password). Later on, the same refusals are retried
   * like any outage: a replica that ran keeps serving with the session it holds.
   */
  onPermanentError?: (reason: string) => void
}

/** Refusals of the connection handshake (AUTH, SELECT) that no reconnect can fix. */
const PERMANENT_REFUSAL = /^(WRONGPASS|NOAUTH|NOPERM)\b|^ERR (DB index is out of range|invalid DB index|AUTH|invalid password|invalid username)/i

type Client = ReturnType<typeof createClient>

/**
 * Removes the URL, its password and its user name (raw and decoded) from a message: the password wherever it appears,
 * the user name only as a word of its own, so that a short one (`u`) leaves Redis's own words readable.
 */
export function redactor (url: string): (text: string) => string {
  const passwords: string[] = []
  const usernames: string[] = []
  const withDecoded = (part: string, into: string[]): void => {
    if (part === '') return
    into.push(part)
    try {
      into.push(decodeURIComponent(part))
    } catch {
      // not valid percent-encoding: the raw form is already listed
    }
  }
  try {
    const parsed = new URL(url)
    withDecoded(parsed.password, passwords)
    // A user name without a password may be a password written in the wrong place: removed wherever it appears.
    withDecoded(parsed.username, parsed.password === '' ? passwords : usernames)
  } catch {
    // an unparseable URL: only the whole of it is removed
  }
  const longestFirst = (secrets: string[]): string[] =>
    [...new Set(secrets)].filter((secret) => secret.length > 0).sort((a, b) => b.length - a.length)
  const substrings = longestFirst([url, ...passwords])
  const words = longestFirst(usernames).map(
    (name) => new RegExp(`(?<![\\p{L}\\p{N}])${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?![\\p{L}\\p{N}])`, 'gu')
  )
  return (text) => {
    const withoutSecrets = substrings.reduce((result, secret) => result.split(secret).join('***'), text)
    return words.reduce((result, word) => result.replace(word, '***'), withoutSecrets)
  }
}

export class RedisFleetStore implements FleetStore {
  private readonly client: Client
  private readonly subscriber: Client
  private readonly base: string
  private readonly channel: string
  private readonly key: Buffer
  private readonly clock: Clock
  readonly replicaId: string
  private readonly redact: (text: string) => string
  private readonly log: (level: 'warn' | 'info', message: string) => void
  private readonly listeners = new Set<FleetChangeListener>()
  private subscribed = false
  private closed = false
  /** Both connections were ready once: refusals from then on are retried (onPermanentError). */
  private everReady = false
  private permanentReported = false
  private readonly onPermanentError: ((reason: string) => void) | undefined
  private readonly deadline: AnswerDeadline
  /**
   * Problems logged since the connections were last both up: a Redis down for an hour is a line or two, not one per
   * retry.
   */
  private readonly problems = new Set<string>()
  /** When each refusal of Redis was last logged (reportRefusal). */
  private readonly refusalsReportedAt = new Map<string, number>()

  /**
   * Starts connecting in the background (reconnecting with backoff) and returns at once; `connected` tells when ready.
   */
  constructor (options: RedisFleetStoreOptions) {
    this.base = accountKeyBase(options.keyPrefix, options.username)
    this.channel = `${this.base}changes`
    this.key = options.fleetKey
    this.clock = options.clock ?? systemClock
    this.replicaId = options.replicaId ?? `${hostname()}/${process.pid}`
    this.redact = redactor(options.url)
    this.log = options.log ?? (() => {})
    this.onPermanentError = options.onPermanentError
    const maxDelay = options.reconnectMaxDelayMs ?? 5000
    const commandTimeoutMs = options.commandTimeoutMs ?? 2000
    this.deadline = new AnswerDeadline({
      timeoutMs: commandTimeoutMs,
      clock: this.clock,
      onChange: (stalled) => {
        if (this.closed) return
        if (stalled) {
          this.log('warn', `fleet store: Redis has not answered within ${commandTimeoutMs} ms (M2M_PROXY_REDIS_TIMEOUT_MS): unreachable until it answers`)
          return
        }
        this.log('info', 'fleet store: Redis answers again')
        this.dispatchLocal({ kind: 'connected' })
      }
    })
    this.client = createClient({
      url: options.url,
      // Redis down: fail at once rather than queue a login decision for later.
      disableOfflineQueue: true,
      commandOptions: { timeout: commandTimeoutMs },
      socket: { reconnectStrategy: (retries: number) => Math.min(100 * 2 ** Math.min(retries, 16), maxDelay) }
    })
    // Pub/sub needs a connection of its own; its SUBSCRIBE waits in its queue until it connects, and node-redis
    // resubscribes after a reconnect.
    this.subscriber = this.client.duplicate({ disableOfflineQueue: false })
    this.watch(this.client)
    this.watch(this.subscriber)
    // errors arrive through the 'error' listener; a closed store ends the attempts
    this.client.connect().catch(() => {})
    this.subscriber.connect().catch(() => {})
    this.subscriber
      .subscribe(this.channel, (message) => this.dispatch(message))
      .then(
        () => {
          this.subscribed = true
        },
        () => {}
      )
  }

  get connected (): boolean {
    return !this.closed && this.client.isReady && this.subscriber.isReady && this.subscribed && !this.deadline.stalled
  }

  async readSession (): Promise<SharedSession | undefined> {
    const key = this.keyOf('session')
    const fields = await this.run('read the shared session', () => this.client.hGetAll(key))
    if (fields.record === undefined) return undefined
    const record = openRecord(this.key, `${key}#record`, fields.record, isSessionRecord)
    if (Number(fields.loggedInAt) !== record.loggedInAt) {
      throw new FleetRecordForgedError(key, 'its plain login time differs from the sealed one')
    }
    let lastUsedAt = record.loggedInAt
    if (fields.use !== undefined) {
      const use = openRecord(this.key, `${key}#use`, fields.use, isUseRecord)
      if (use.loggedInAt !== record.loggedInAt) {
        throw new FleetRecordForgedError(key, 'its last use belongs to another session')
      }
      lastUsedAt = Math.max(lastUsedAt, use.lastUsedAt)
    }
    return { token: record.token, loggedInAt: record.loggedInAt, lastUsedAt }
  }

  async writeSession (session: SharedSession): Promise<void> {
    const key = this.keyOf('session')
    const fields = this.sessionFields(key, session)
    await this.run('write the shared session', () =>
      this.client
        .multi()
        .del(key)
        .hSet(key, fields)
        .publish(this.channel, JSON.stringify({ kind: 'session' } satisfies FleetChange))
        .exec()
    )
  }

  async touchSession (loggedInAt: number, lastUsedAt: number): Promise<boolean> {
    const key = this.keyOf('session')
    const use = sealRecord(this.key, `${key}#use`, { loggedInAt, lastUsedAt } satisfies UseRecord)
    const stored = await this.run('touch the shared session', () =>
      this.client.eval(TOUCH_SESSION, { keys: [key], arguments: [String(loggedInAt), String(lastUsedAt), use] })
    )
    return stored === 1
  }

  async seedSession (session: SharedSession): Promise<boolean> {
    const key = this.keyOf('session')
    const fields = this.sessionFields(key, session)
    const written = await this.run('re-seed the shared session', () =>
      this.client.eval(SEED_SESSION, {
        keys: [key],
        arguments: [
          fields.record,
          fields.loggedInAt,
          fields.lastUsedAt,
          this.channel,
          JSON.stringify({ kind: 'session' } satisfies FleetChange),
          fields.use
        ]
      })
    )
    return written === 1
  }

  async clearSession (): Promise<void> {
    const key = this.keyOf('session')
    await this.run('clear the shared session', () =>
      this.client
        .multi()
        .del(key)
        .publish(this.channel, JSON.stringify({ kind: 'session', ended: true } satisfies FleetChange))
        .exec()
    )
  }

  async readOAuthToken (): Promise<SharedOAuthToken | undefined> {
    const key = this.keyOf('oauth')
    const fields = await this.run('read the shared OAuth token', () => this.client.hGetAll(key))
    if (fields.record === undefined) return undefined
    const record = openRecord(this.key, `${key}#record`, fields.record, isOAuthRecord)
    if (!(record.expiresAt > this.clock.now())) return undefined
    return { token: record.token, expiresAt: record.expiresAt }
  }

  async writeOAuthToken (token: SharedOAuthToken): Promise<void> {
    const key = this.keyOf('oauth')
    const ttlMs = Math.ceil(token.expiresAt - this.clock.now())
    const record = sealRecord(this.key, `${key}#record`, {
      token: token.token,
      expiresAt: token.expiresAt
    } satisfies OAuthRecord)
    await this.run('write the shared OAuth token', async () => {
      if (ttlMs <= 0) await this.client.del(key) // already expired: nothing worth sharing
      else await this.client.multi().del(key).hSet(key, { record }).pExpire(key, ttlMs).exec()
    })
  }

  async takeLock (name: FleetLockName, ttlMs: number): Promise<FleetLock | undefined> {
    // Tagged with this replica's lock tag: GET /admin/fleet names the holder.
    const owner = `${lockTag(this.replicaId)}.${newLockOwner()}`
    const key = this.keyOf(LOCK_KEYS[name])
    const ttl = Math.max(1, Math.ceil(ttlMs))
    const forgedAbove = String(FORGED_LOCK_TTL_FACTOR * ttl)
    const reply = await this.run(`take the ${name} lock`, () =>
      this.client.eval(TAKE_LOCK, { keys: [key], arguments: [owner, String(ttl), forgedAbove] })
    )
    if (reply === null) return undefined
    if (reply !== 'taken') {
      const left = Number(reply)
      this.log(
        'warn',
        `fleet store: the ${name} lock (${key}) had ${left === -1 ? 'no expiry' : `${Math.round(left / 1000)} s left`}, ` +
          'more than any replica gives it (written from outside?): taken over'
      )
    }
    return { name, owner }
  }

  async releaseLock (lock: FleetLock): Promise<boolean> {
    const key = this.keyOf(LOCK_KEYS[lock.name])
    const deleted = await this.run(`release the ${lock.name} lock`, () =>
      this.client.eval(RELEASE_LOCK, { keys: [key], arguments: [lock.owner] })
    )
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
    if (value === null) return 0
    return /^\d{1,15}$/.test(value) ? Number(value) : Number.NaN // `1e1`, `-10`, `abc`: not a count a replica wrote
  }

  async resetLoginFailures (): Promise<void> {
    const key = this.keyOf('failures')
    await this.run('reset the login failure count', () => this.client.del(key))
  }

  async raiseLoginFailures (atLeast: number, atMost: number): Promise<number> {
    const key = this.keyOf('failures')
    return Number(
      await this.run('restore the login failure count', () =>
        this.client.eval(RAISE_FAILURES, { keys: [key], arguments: [String(atLeast), String(atMost)] })
      )
    )
  }

  async readPassword (): Promise<PasswordGeneration | undefined> {
    const key = this.keyOf('password')
    const fields = await this.run('read the password generation', () => this.client.hGetAll(key))
    if (fields.record === undefined) return undefined
    const record = openRecord(this.key, `${key}#record`, fields.record, isPasswordRecord)
    if (Number(fields.generation) !== record.generation) {
      throw new FleetRecordForgedError(
        key,
        `its plain generation ${String(fields.generation)} differs from the sealed generation ${record.generation}`
      )
    }
    return {
      generation: record.generation,
      password: record.password,
      changedAt: record.changedAt,
      publisher: record.publisher
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
    const record: PasswordRecord = {
      generation: generation.generation,
      password: generation.password,
      changedAt: generation.changedAt,
      publisher: generation.publisher ?? this.replicaId
    }
    const sealed = sealRecord(this.key, `${key}#record`, record)
    const change: FleetChange = { kind: 'password', generation: generation.generation }
    const stored = await this.run(
      rule === 'next' ? 'publish the password generation' : 're-seed the password generation',
      () =>
        this.client.eval(PUBLISH_PASSWORD, {
          keys: [key],
          arguments: [
            String(generation.generation),
            sealed,
            String(generation.changedAt),
            this.channel,
            JSON.stringify(change),
            rule
          ]
        })
    )
    return stored === 1
  }

  async pauseSending (pauseMs: number): Promise<void> {
    const change: FleetChange = { kind: 'throttle', pauseMs: Math.ceil(pauseMs) }
    await this.run("pause the fleet's sending", () =>
      this.client.eval(PAUSE_SENDING, {
        keys: [this.keyOf('throttle')],
        arguments: [String(change.pauseMs), this.channel, JSON.stringify(change)]
      })
    )
  }

  async readSendingPause (): Promise<number> {
    const left = await this.run("read the fleet's sending pause", () => this.client.pTTL(this.keyOf('throttle')))
    return Math.max(0, left) // -2: no pause, -1: a key without expiry (not ours) counts as none
  }

  async takeSendSlot (intervalMs: number, notBeforeMs: number, maxWaitMs: number): Promise<number> {
    const us = (ms: number): string => String(Math.max(0, Math.round(ms * 1000)))
    const waitUs = Number(
      await this.run('take a send slot of the contracted rate', () =>
        this.client.eval(TAKE_SEND_SLOT, {
          keys: [this.keyOf('send-slots')],
          arguments: [us(intervalMs), us(notBeforeMs), us(maxWaitMs)]
        })
      )
    )
    return waitUs < 0 ? -1 : waitUs / 1000
  }

  subscribe (listener: FleetChangeListener): () => void {
    const wrapper: FleetChangeListener = (change) => listener(change)
    this.listeners.add(wrapper)
    return () => {
      this.listeners.delete(wrapper)
    }
  }

  async writeHeartbeat (beat: ReplicaBeat, keepMs: number): Promise<void> {
    const key = this.keyOf('replicas')
    const field = lockTag(beat.id)
    const sealed = sealRecord(this.key, `${key}#${field}`, beat)
    await this.run('write the heartbeat', async () => {
      await this.client.multi().hSet(key, field, sealed).pExpire(key, Math.max(1, Math.ceil(keepMs))).exec()
    })
  }

  async readHeartbeats (): Promise<{ beats: ReplicaBeat[]; unreadable: number }> {
    const key = this.keyOf('replicas')
    const fields = await this.run('read the heartbeats', () => this.client.hGetAll(key))
    const beats: ReplicaBeat[] = []
    let unreadable = 0
    for (const [field, sealed] of Object.entries(fields)) {
      try {
        const beat = openRecord(this.key, `${key}#${field}`, sealed, isReplicaBeat)
        if (lockTag(beat.id) === field) beats.push(beat)
        else unreadable++
      } catch (error) {
        // another fleet key (FleetKeyMismatchError), another version or a forgery: counted, never trusted
        if (!(error instanceof UntrustedRecordError) && !(error instanceof FleetKeyMismatchError)) throw error
        unreadable++
      }
    }
    return { beats, unreadable }
  }

  async removeHeartbeat (id: string): Promise<void> {
    const key = this.keyOf('replicas')
    await this.run('remove a heartbeat', () => this.client.hDel(key, lockTag(id)))
  }

  async readLoginLockTag (): Promise<string | undefined> {
    const key = this.keyOf(LOCK_KEYS.login)
    const owner = await this.run('read the login lock', () => this.client.get(key))
    return owner === null ? undefined : owner.split('.', 1)[0]
  }

  /** The Device Location callbacks' shared keys: a hash, field = service, each value sealed with the fleet key. */
  openLocationKeys (): LocationKeyStore {
    const key = this.keyOf('location-keys')
    const read = async (service: string): Promise<string[]> => {
      const sealed = await orInboxUnavailable(this.run('read a callback key', () => this.client.hGet(key, service)))
      return sealed == null ? [] : openRecord(this.key, `${key}#${service}`, sealed, isKeyList)
    }
    return {
      keys: read,
      remember: async (service, newKey) => {
        const kept = withNewKey(await read(service), newKey)
        const sealed = sealRecord(this.key, `${key}#${service}`, kept)
        await this.run('store a callback key', () => this.client.hSet(key, service, sealed))
      },
      forget: async (service) => {
        await this.run('remove a callback key', () => this.client.hDel(key, service))
      }
    }
  }

  openCallbackInbox (retention: InboxRetention, maxRecordBytes: number): RedisCallbackInbox {
    const subscriber = this.client.duplicate({ disableOfflineQueue: false })
    this.watch(subscriber)
    return new RedisCallbackInbox({
      client: this.client,
      subscriber,
      base: this.base,
      fleetKey: this.key,
      retention,
      maxRecordBytes,
      now: () => this.clock.now(),
      run: async (what, send) => await this.run(what, send),
      onUnreadable: (id) => {
        this.log('warn', `fleet store: callback ${id} does not open with this fleet key: skipped (written from outside?)`)
      }
    })
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.listeners.clear()
    // destroy(), not close(): a client still retrying its first connection has nothing to flush, and close() would wait
    // for it.
    for (const client of [this.client, this.subscriber]) {
      if (client.isOpen) client.destroy()
    }
  }

  /** The session hash: the sealed record and last use, and the plain copies the Lua scripts compare. */
  private sessionFields (
    key: string,
    session: SharedSession
  ): { record: string; use: string; loggedInAt: string; lastUsedAt: string } {
    return {
      record: sealRecord(this.key, `${key}#record`, {
        token: session.token,
        loggedInAt: session.loggedInAt
      } satisfies SessionRecord),
      use: sealRecord(this.key, `${key}#use`, {
        loggedInAt: session.loggedInAt,
        lastUsedAt: session.lastUsedAt
      } satisfies UseRecord),
      loggedInAt: String(session.loggedInAt),
      lastUsedAt: String(session.lastUsedAt)
    }
  }

  private keyOf (
    name:
      | 'session'
      | 'oauth'
      | 'lock'
      | 'rotation-lock'
      | 'oauth-lock'
      | 'failures'
      | 'password'
      | 'throttle'
      | 'send-slots'
      | 'location-keys'
      | 'replicas'
  ): string {
    return `${this.base}${name}`
  }

  /**
   * Runs one command; any failure becomes a FleetStoreUnavailableError naming what failed, without the URL or its
   * password.
   */
  private async run<T>(what: string, command: () => Promise<T>): Promise<T> {
    if (this.closed) throw new FleetStoreClosedError()
    try {
      return await this.deadline.run(command)
    } catch (error) {
      const message = `cannot ${what} in Redis: ${this.describe(error)}`
      if (error instanceof ErrorReply) this.reportRefusal(message)
      throw new FleetStoreUnavailableError(message)
    }
  }

  /**
   * Redis answered but refused (out of memory, read-only, a script's own refusal): unlike an outage, nothing else
   * logs it. One warning per message and minute.
   */
  private reportRefusal (message: string): void {
    const now = this.clock.now()
    if ((this.refusalsReportedAt.get(message) ?? -Infinity) > now - REFUSAL_REPORT_INTERVAL_MS) return
    if (this.refusalsReportedAt.size >= 100) this.refusalsReportedAt.clear()
    this.refusalsReportedAt.set(message, now)
    this.log('warn', `fleet store: ${message}`)
  }

  private describe (error: unknown): string {
    const text =
      error instanceof Error ? `${error.name === 'Error' ? '' : `${error.name}: `}${error.message}` : String(error)
    return this.redact(text === '' ? 'unknown error' : text)
  }

  private watch (client: Client): void {
    client.on('error', (error: unknown) => {
      if (this.closed) return
      const message = this.describe(error)
      const permanent = !this.everReady && error instanceof Error && PERMANENT_REFUSAL.test(error.message)
      if (permanent && this.onPermanentError !== undefined) {
        if (!this.permanentReported) this.onPermanentError(message)
        this.permanentReported = true
        return
      }
      if (this.problems.has(message)) return
      this.problems.add(message)
      this.log('warn', `fleet store: Redis: ${message}`)
    })
    client.on('ready', () => {
      if (this.closed || !this.client.isReady || !this.subscriber.isReady) return
      this.everReady = true
      this.deadline.reset()
      if (this.problems.size > 0) {
        this.problems.clear()
        this.log('info', 'fleet store: Redis connection restored')
      }
      // After an outage the Redis may have lost its state (no persistence): the replicas re-seed it.
      this.dispatchLocal({ kind: 'connected' })
    })
  }

  private dispatch (message: string): void {
    let parsed: unknown
    try {
      parsed = JSON.parse(message)
    } catch {
      return // not ours: nothing on this channel is worth a crash
    }
    // Anyone who can write Redis can publish here: only the known shapes pass, and they only make
    // replicas re-read, or pause their sending for at most M2M_PROXY_THROTTLE_MAX_PAUSE_MS.
    if (!isObject(parsed)) return
    if (parsed.kind === 'session') { this.dispatchLocal(parsed.ended === true ? { kind: 'session', ended: true } : { kind: 'session' }) } else if (parsed.kind === 'password' && Number.isSafeInteger(parsed.generation)) { this.dispatchLocal({ kind: 'password', generation: parsed.generation as number }) } else if (parsed.kind === 'throttle' && isTime(parsed.pauseMs) && parsed.pauseMs > 0) {
      this.dispatchLocal({ kind: 'throttle', pauseMs: parsed.pauseMs })
    }
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
