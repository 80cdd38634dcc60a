// The callback inbox's records and the port its stores implement (file-inbox.ts in one process, a Redis stream in fleet
// mode: fleet/redis-inbox.ts): appended durably, read in order by cursor or by request id, waited for by long polls.

/**
 * A page read by cursor stops once it holds this many bytes of callbacks (it always holds one): what one read puts in
 * memory is bounded whatever `limit` and the callbacks' sizes. The client reads on from the page's `next`.
 */
export const MAX_PAGE_BYTES = 4 * 1024 * 1024

/**
 * The largest stored record a callback of `bodyLimitBytes` can make: its body re-encoded as JSON (control characters
 * take 6 bytes each), sealed and in base64. A store of others' writing (Redis) reads nothing larger.
 */
export function maxRecordBytes (bodyLimitBytes: number): number {
  return 8 * bodyLimitBytes + 64 * 1024
}

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
  after: (after: number, limit: number) => Promise<StoredCallback[]>
  /** The callbacks about one asynchronous request, oldest first. */
  forRequest: (requestId: string) => Promise<StoredCallback[]>
  /**
   * What is kept: callbacks, their bytes, the age of the oldest (0 when none), for the metrics; a shared store answers
   * with what it last learned and learns again meanwhile.
   */
  stats: () => { count: number; bytes: number; oldestAgeSeconds: number }
  /** Calls `listener` whenever callbacks may have been stored (by any replica); returns the unsubscribe function. */
  subscribe: (listener: () => void) => () => void
  close: () => Promise<void>
}

/** The inbox's storage cannot be reached for now (a fleet's Redis down or not answering): worth trying again. */
export class InboxUnavailableError extends Error {
  override readonly name = 'InboxUnavailableError'
}

/** Retry-After of an InboxUnavailableError's answer: the fleet store's reconnect backoff reaches 5 s. */
export const INBOX_UNAVAILABLE_RETRY_AFTER_SECONDS = 5

/**
 * Resolves with what `read` returns once it is not empty: at once, or when a callback arrives, or (empty) after
 * `waitMs` or when `signal` aborts (the client went away).
 */
export async function waitForCallbacks (
  inbox: CallbackInbox,
  read: () => Promise<StoredCallback[]>,
  waitMs: number,
  signal: AbortSignal
): Promise<StoredCallback[]> {
  if (waitMs <= 0 || signal.aborted) return await read()
  // Subscribed before the first read: a callback stored while it runs still wakes the wait.
  let stored = false
  let wake = (): void => {}
  const unsubscribe = inbox.subscribe(() => {
    stored = true
    wake()
  })
  let timedOut = false
  const timer = setTimeout(() => {
    timedOut = true
    wake()
  }, waitMs)
  const onAbort = (): void => { wake() }
  signal.addEventListener('abort', onAbort)
  try {
    for (;;) {
      stored = false
      const now = await read()
      if (now.length > 0 || timedOut || signal.aborted) return now
      if (!stored) await new Promise<void>((resolve) => { wake = resolve })
      wake = () => {}
    }
  } finally {
    clearTimeout(timer)
    unsubscribe()
    signal.removeEventListener('abort', onAbort)
  }
}
