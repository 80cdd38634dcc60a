// The callback inbox of one process: an append-only file of JSON lines in the state directory. A callback is
// fsynced before its sender gets the 2xx, so it survives a crash (kill -9) from then on; appends arriving together
// share one write and one fsync. Retention (count, bytes, age) bounds what is kept on disk. In memory there is only an
// index (sequence, request id, time, where the line is in the file): a read reads its lines from the file, so the
// byte retention never becomes the process's memory (issue 21; 32 MiB of kept lines had taken the proxy close to its
// pod's limit under large callbacks).

import fs from 'node:fs'
import path from 'node:path'
import type { FileHandle } from 'node:fs/promises'
import { fsyncDirectory, writeFileAtomicSync } from '../fs/atomic-write.js'
import { errorCode } from '../errors.js'
import { MAX_PAGE_BYTES, type CallbackInbox, type CallbackMessage, type StoredCallback } from './inbox.js'

export const CALLBACK_FILE = 'callbacks.jsonl'
/** A compaction writes the new file here first, and opens it, before it takes the file's place. */
const COMPACTING_SUFFIX = '.compacting'
/** After a compaction failed (a full disk), the next is not tried before this long: each one writes the whole file. */
export const COMPACTION_RETRY_MS = 60_000

/** The file is read at start-up in pieces of this size, not whole: it may hold twice the byte retention. */
const START_UP_READ_BYTES = 1024 * 1024

export { MAX_PAGE_BYTES }

export interface Retention {
  count: number
  bytes: number
  ageMs: number
}

export interface FileInboxOptions {
  /** The clock of the callbacks' times and of the retention's age; default Date.now. */
  now?: () => number
  /** Told when something went wrong that the inbox survives (a compaction that failed): for the log. */
  warn?: (message: string) => void
}

interface Kept {
  seq: number
  requestId: string | null
  receivedAtMs: number
  /** Where its line starts in the file. */
  offset: number
  /** The line's bytes, its newline included. */
  bytes: number
}

interface Pending {
  line: string
  record: StoredCallback
  resolve: (stored: StoredCallback) => void
  reject: (error: unknown) => void
}

/**
 * A read handle on one version of the file. A compaction replaces the file; reads already under way finish on the
 * handle (and the offsets) they started with, and the handle closes after the last of them.
 */
class FileReader {
  private reading = 0
  private retired = false

  constructor (readonly handle: FileHandle) {}

  async read (offset: number, length: number): Promise<Buffer> {
    this.reading++
    try {
      const buffer = Buffer.allocUnsafe(length)
      let filled = 0
      while (filled < length) {
        const { bytesRead } = await this.handle.read(buffer, filled, length - filled, offset + filled)
        if (bytesRead === 0) break
        filled += bytesRead
      }
      return buffer.subarray(0, filled)
    } finally {
      this.reading--
      if (this.retired && this.reading === 0) await this.handle.close()
    }
  }

  async retire (): Promise<void> {
    this.retired = true
    if (this.reading === 0) await this.handle.close()
  }
}
export class FileInbox implements CallbackInbox {
  private readonly kept: Kept[] = []
  private readonly byRequest = new Map<string, Kept[]>()
  private readonly listeners = new Set<() => void>()
  private pending: Pending[] = []
  private flushing: Promise<void> | undefined
  private keptBytes = 0
  /** Lines in the file, retained or not yet compacted away. */
  private linesInFile = 0
  /** The file's length: where the next line goes. */
  private bytesInFile = 0
  private nextSeq = 1
  /** No compaction is tried before this time (after one failed); 0: whenever the file has grown enough. */
  private compactionNotBefore = 0

  private constructor (
    private readonly file: string,
    private handle: FileHandle,
    private reader: FileReader,
    private readonly retention: Retention,
    private readonly now: () => number,
    private readonly warn: (message: string) => void
  ) {}

  /**
   * Opens (or creates) the inbox file and indexes what it holds. A last line cut short by a crash is dropped from the
   * file: it was never acknowledged.
   */
  static async open (stateDir: string, retention: Retention, options: FileInboxOptions = {}): Promise<FileInbox> {
    const file = path.join(stateDir, CALLBACK_FILE)
    // What a compaction cut short by a crash left behind: the file itself was not replaced.
    await fs.promises.rm(`${file}${COMPACTING_SUFFIX}`, { force: true }).catch(() => {})
    const handle = await fs.promises.open(file, 'a', 0o600)
    const reader = new FileReader(await fs.promises.open(file, 'r'))
    const inbox = new FileInbox(file, handle, reader, retention, options.now ?? Date.now, options.warn ?? (() => {}))
    const complete = inbox.indexLines(inbox.reader.handle.fd)
    if (complete < (await handle.stat()).size) await handle.truncate(complete)
    inbox.trim()
    return inbox
  }

