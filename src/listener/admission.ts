// Admission on the proxy listener: how many requests are handled at once, how many wait for a slot and for how long,
// how many bytes of request bodies may be held in memory across every connection, and how many requests one connection
// may pipeline. A client over a limit is answered 503 with Retry-After, never reset. No HTTP framework here.

import type { Socket } from 'node:net'

export interface AdmissionOptions {
  /** Requests handled at once (M2M_PROXY_MAX_IN_FLIGHT); the others wait in the queue. */
  maxInFlight: number
  /** Requests waiting for a slot at most (M2M_PROXY_MAX_QUEUED); beyond, 503 at once. */
  maxQueued: number
  /** Longest wait in the queue (M2M_PROXY_QUEUE_TIMEOUT_MS); then 503. */
  queueTimeoutMs: number
  /** Bytes of request bodies held at once, arriving or buffered for a replay (M2M_PROXY_BODY_MEMORY_BYTES). */
  bodyBudgetBytes: number
  /**
   * Requests of one connection handled at once (M2M_PROXY_MAX_PIPELINED); its further requests are not read meanwhile.
   */
  maxPipelined: number
}

export type AdmissionRefusal = 'queue-full' | 'queue-timeout'

/** What a request admitted holds until its answer is done (or the client gone). */
export type ReleaseAdmission = () => void

interface Waiter {
  bodyBytes: number
  admitted: (release: ReleaseAdmission) => void
  refused: (reason: AdmissionRefusal) => void
  timer: NodeJS.Timeout | undefined
}

interface ConnectionState {
  /** Its requests admitted or waiting in the global queue. */
  active: number
  /** Its further pipelined requests, in order. */
  waiting: Array<() => void>
}

const CONNECTION = Symbol('m2m-session-proxy.admission')
type TrackedSocket = Socket & { [CONNECTION]?: ConnectionState }

function connectionOf (socket: Socket): ConnectionState {
  const tracked = socket as TrackedSocket
  tracked[CONNECTION] ??= { active: 0, waiting: [] }
  return tracked[CONNECTION]
}

/** False for the stand-in socket of a request injected by the proxy itself (app.ts), which has nothing to pause. */
function isPaused (socket: Socket): boolean {
  return typeof socket.isPaused === 'function' && socket.isPaused()
}

export class Admission {
  #inFlight = 0
  #bodyBytesHeld = 0
  readonly #queue: Waiter[] = []
  /** Requests refused, by reason; requests that waited. */
  readonly refusals: Record<AdmissionRefusal, number> = { 'queue-full': 0, 'queue-timeout': 0 }
  waited = 0

  constructor (readonly options: AdmissionOptions) {}

  get inFlight (): number {
    return this.#inFlight
  }

  get queued (): number {
    return this.#queue.length
  }

  get bodyBytesHeld (): number {
    return this.#bodyBytesHeld
  }

