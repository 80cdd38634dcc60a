// A client that leaves takes its request with it: one still waiting in undici's queue for a connection is never
// written, and one ThingSpace is working on is aborted, its connection closed. reply-from never tells undici that a
// client left (it only drops the answer once its headers come), so the forwarding's dispatcher does it.

import { Dispatcher } from 'undici'

/**
 * The key, in the headers handed to reply-from, of the forwarded request's exchange. A symbol: reply-from copies it
 * with the headers (Object.assign), and undici sends only the string keys (Object.keys).
 */
const UPSTREAM_EXCHANGE = Symbol('m2m-session-proxy.upstreamExchange')

/** Puts the exchange in the headers reply-from will hand to the dispatcher (a symbol key: never sent). */
export function carryExchange (headers: object, exchange: UpstreamExchange): void {
  (headers as Record<symbol, UpstreamExchange>)[UPSTREAM_EXCHANGE] = exchange
}

/** What the dispatcher reads and writes of a forwarded request (fields of its ProxyState: no object of its own). */
export interface UpstreamExchange {
  /** Its client left: not to be written to ThingSpace any more. */
  clientLeft: boolean
  /** undici's abort of the request, once it has a connection (undefined while it waits in undici's queue). */
  abortUpstream: ((reason?: Error) => void) | undefined
}

/** The reason given to undici: a request that never left the proxy, or that ThingSpace may have processed. */
export class ClientLeftError extends Error {
  readonly code = 'M2M_CLIENT_LEFT'
  constructor () {
    super('the client left before its answer')
  }
}

/**
 * The upstream pool as reply-from sees it: a request that carries its exchange goes through a ClientBoundHandler.
 * A subclass of undici's Dispatcher rather than Dispatcher.compose(): compose puts a Proxy in front of the pool and
 * wraps each handler twice (to its new handler API and back), on every request.
 */
export class ClientBoundDispatcher extends Dispatcher {
  readonly #pool: Dispatcher

  constructor (pool: Dispatcher) {
    super()
    this.#pool = pool
  }

  override dispatch (options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const headers = options.headers as Record<symbol, UpstreamExchange | undefined> | null | undefined
    const exchange = headers?.[UPSTREAM_EXCHANGE]
    return this.#pool.dispatch(options, exchange === undefined ? handler : new ClientBoundHandler(handler, exchange))
  }

  // The pool is the core's: closed and destroyed with it (reply-from does neither to a dispatcher it is given).
  override async close (): Promise<void> {
    await this.#pool.close()
  }

  override async destroy (): Promise<void> {
    await this.#pool.destroy()
  }
}

/**
 * reply-from's handler (undici's request handler, of the handler API it and undici's request() use) with one
 * check: when undici gives the request a connection, a client gone meanwhile aborts it before a byte is written;
 * otherwise undici's abort is kept for the exchange, to be called if its client leaves while ThingSpace works on it.
 */
class ClientBoundHandler implements Dispatcher.DispatchHandler {
  readonly #handler: Dispatcher.DispatchHandler
  readonly #exchange: UpstreamExchange

  constructor (handler: Dispatcher.DispatchHandler, exchange: UpstreamExchange) {
    this.#handler = handler
    this.#exchange = exchange
  }

  onConnect (abort: (reason?: Error) => void, context?: unknown): void {
    if (this.#exchange.clientLeft) {
      // undici's documented way; it closes that connection too (a new one is made for the next request).
      abort(new ClientLeftError())
      return
    }
    this.#exchange.abortUpstream = abort
    // @ts-expect-error -- undici passes a context too, which its types omit
    this.#handler.onConnect?.(abort, context)
  }

  onError (error: Error): void {
    this.#handler.onError?.(error)
  }

  onUpgrade (statusCode: number, headers: Buffer[] | string[] | null, socket: import('node:stream').Duplex): void {
    this.#handler.onUpgrade?.(statusCode, headers, socket)
  }

  onResponseStarted (): void {
    this.#handler.onResponseStarted?.()
  }

  onHeaders (statusCode: number, headers: Buffer[], resume: () => void, statusText: string): boolean {
    return this.#handler.onHeaders?.(statusCode, headers, resume, statusText) ?? true
  }

  onData (chunk: Buffer): boolean {
    return this.#handler.onData?.(chunk) ?? true
  }

  onComplete (trailers: string[] | null): void {
    this.#handler.onComplete?.(trailers)
  }

  onBodySent (chunkSize: number, totalBytesSent: number): void {
    this.#handler.onBodySent?.(chunkSize, totalBytesSent)
  }
}
