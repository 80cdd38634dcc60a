// The shared keys Device Location callbacks are signed with, one per service, as ThingSpace returned them when the
// proxy registered the listener (POST /admin/callbacks). Kept in the state directory (one process) or, sealed with the
// fleet key, in Redis (fleet/redis-store.ts), so that every replica checks the same signatures and a restart keeps
// them.

import fs from 'node:fs'
import path from 'node:path'
import { writeFileAtomicSync } from '../fs/atomic-write.js'

export interface LocationKeyStore {
  /** The keys that may sign `service`'s callbacks, newest first; empty when the listener was never registered. */
  keys: (service: string) => Promise<string[]>
  /** Keeps the key of a new registration; the one before stays accepted, for the callbacks already on their way. */
  remember: (service: string, key: string) => Promise<void>
  /** The listener was removed from ThingSpace: its callbacks are refused from now on. */
  forget: (service: string) => Promise<void>
}

/** What a store keeps per service: the newest key first, and the one before it. */
export function withNewKey (kept: readonly string[], key: string): string[] {
  return [key, ...kept.filter((old) => old !== key)].slice(0, 2)
}

export function isKeyList (value: unknown): value is string[] {
  return Array.isArray(value) && value.every((entry) => typeof entry === 'string' && entry !== '')
}

export const LOCATION_KEYS_FILE = 'location-callback-keys.json'

/** One process: a JSON file {service: [keys]} in the state directory, mode 0600, replaced atomically. */
export class FileLocationKeys implements LocationKeyStore {
  private readonly file: string
  private kept: Record<string, string[]> | undefined

  constructor (stateDir: string) {
    this.file = path.join(stateDir, LOCATION_KEYS_FILE)
  }

  async keys (service: string): Promise<string[]> {
    return this.load()[service] ?? []
  }

  async remember (service: string, key: string): Promise<void> {
    const kept = this.load()
    this.save({ ...kept, [service]: withNewKey(kept[service] ?? [], key) })
  }

  async forget (service: string): Promise<void> {
    const { [service]: _forgotten, ...rest } = this.load()
    this.save(rest)
  }

  private load (): Record<string, string[]> {
    if (this.kept !== undefined) return this.kept
    let text: string
    try {
      text = fs.readFileSync(this.file, 'utf8')
    } catch (error) {
      if ((error as { code?: string }).code !== 'ENOENT') throw error
      this.kept = {}
      return this.kept
    }
    let parsed: unknown
    try {
      parsed = JSON.parse(text)
    } catch {
      parsed = undefined
    }
    if (typeof parsed !== 'object' || parsed === null || !Object.values(parsed).every(isKeyList)) {
      // Named, never quoted (it holds keys); never replaced silently: ThingSpace signs with what it holds.
      throw new Error(
        `${this.file} does not hold {"<service>": ["<key>", ...]}: remove it and register the Device Location callbacks again`
      )
    }
    this.kept = parsed as Record<string, string[]>
    return this.kept
  }

  private save (kept: Record<string, string[]>): void {
    writeFileAtomicSync(this.file, `${JSON.stringify(kept)}\n`)
    this.kept = kept
  }
}
