// The callback inbox's records and the port its stores implement (file-inbox.ts alone; a Redis stream in fleet mode
// later): appended durably, read in order by cursor or by request id, waited for by long polls.

/** One callback as ThingSpace sent it (its username and password removed), with what it is looked up by. */
export interface CallbackMessage {
  /** The ThingSpace callback service it was registered for (CarrierService, DeviceUsage, ...). */
  service: string
  /** The asynchronous request it reports on (`requestId`; Device Location's `txid`), when it names one. */
  requestId: string | null
  /** The devices it names (`deviceIds: [{id, kind}]`), when it does. */
  deviceIds: Array<{ id: string; kind: string }>
  body: unknown
}

export interface StoredCallback extends CallbackMessage {
  /** Its place in the inbox: increasing, never reused; the cursor of GET /callbacks. */
  seq: number
  receivedAt: string
}

export interface CallbackInbox {
  /** Resolves once the message is stored durably (fsynced): only then may the sender get its 2xx. */
  append: (message: CallbackMessage) => Promise<StoredCallback>
  /** Up to `limit` callbacks after cursor `after`, oldest first. */
  after: (after: number, limit: number) => StoredCallback[]
  /** The callbacks about one asynchronous request, oldest first. */
  forRequest: (requestId: string) => StoredCallback[]
  /** What is kept now: callbacks, their bytes, the age of the oldest (0 when none). */
  stats: () => { count: number; bytes: number; oldestAgeSeconds: number }
  /** Calls `listener` for every callback stored from now on; returns the unsubscribe function. */
  subscribe: (listener: (stored: StoredCallback) => void) => () => void
  close: () => Promise<void>
}

/**
 * Resolves with what `read` returns once it is not empty: at once, or when a callback arrives, or (empty) after
 * `waitMs` or when `signal` aborts (the client went away).
 */
export async function waitForCallbacks (
  inbox: CallbackInbox,
  read: () => StoredCallback[],
  waitMs: number,
  signal: AbortSignal
): Promise<StoredCallback[]> {
  const now = read()
  if (now.length > 0 || waitMs <= 0 || signal.aborted) return now
  return await new Promise((resolve) => {
    const finish = (): void => {
      clearTimeout(timer)
      unsubscribe()
      signal.removeEventListener('abort', finish)
      resolve(read())
    }
    const timer = setTimeout(finish, waitMs)
    const unsubscribe = inbox.subscribe(() => {
      if (read().length > 0) finish()
    })
    signal.addEventListener('abort', finish)
  })
}