  /**
   * The fast path: admits at once, without any callback, when nobody waits, a slot and the bytes are
   * free and the connection is under its share; undefined otherwise (then call admit).
   */
  tryAdmit (socket: Socket, bodyBytes: number): ReleaseAdmission | undefined {
    if (this.#queue.length !== 0 || !this.#fits(bodyBytes)) return undefined
    const connection = connectionOf(socket)
    if (connection.active >= this.options.maxPipelined) return undefined
    connection.active++
    const release = this.#take(bodyBytes)
    return () => {
      release()
      this.#connectionDone(socket, connection)
    }
  }

  /**
   * Admits a request whose body may take `bodyBytes` (its Content-Length, or the body limit when it is
   * chunked; 0 without a body): `admitted` at once when a slot and the bytes are free, else after
   * waiting in the queue (first come, first served), or `refused` when the queue is full or the wait
   * passes the queue timeout. The connection's further pipelined requests are not read while it has
   * `maxPipelined` requests in progress. Returns a function that gives up a place still in the queue
   * (the client went away), doing nothing otherwise.
   */
  admit (
    socket: Socket,
    bodyBytes: number,
    admitted: (release: ReleaseAdmission) => void,
    refused: (reason: AdmissionRefusal) => void
  ): () => void {
    const connection = connectionOf(socket)
    let cancelled = false
    let cancelGlobal: (() => void) | undefined
    const start = (): void => {
      connection.active++
      cancelGlobal = this.#admitGlobally(
        bodyBytes,
        (release) => {
          admitted(() => {
            release()
            this.#connectionDone(socket, connection)
          })
        },
        (reason) => {
          this.#connectionDone(socket, connection)
          refused(reason)
        }
      )
    }
    // Pipelined requests beyond the connection's share wait for its earlier ones, and the socket is not read meanwhile.
    if (connection.active >= this.options.maxPipelined) {
      connection.waiting.push(start)
      if (!isPaused(socket)) socket.pause()
      return () => {
        cancelled = true
        const index = connection.waiting.indexOf(start)
        if (index !== -1) connection.waiting.splice(index, 1)
        else cancelGlobal?.()
      }
    }
    start()
    return () => {
      if (!cancelled) cancelGlobal?.()
    }
  }

  /** One of the connection's requests is done: its next pipelined request may go, and its socket be read again. */
  #connectionDone (socket: Socket, connection: ConnectionState): void {
    connection.active--
    if (connection.waiting.length === 0 && !isPaused(socket)) return
    const next = connection.waiting.shift()
    if (next !== undefined) next()
    else if (isPaused(socket) && !socket.destroyed) socket.resume()
  }

  #admitGlobally (
    bodyBytes: number,
    admitted: (release: ReleaseAdmission) => void,
    refused: (reason: AdmissionRefusal) => void
  ): () => void {
    const nothingToCancel = (): void => {}
    if (this.#queue.length === 0 && this.#fits(bodyBytes)) {
      admitted(this.#take(bodyBytes))
      return nothingToCancel
    }
    if (this.#queue.length >= this.options.maxQueued) {
      this.refusals['queue-full']++
      refused('queue-full')
      return nothingToCancel
    }
    this.waited++
    const waiter: Waiter = { bodyBytes, admitted, refused, timer: undefined }
    waiter.timer = setTimeout(() => {
      const index = this.#queue.indexOf(waiter)
      if (index === -1) return
      this.#queue.splice(index, 1)
      this.refusals['queue-timeout']++
      waiter.refused('queue-timeout')
      this.#drain() // the head may have been the one that did not fit
    }, this.options.queueTimeoutMs)
    this.#queue.push(waiter)
    // The client went away while waiting: its place is given up.
    return () => {
      const index = this.#queue.indexOf(waiter)
      if (index === -1) return
      this.#queue.splice(index, 1)
      clearTimeout(waiter.timer)
      this.#drain()
    }
  }

  /** Seconds a refused client should wait before trying again: about how long the queue takes to move. */
  retryAfterSeconds (): number {
    return Math.max(1, Math.min(30, Math.ceil(this.options.queueTimeoutMs / 1000 / 2)))
  }

  #fits (bodyBytes: number): boolean {
    return this.#inFlight < this.options.maxInFlight && this.#bodyBytesHeld + bodyBytes <= this.options.bodyBudgetBytes
  }

  #take (bodyBytes: number): ReleaseAdmission {
    this.#inFlight++
    this.#bodyBytesHeld += bodyBytes
    let released = false
    return () => {
      if (released) return
      released = true
      this.#inFlight--
      this.#bodyBytesHeld -= bodyBytes
      this.#drain()
    }
  }

  /** Admits waiters in order while the head fits (no overtaking: a large body is not starved by small ones). */
  #drain (): void {
    while (this.#queue.length > 0 && this.#fits((this.#queue[0] as Waiter).bodyBytes)) {
      const waiter = this.#queue.shift() as Waiter
      clearTimeout(waiter.timer)
      waiter.admitted(this.#take(waiter.bodyBytes))
    }
  }
}
