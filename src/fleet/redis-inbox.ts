// The callback inbox of a fleet: one Redis stream under the account's keys, so that any replica receives a callback
// and any replica serves the reads. Each entry is sealed with the fleet key, so someone who can write Redis cannot
// plant a callback a client would act on: an entry that does not open is skipped (and reported). Retention (count,
// bytes, age) is applied by the script that appends, so the stream stays bounded whoever writes to it.
//
// Keys under the account's base (redis-store.ts):
//   callbacks                          stream: record (sealed), at (Redis clock, ms), bytes
//   callbacks:seq                      the last seq given
//   callbacks:bytes                    the bytes of the entries kept
//   callbacks:req:<sha256(requestId)>  set of one request's seqs, expiring with the retention age
//   callbacks:stored                   pub/sub channel: a seq was stored (wakes the long polls of every replica)
// Stream ids are `<seq div 1000>-<seq mod 1000>`, seq being the Redis clock in ms times 1000 plus a counter: cursors
// are numbers as in the file inbox, increase across replicas and never repeat.

import { createHash } from 'node:crypto'
import type { createClient } from '@redis/client'
import { openRecord, sealRecord } from './crypto.js'
import { messageOf } from '../errors.js'
import {
  InboxUnavailableError,
  MAX_PAGE_BYTES,
  type CallbackInbox,
  type CallbackMessage,
  type StoredCallback
} from '../callbacks/inbox.js'

type Client = ReturnType<typeof createClient>

export interface InboxRetention {
  count: number
  bytes: number
  ageMs: number
}

/**
 * A last seq (callbacks:seq, or the stream's last generated id, which the next entry's must follow) more than a day of
 * seqs ahead of the Redis clock, or past what a JavaScript number holds exactly: no appends can have put it there (a
 * thousand per millisecond for a day), so it was written by something else, or the Redis clock set back by a day.
 * Going on from it would break the cursors (seqs beyond 2^53 collide, and readers are refused a cursor that large);
 * callbacks are refused instead, saying why, until an operator repairs it.
 */
const SEQ_AHEAD_LIMIT = 86_400_000 * 1000
const SEQ_TAMPERED =
  'callbacks:seq is more than a day ahead of the Redis clock (written by something else?): callbacks are not ' +
  'stored until it is repaired (docs/fleet.md)'

/**
 * Appends ARGV[1] (sealed record; ARGV[2] its bytes) at the next seq of the Redis clock, indexes it under its request
 * (KEYS[4], when ARGV[3] is 1), trims to the retention (ARGV[4] count, ARGV[5] bytes, ARGV[6] age ms), announces it on
 * KEYS[5]'s channel and returns the seq. The record is sealed before the seq is known: the reader takes the seq from
 * the stream id, never from the record.
 */
const APPEND = `local time = redis.call('TIME')
local nowMs = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local seq = nowMs * 1000
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if last and redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      local ms, n = string.match(info[i + 1], '^(%d+)-(%d+)$')
      local topSeq = tonumber(ms) * 1000 + tonumber(n)
      if topSeq > last then last = topSeq end
    end
  end
end
if last == nil or last > seq + ${SEQ_AHEAD_LIMIT} or last >= ${Number.MAX_SAFE_INTEGER} then
  return redis.error_reply('${SEQ_TAMPERED}')
end
if last >= seq then seq = last + 1 end
redis.call('SET', KEYS[2], string.format('%.0f', seq))
local id = string.format('%.0f', math.floor(seq / 1000)) .. '-' .. string.format('%.0f', seq % 1000)
redis.call('XADD', KEYS[1], id, 'record', ARGV[1], 'at', string.format('%.0f', nowMs), 'bytes', ARGV[2])
redis.call('INCRBY', KEYS[3], ARGV[2])
if ARGV[3] == '1' then
  redis.call('SADD', KEYS[4], string.format('%.0f', seq))
  redis.call('PEXPIRE', KEYS[4], ARGV[6])
end
local cutoff = nowMs - tonumber(ARGV[6])
while true do
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
  if not first then break end
  local fields = {}
  for i = 1, #first[2], 2 do fields[first[2][i]] = first[2][i + 1] end
  local tooMany = redis.call('XLEN', KEYS[1]) > tonumber(ARGV[4])
  local tooLarge = tonumber(redis.call('GET', KEYS[3]) or '0') > tonumber(ARGV[5])
  if not tooMany and not tooLarge and (tonumber(fields['at']) or 0) >= cutoff then break end
  redis.call('XDEL', KEYS[1], first[1])
  redis.call('DECRBY', KEYS[3], tonumber(fields['bytes']) or 0)
end
redis.call('PUBLISH', KEYS[5], string.format('%.0f', seq))
return string.format('%.0f', seq)`

