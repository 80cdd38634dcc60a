// The callback inbox of one process: an append-only file of JSON lines in the state directory. A callback is
// fsynced before its sender gets the 2xx, so it survives a crash (kill -9) from then on; appends arriving together
// share one write and one fsync. Retention (count, bytes, age) bounds what is kept, in memory and on disk. In memory
// each callback is kept as its JSON line, parsed when read: parsed objects take several times their bytes, and the
// byte retention is meant to bound the process's memory.

import fs from 'node:fs'
import path from 'node:path'
import type { FileHandle } from 'node:fs/promises'
import { writeFileAtomicSync } from '../fs/atomic-write.js'
import type { CallbackInbox, CallbackMessage, StoredCallback } from './inbox.js'

export const CALLBACK_FILE = 'callbacks.jsonl'

export interface Retention {
  count: number
  bytes: number
  ageMs: number
}

interface Kept {
  seq: number
  requestId: string | null
  receivedAtMs: number
  /** The JSON line, without its newline. */
  line: string
  bytes: number
}

interface Pending {
  line: string
  record: StoredCallback
  resolve: (stored: StoredCallback) => void
  reject: (error: unknown) => void
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
  private bytesInFile = 0
  private nextSeq = 1

  private constructor (
    private readonly file: string,
    private handle: FileHandle,
    private readonly retention: Retention,
    private readonly now: () => number
  ) {}

  /**
   * Opens (or creates) the inbox file and reads what it holds. A last line cut short by a crash is dropped from the
   * file: it was never acknowledged.
   */
  static async open (stateDir: string, retention: Retention, now: () => number = Date.now): Promise<FileInbox> {
    const file = path.join(stateDir, CALLBACK_FILE)
    let text = ''
    try {
      text = fs.readFileSync(file, 'utf8')
    } catch (error) {
      if ((error as { code?: string }).code !== 'ENOENT') throw error
    }
    const complete = text.lastIndexOf('\n') + 1
    if (complete < text.length) fs.truncateSync(file, Buffer.byteLength(text.slice(0, complete)))
    const handle = await fs.promises.open(file, 'a', 0o600)
    const inbox = new FileInbox(file, handle, retention, now)
    for (const line of text.slice(0, complete).split('\n')) {
      if (line === '') continue
      inbox.linesInFile++
      inbox.bytesInFile += Buffer.byteLength(line) + 1
      try {
        inbox.keep(JSON.parse(line) as StoredCallback, line)
      } catch {
        // a line this version cannot read: left in the file until the next compaction drops it
      }
    }
    inbox.trim()
    return inbox
  }

  async append (message: CallbackMessage): Promise<StoredCallback> {
    const record: StoredCallback = { seq: this.nextSeq++, receivedAt: new Date(this.now()).toISOString(), ...message }
    const line = `${JSON.stringify(record)}\n`
    return await new Promise((resolve, reject) => {
      this.pending.push({ line, record, resolve, reject })
      this.flushing ??= this.flush().finally(() => {
        this.flushing = undefined
      })
    })
  }

  async after (after: number, limit: number): Promise<StoredCallback[]> {
    this.trim()
    const result: StoredCallback[] = []
    for (const kept of this.kept) {
      if (kept.seq <= after) continue
      result.push(JSON.parse(kept.line) as StoredCallback)
      if (result.length >= limit) break
    }
    return result
  }

  async forRequest (requestId: string): Promise<StoredCallback[]> {
    this.trim()
    return (this.byRequest.get(requestId) ?? []).map((kept) => JSON.parse(kept.line) as StoredCallback)
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
        continue
      }
      for (const entry of batch) {
        const bytes = Buffer.byteLength(entry.line)
        this.linesInFile++
        this.bytesInFile += bytes
        this.keep(entry.record, entry.line.slice(0, -1))
      }
      this.trim()
      await this.compactIfWorthIt()
      for (const entry of batch) entry.resolve(entry.record)
      for (const listener of [...this.listeners]) listener()
    }
  }

  private keep (record: StoredCallback, line: string): void {
    const kept: Kept = {
      seq: record.seq,
      requestId: record.requestId,
      receivedAtMs: Date.parse(record.receivedAt),
      line,
      bytes: Buffer.byteLength(line) + 1
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

  /** Drops the oldest beyond the retention's count, bytes or age (memory; the file follows at compaction). */
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

  /** Rewrites the file with what is retained once it holds twice as much: the file stays bounded too. */
  private async compactIfWorthIt (): Promise<void> {
    if (this.linesInFile <= 2 * Math.max(this.kept.length, 1) && this.bytesInFile <= 2 * this.retention.bytes) return
    // Line by line: joined, the kept callbacks would be in memory twice (up to the byte retention) while it writes.
    const kept = this.kept
    await this.handle.close()
    writeFileAtomicSync(this.file, (function * () { for (const { line } of kept) yield `${line}\n` })())
    this.handle = await fs.promises.open(this.file, 'a', 0o600)
    this.linesInFile = this.kept.length
    this.bytesInFile = this.keptBytes
  }
}