  async append (message: CallbackMessage): Promise<StoredCallback> {
    const record: StoredCallback = { seq: this.nextSeq++, receivedAt: new Date(this.now()).toISOString(), ...message }
    const line = `${JSON.stringify(record)}\n`
    return await new Promise((resolve, reject) => {
      this.pending.push({ line, record, resolve, reject })
      this.startFlushing()
    })
  }

  async after (after: number, limit: number): Promise<StoredCallback[]> {
    this.trim()
    const selected: Kept[] = []
    let bytes = 0
    for (const kept of this.kept) {
      if (kept.seq <= after) continue
      if (selected.length > 0 && bytes + kept.bytes > MAX_PAGE_BYTES) break
      selected.push(kept)
      bytes += kept.bytes
      if (selected.length >= limit) break
    }
    return await this.readRecords(selected)
  }

  async forRequest (requestId: string): Promise<StoredCallback[]> {
    this.trim()
    return await this.readRecords(this.byRequest.get(requestId) ?? [])
  }

  stats (): { count: number; bytes: number; oldestAgeSeconds: number } {
    this.trim()
    const oldest = this.kept[0]?.receivedAtMs
    return {
      count: this.kept.length,
      bytes: this.keptBytes,
      oldestAgeSeconds: oldest === undefined ? 0 : Math.max(0, (this.now() - oldest) / 1000)
    }
  }

  subscribe (listener: () => void): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  async close (): Promise<void> {
    await this.flushing
    this.listeners.clear()
    await this.handle.close()
    await this.reader.retire()
  }

  /**
   * Indexes the file's complete lines, read in pieces; returns where the complete lines end. A line this version cannot
   * read is left in the file until the next compaction drops it.
   */
  private indexLines (fd: number): number {
    let carried = Buffer.alloc(0)
    let lineStart = 0
    const piece = Buffer.allocUnsafe(START_UP_READ_BYTES)
    for (;;) {
      const bytesRead = fs.readSync(fd, piece, 0, piece.length, lineStart + carried.length)
      if (bytesRead === 0) return lineStart
      const fresh = piece.subarray(0, bytesRead)
      let text = carried.length === 0 ? fresh : Buffer.concat([carried, fresh])
      let newline
      while ((newline = text.indexOf(10)) !== -1) {
        const bytes = newline + 1
        this.linesInFile++
        try {
          const record: unknown = JSON.parse(text.toString('utf8', 0, newline))
          // Valid JSON of another shape (a seq that is not a whole number would poison every later one) is not kept.
          if (isStoredCallback(record)) this.keep(record, lineStart, bytes)
        } catch {
          // not a line this version can read
        }
        lineStart += bytes
        text = text.subarray(bytes)
      }
      this.bytesInFile = lineStart
      carried = Buffer.from(text) // a copy: the piece is read into again
    }
  }

  /** The records of these lines, read from the file: one read for the stretch of the file that holds them all. */
  private async readRecords (lines: readonly Kept[]): Promise<StoredCallback[]> {
    const first = lines[0]
    if (first === undefined) return []
    // The offsets with the reader they belong to, both taken now: a compaction may replace them while this reads.
    const reader = this.reader
    const start = first.offset
    const spans = lines.map((kept) => [kept.offset - start, kept.bytes - 1] as const)
    const [lastStart, lastLength] = spans[spans.length - 1] as readonly [number, number]
    const stretch = await reader.read(start, lastStart + lastLength)
    return spans.map(([at, length]) => JSON.parse(stretch.toString('utf8', at, at + length)) as StoredCallback)
  }

  /**
   * Flushes unless a flush is under way. One that ends while appends are pending (they may arrive between its last look
   * and its end, depending on the order of promise callbacks) starts the next.
   */
  private startFlushing (): void {
    this.flushing ??= this.flush()
      .catch((error: unknown) => {
        // Not expected (each step handles its own failures), but no reason to end the process either.
        this.warn(`storing callbacks failed unexpectedly (${errorCode(error)})`)
      })
      .finally(() => {
        this.flushing = undefined
        if (this.pending.length > 0) this.startFlushing()
      })
  }

  /** Writes what is pending, one write and one fsync per batch, until nothing is. */
  private async flush (): Promise<void> {
    while (this.pending.length > 0) {
      const batch = this.pending
      this.pending = []
      try {
        await this.handle.appendFile(batch.map((entry) => entry.line).join(''))
        await this.handle.sync()
      } catch (error) {
        for (const entry of batch) entry.reject(error)
        // Whatever part of the batch reached the file goes: the offsets of the lines after it must hold.
        await this.handle.truncate(this.bytesInFile).catch(() => {})
        continue
      }
      for (const entry of batch) {
        const bytes = Buffer.byteLength(entry.line)
        this.linesInFile++
        this.keep(entry.record, this.bytesInFile, bytes)
        this.bytesInFile += bytes
      }
      try {
        this.trim()
        await this.compactIfWorthIt()
      } finally {
        // Stored (fsynced): the senders get their answer whatever the compaction did.
        for (const entry of batch) entry.resolve(entry.record)
        for (const listener of [...this.listeners]) listener()
      }
    }
  }