function isStoredRecord (value: unknown): value is Omit<StoredCallback, 'seq'> {
  if (typeof value !== 'object' || value === null) return false
  const record = value as Record<string, unknown>
  return (
    typeof record.service === 'string' &&
    typeof record.receivedAt === 'string' &&
    (record.requestId === null || typeof record.requestId === 'string') &&
    Array.isArray(record.deviceIds)
  )
}

const idOf = (seq: number): string => `${Math.floor(seq / 1000)}-${seq % 1000}`
const seqOf = (id: string): number => {
  const [ms = '0', counter = '0'] = id.split('-')
  return Number(ms) * 1000 + Number(counter)
}

export interface RedisCallbackInboxOptions {
  /** The fleet store's command connection (offline queue off: Redis down fails at once). */
  client: Client
  /** A connection of its own for the announcements (pub/sub). */
  subscriber: Client
  /** The account's key base (accountKeyBase). */
  base: string
  fleetKey: Buffer
  retention: InboxRetention
  /** Entries whose record is larger are skipped, never read into this process (written from outside). */
  maxRecordBytes: number
  now?: () => number
  /** An entry that did not open with the fleet key: skipped, reported once per entry. */
  onUnreadable?: (id: string) => void
  /** Sends one command: the fleet store's, with its answer deadline and its errors. */
  run: <T>(what: string, send: () => Promise<T>) => Promise<T>
}

/**
 * Reads up to ARGV[3] entries from ARGV[1] to ARGV[2] (XRANGE's bounds), their records only, and stops after the entry
 * that brings the page past ARGV[4] bytes (one at least); a record larger than ARGV[5] is returned empty, as one that
 * does not open: an entry written from outside (its plain fields forged too) stays in Redis, not in this process.
 */
const READ_PAGE = `local entries = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', tonumber(ARGV[3]))
local page = {}
local bytes = 0
for _, entry in ipairs(entries) do
  local record = ''
  for i = 1, #entry[2], 2 do
    if entry[2][i] == 'record' then record = entry[2][i + 1] end
  end
  if #record > tonumber(ARGV[5]) then record = '' end
  table.insert(page, { entry[1], record })
  bytes = bytes + #record
  if bytes > tonumber(ARGV[4]) then break end
end
return page`

/** The Redis clock time (ms) of the oldest entry's `at`, without reading its record; nil without entries. */
const OLDEST_AT = `local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
if not first then return nil end
for i = 1, #first[2], 2 do
  if first[2][i] == 'at' then return first[2][i + 1] end
end
return nil`

/** Stream entries read at once for one request's callbacks. */
const FOR_REQUEST_BATCH = 256

/**
 * Whatever fails in Redis for the callbacks (the entries, the Device Location keys) is Redis out of reach (the store's
 * errors name what failed, never the URL): the listeners answer it as something to try again, 503 with Retry-After.
 */
export async function orInboxUnavailable<T> (sending: Promise<T>): Promise<T> {
  try {
    return await sending
  } catch (error) {
    throw new InboxUnavailableError(messageOf(error))
  }
}

export class RedisCallbackInbox implements CallbackInbox {
  private readonly stream: string
  private readonly channel: string
  private readonly listeners = new Set<() => void>()
  private readonly now: () => number
  private readonly run: <T>(what: string, send: () => Promise<T>) => Promise<T>
  private readonly reportedUnreadable = new Set<string>()
  private lastStats = { count: 0, bytes: 0, oldestAgeSeconds: 0 }
  private refreshing = false
  private closed = false

  constructor (private readonly options: RedisCallbackInboxOptions) {
    this.stream = `${options.base}callbacks`
    this.channel = `${options.base}callbacks:stored`
    this.now = options.now ?? Date.now
    this.run = async (what, send) => await orInboxUnavailable(options.run(what, send))
    options.subscriber.connect().catch(() => {})
    options.subscriber.subscribe(this.channel, () => { this.notify() }).catch(() => {})
  }

