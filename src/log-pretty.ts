// M2M_PROXY_LOG_FORMAT=pretty: each JSON line as a person reads it (the demo's default), written to the same
// destination, so the byte bound and the drop counting of the JSON output hold as they are.

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' }
/** Fields every line has, or that the line's start already shows. */
const SHOWN = new Set(['time', 'level', 'msg', 'service', 'pid', 'hostname'])

/** `12:03:04.567 INFO  logged in to ThingSpace  component=session` */
export function prettyLine (json: string): string {
  let entry: Record<string, unknown>
  try {
    entry = JSON.parse(json) as Record<string, unknown>
  } catch {
    return json.endsWith('\n') ? json : `${json}\n` // not ours to reformat
  }
  const time = typeof entry.time === 'number' ? new Date(entry.time).toISOString().slice(11, 23) : '--:--:--.---'
  const level = (LEVELS[Number(entry.level)] ?? String(entry.level)).padEnd(5)
  const fields = Object.entries(entry)
    .filter(([key]) => !SHOWN.has(key))
    .map(([key, value]) => `${key}=${typeof value === 'string' && !/[\s"=]/.test(value) ? value : JSON.stringify(value)}`)
  return `${time} ${level} ${String(entry.msg ?? '')}${fields.length > 0 ? `  ${fields.join(' ')}` : ''}\n`
}

interface LineDestination {
  write: (line: string) => unknown
  flush?: (callback?: (error?: Error) => void) => void
  flushSync?: () => void
}

/** Wraps a destination of JSON lines: pino writes one whole line per call. */
export class PrettyDestination {
  constructor (private readonly inner: LineDestination) {}

  write (line: string): unknown {
    return this.inner.write(prettyLine(line))
  }

  flush (callback?: (error?: Error) => void): void {
    if (this.inner.flush === undefined) callback?.()
    else this.inner.flush(callback)
  }

  flushSync (): void {
    this.inner.flushSync?.()
  }
}