  private keep (record: StoredCallback, offset: number, bytes: number): void {
    const kept: Kept = {
      seq: record.seq,
      requestId: record.requestId,
      receivedAtMs: Date.parse(record.receivedAt),
      offset,
      bytes
    }
    this.kept.push(kept)
    this.keptBytes += kept.bytes
    this.nextSeq = Math.max(this.nextSeq, record.seq + 1)
    if (record.requestId !== null) {
      const list = this.byRequest.get(record.requestId) ?? []
      list.push(kept)
      this.byRequest.set(record.requestId, list)
    }
  }

  /** Drops the oldest beyond the retention's count, bytes or age (from the index; the file follows at compaction). */
  private trim (): void {
    const oldestAllowed = this.now() - this.retention.ageMs
    while (this.kept.length > 0) {
      const first = this.kept[0] as Kept
      const tooMany = this.kept.length > this.retention.count || this.keptBytes > this.retention.bytes
      if (!tooMany && first.receivedAtMs >= oldestAllowed) break
      this.kept.shift()
      this.keptBytes -= first.bytes
      const requestId = first.requestId
      if (requestId !== null) {
        const rest = (this.byRequest.get(requestId) ?? []).filter((kept) => kept !== first)
        if (rest.length === 0) this.byRequest.delete(requestId)
        else this.byRequest.set(requestId, rest)
      }
    }
  }

  /**
   * Rewrites the file with what is retained once it holds twice as much: the file stays bounded. A compaction that
   * fails (a full disk) changes nothing: the file and its handles stay as they were, appends go on, and the next
   * compaction waits COMPACTION_RETRY_MS.
   */
  private async compactIfWorthIt (): Promise<void> {
    if (this.linesInFile <= 2 * Math.max(this.kept.length, 1) && this.bytesInFile <= 2 * this.retention.bytes) return
    if (this.now() < this.compactionNotBefore) return
    const kept = [...this.kept]
    const compacting = `${this.file}${COMPACTING_SUFFIX}`
    let handle: FileHandle | undefined
    let reader: FileReader | undefined
    try {
      // Line by line from the old file: the kept callbacks are never all in memory at once.
      const oldFd = this.reader.handle.fd
      writeFileAtomicSync(compacting, (function * () {
        // One buffer for every line, each written before the next is read into it: no garbage of the file's size.
        let line = Buffer.allocUnsafe(0)
        for (const { offset, bytes } of kept) {
          if (line.length < bytes) line = Buffer.allocUnsafe(Math.max(bytes, 2 * line.length))
          fs.readSync(oldFd, line, 0, bytes, offset)
          yield line.subarray(0, bytes)
        }
      })())
      // Opened before it takes the file's place, so that once it has, nothing is left that could fail.
      handle = await fs.promises.open(compacting, 'a', 0o600)
      reader = new FileReader(await fs.promises.open(compacting, 'r'))
      fs.renameSync(compacting, this.file)
      fsyncDirectory(path.dirname(this.file))
    } catch (error) {
      await handle?.close().catch(() => {})
      await reader?.retire().catch(() => {})
      await fs.promises.rm(compacting, { force: true }).catch(() => {})
      this.compactionNotBefore = this.now() + COMPACTION_RETRY_MS
      this.warn(
        `the callback file could not be compacted (${errorCode(error)}): it holds ${this.bytesInFile} bytes, ` +
          `${this.keptBytes} of them retained; callbacks are still stored, and the compaction is tried again in ` +
          `${COMPACTION_RETRY_MS / 1000} s`
      )
      return
    }
    // The new offsets, handles and reader together, with no await between: a read takes the old ones or the new.
    let offset = 0
    for (const line of kept) {
      line.offset = offset
      offset += line.bytes
    }
    const retiredHandle = this.handle
    const retiredReader = this.reader
    this.handle = handle
    this.reader = reader
    this.linesInFile = kept.length
    this.bytesInFile = offset
    this.compactionNotBefore = 0
    await retiredHandle.close().catch(() => {})
    await retiredReader.retire().catch(() => {})
  }
}

/** A line's record as this version writes it: what the index and the cursors rely on. */
function isStoredCallback (value: unknown): value is StoredCallback {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false
  const { seq, receivedAt, requestId } = value as Partial<StoredCallback>
  return (
    Number.isSafeInteger(seq) &&
    (seq as number) > 0 &&
    typeof receivedAt === 'string' &&
    Number.isFinite(Date.parse(receivedAt)) &&
    (requestId === null || typeof requestId === 'string')
  )
}