  async append (message: CallbackMessage): Promise<StoredCallback> {
    const receivedAt = new Date(this.now()).toISOString()
    const record = sealRecord(this.options.fleetKey, this.stream, { receivedAt, ...message })
    const requestKey = this.requestKey(message.requestId ?? '')
    const { retention } = this.options
    const seq = Number(await this.run('store a callback', async () => await this.options.client.eval(APPEND, {
      keys: [this.stream, `${this.stream}:seq`, `${this.stream}:bytes`, requestKey, this.channel],
      arguments: [
        record,
        String(Buffer.byteLength(record)),
        message.requestId === null ? '0' : '1',
        String(retention.count),
        String(retention.bytes),
        String(retention.ageMs)
      ]
    })))
    this.notify()
    return { seq, receivedAt, ...message }
  }

  async after (after: number, limit: number): Promise<StoredCallback[]> {
    return this.opened(await this.readPage(`(${idOf(after)}`, '+', limit))
  }

  async forRequest (requestId: string): Promise<StoredCallback[]> {
    const members = await this.run('read a request\'s callbacks', async () =>
      await this.options.client.sMembers(this.requestKey(requestId)))
    const seqs = members.map(Number).sort((a, b) => a - b)
    const found: StoredCallback[] = []
    // In batches sent together (node-redis pipelines the commands of one tick): a bulk request's thousands of
    // callbacks cost a few round trips, not one each.
    for (let start = 0; start < seqs.length; start += FOR_REQUEST_BATCH) {
      const batch = seqs.slice(start, start + FOR_REQUEST_BATCH).map(idOf)
      const ranges = await Promise.all(batch.map(async (id) => await this.readPage(id, id, 1)))
      for (const entries of ranges) found.push(...this.opened(entries))
    }
    // The index is plain: whatever it names must also say so in its sealed record.
    return found.filter((record) => record.requestId === requestId)
  }

  stats (): { count: number; bytes: number; oldestAgeSeconds: number } {
    if (!this.refreshing && !this.closed) {
      this.refreshing = true
      void this.refreshStats().finally(() => { this.refreshing = false })
    }
    return this.lastStats
  }

  subscribe (listener: () => void): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  async close (): Promise<void> {
    this.closed = true
    this.listeners.clear()
    if (this.options.subscriber.isOpen) this.options.subscriber.destroy()
  }

  private notify (): void {
    for (const listener of [...this.listeners]) listener()
  }

  private requestKey (requestId: string): string {
    return `${this.stream}:req:${createHash('sha256').update(requestId, 'utf8').digest('hex').slice(0, 32)}`
  }

  /** Entries from `start` to `end` (XRANGE's bounds), `count` at most and one page's bytes: ids and records. */
  private async readPage (start: string, end: string, count: number): Promise<Array<{ id: string; record: string }>> {
    const page = await this.run('read callbacks', async () => await this.options.client.eval(READ_PAGE, {
      keys: [this.stream],
      arguments: [start, end, String(count), String(MAX_PAGE_BYTES), String(this.options.maxRecordBytes)]
    })) as Array<[string, string]>
    return page.map(([id, record]) => ({ id, record }))
  }

  /** The entries that open with the fleet key and are within the retention age, as stored callbacks. */
  private opened (entries: Array<{ id: string; record: string }>): StoredCallback[] {
    const oldestAllowed = this.now() - this.options.retention.ageMs
    return entries.flatMap(({ id, record: sealed }) => {
      try {
        const record = openRecord(this.options.fleetKey, this.stream, sealed, isStoredRecord)
        if (Date.parse(record.receivedAt) < oldestAllowed) return []
        return [{ seq: seqOf(id), ...record }]
      } catch {
        if (!this.reportedUnreadable.has(id)) {
          this.reportedUnreadable.add(id)
          this.options.onUnreadable?.(id)
        }
        return []
      }
    })
  }

  private async refreshStats (): Promise<void> {
    try {
      const { client } = this.options
      const [count, bytes, oldestAt] = await Promise.all([
        this.run('count callbacks', async () => await client.xLen(this.stream)),
        this.run('count callbacks', async () => await client.get(`${this.stream}:bytes`)),
        // Its time only: the oldest entry's record may be large (or written from outside), and a scrape reads this.
        this.run('count callbacks', async () => await client.eval(OLDEST_AT, { keys: [this.stream] }))
      ])
      const at = Number(oldestAt ?? NaN)
      this.lastStats = {
        count,
        bytes: Number(bytes ?? 0),
        oldestAgeSeconds: Number.isFinite(at) ? Math.max(0, (this.now() - at) / 1000) : 0
      }
    } catch {
      // Redis unreachable: the last figures stay; the fleet store's own metric says it is down
    }
  }
}
