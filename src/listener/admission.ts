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
  /** Its reading stopped here (stopReading) for its pipelined requests, not yet resumed. */
  stopped: boolean
  /** Whether stopReading has put its listener on the socket's 'resume'. */
  watched: boolean
  /** Refused with its connection closed after the answer: its requests after that one are left unanswered. */
  closing: boolean
}

const CONNECTION = Symbol('m2m-session-proxy.admission')
type TrackedSocket = Socket & { [CONNECTION]?: ConnectionState }

function connectionOf (socket: Socket): ConnectionState {
  const tracked = socket as TrackedSocket
  tracked[CONNECTION] ??= { active: 0, waiting: [], stopped: false, watched: false, closing: false }
  return tracked[CONNECTION]
}

/**
 * What Node's HTTP server reads on a connection of its own: `_paused` is the flag its flood protection sets (when
 * answers pile up unread) and honours. A plain `pause()` does not hold: Node resumes the socket whenever a request's
 * body is read, and parses every request head that arrives meanwhile, so a client pipelining thousands of small
 * requests had them all parsed and held (a few KiB each). Node pauses the parser itself after the chunk under way.
 * Node also resumes a socket it paused once its answers are written (socketOnDrain): the 'resume' listener stops it
 * again while its pipelined requests wait.
 */
type HttpServerSocket = Socket & {
  _paused?: boolean
  /** `incoming`: the connection's latest request, once its head is parsed; `complete` once its body is read too. */
  parser?: { resume: () => void; incoming?: { complete: boolean } | null } | null
}

/**
 * Whether a request head that Node found late (its headers timeout, M2M_PROXY_IDLE_CONNECTION_TIMEOUT_MS) is late
 * because of the proxy: the connection's earlier requests are still in progress, so its further bytes are not read
 * (stopReading), or the part read waits behind them. Its client sent it; answering 408 and closing would lose every
 * request it pipelined after, whenever ThingSpace takes longer than the idle timeout. Such a head is left to arrive
 * once the socket is read again. Node stops timing it then, and a client that really stalls is closed by the keep-alive
 * timeout once its answers are written. A body that is late (the request timeout) is not excused: its request holds a
 * slot.
 */
export function headLateBehindAnswers (socket: Socket): boolean {
  const connection = (socket as TrackedSocket)[CONNECTION]
  const latest = (socket as HttpServerSocket).parser?.incoming
  return connection !== undefined && connection.active > 0 && (latest == null || latest.complete)
}

/** False for the stand-in socket of a request injected by the proxy itself (app.ts), which has nothing to pause. */
function isReadable (socket: Socket): boolean {
  return typeof socket.pause === 'function' && !socket.destroyed
}

function stopReading (socket: HttpServerSocket, connection: ConnectionState): void {
  if (!isReadable(socket)) return
  connection.stopped = true
  if (!connection.watched) {
    connection.watched = true
    socket.on('resume', () => {
      if (connection.stopped) pauseSocket(socket)
    })
  }
  pauseSocket(socket)
}

function pauseSocket (socket: HttpServerSocket): void {
  if (socket._paused === true && socket.isPaused()) return
  socket._paused = true
  socket.pause()
}

/** As Node resumes it once its answers are written (socketOnDrain); not while its answers still wait to be written. */
function resumeReading (socket: HttpServerSocket, connection: ConnectionState): void {
  if (!connection.stopped || connection.closing) return
  connection.stopped = false
  if (!isReadable(socket) || socket.writableNeedDrain) return // Node resumes it on 'drain'
  socket._paused = false
  socket.parser?.resume()
  socket.resume()
}

export class Admission {
  #inFlight = 0
  #bodyBytesHeld = 0
  readonly #queue: Waiter[] = []
  /** Pipelined requests waiting for their connection's earlier ones: they count against maxQueued too. */
  #pipelineWaiting = 0
  /** Requests refused, by reason; requests that waited. */
  readonly refusals: Record<AdmissionRefusal, number> = { 'queue-full': 0, 'queue-timeout': 0 }
  waited = 0

  constructor (readonly options: AdmissionOptions) {}

  get inFlight (): number {
    return this.#inFlight
  }

  /** Requests waiting: for a slot, or pipelined behind their connection's earlier ones. */
  get queued (): number {
    return this.#queue.length + this.#pipelineWaiting
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
   * `maxPipelined` requests in progress; they wait, within maxQueued with the queue. One beyond it is
   * refused with `closeConnection`: answered last on its connection, and the requests the client
   * pipelined after it are `leftUnanswered` (not to be answered, so that they cost nothing more; a
   * client sends again what a closed connection did not answer). Returns a function that gives up a
   * place still waiting (the client went away), doing nothing otherwise.
   */
  admit (
    socket: Socket,
    bodyBytes: number,
    admitted: (release: ReleaseAdmission) => void,
    refused: (reason: AdmissionRefusal, closeConnection: boolean) => void,
    leftUnanswered: () => void
  ): () => void {
    const connection = connectionOf(socket)
    if (connection.closing) {
      leftUnanswered()
      return () => {}
    }
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
          refused(reason, false)
        }
      )
    }
    // Pipelined requests beyond the connection's share wait for its earlier ones, and the socket is not read meanwhile.
    // They are waiting requests like those of the queue, and share its bound.
    if (connection.active >= this.options.maxPipelined) {
      stopReading(socket, connection)
      if (this.#queue.length + this.#pipelineWaiting >= this.options.maxQueued) {
        // Answered in turn, after the connection's earlier requests: what it pipelined after this one, already
        // parsed or not, is left to the connection's close instead of being answered one by one.
        connection.closing = true
        this.refusals['queue-full']++
        refused('queue-full', true)
        return () => {}
      }
      this.#pipelineWaiting++
      const startInTurn = (): void => {
        this.#pipelineWaiting--
        start()
      }
      connection.waiting.push(startInTurn)
      return () => {
        cancelled = true
        const index = connection.waiting.indexOf(startInTurn)
        if (index === -1) {
          cancelGlobal?.()
          return
        }
        connection.waiting.splice(index, 1)
        this.#pipelineWaiting--
      }
    }
    start()
    return () => {
      if (!cancelled) cancelGlobal?.()
    }
  }

  /** One of the connection's requests is done: its next pipelined request may go, or its socket be read again. */
  #connectionDone (socket: Socket, connection: ConnectionState): void {
    connection.active--
    const next = connection.waiting.shift()
    if (next !== undefined) next()
    else resumeReading(socket, connection)
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
