// Reads the start of an upstream answer without losing the rest: small bodies are inspected, large ones stream on.

import { PassThrough, type Readable } from 'node:stream'

export type PeekedBody = { complete: true; body: Buffer } | { complete: false; stream: Readable }

/**
 * Buffers up to `maxBytes`; past that, hands on a stream that replays what was read, then the rest.
 * Callbacks, not a promise: this runs for nearly every answer, and a promise costs a microtask more.
 */
export function peekBody (
  source: Readable,
  maxBytes: number,
  resolve: (peeked: PeekedBody) => void,
  reject: (error: Error) => void
): void {
  const chunks: Buffer[] = []
  let size = 0
  const cleanup = (): void => {
    source.off('data', onData)
    source.off('end', onEnd)
    source.off('error', onError)
  }
  const onData = (chunk: Buffer): void => {
    chunks.push(chunk)
    size += chunk.length
    if (size <= maxBytes) return
    source.pause()
    cleanup()
    const rest = new PassThrough()
    for (const piece of chunks) rest.write(piece)
    source.on('error', (error) => rest.destroy(error))
    source.pipe(rest)
    resolve({ complete: false, stream: rest })
  }
  const onEnd = (): void => {
    cleanup()
    resolve({ complete: true, body: Buffer.concat(chunks) })
  }
  const onError = (error: Error): void => {
    cleanup()
    reject(error)
  }
  source.on('data', onData)
  source.on('end', onEnd)
  source.on('error', onError)
}

/** peekBody for the paths that await anyway. */
export function peekBodyAsync (source: Readable, maxBytes: number): Promise<PeekedBody> {
  return new Promise((resolve, reject) => {
    peekBody(source, maxBytes, resolve, reject)
  })
}
