// Which request targets may be forwarded: only origin-form paths under /api/m2m/, with no way to climb out of it.

export const FORWARDED_PREFIX = '/api/m2m/'
const MAX_DECODE_ROUNDS = 3
const NEEDS_SEGMENT_CHECK = /[%.\\#\u0000-\u001f\u007f]/ // eslint-disable-line no-control-regex

/** Decodes percent-escapes until stable (bounded), so double-encoded dots are seen for what they become. */
function decodeRepeatedly (segment: string): string | undefined {
  let current = segment
  for (let round = 0; round < MAX_DECODE_ROUNDS; round++) {
    let decoded: string
    try {
      decoded = decodeURIComponent(current)
    } catch {
      return undefined
    }
    if (decoded === current) return current
    current = decoded
  }
  return current
}

/**
 * True when `rawUrl` (the request target as received) is an origin-form path under /api/m2m/ whose
 * segments, decoded, contain no `.` or `..`, no slash or backslash hidden in an escape, no control characters.
 */
export function isForwardableTarget (rawUrl: string): boolean {
  if (!rawUrl.startsWith(FORWARDED_PREFIX)) return false // also rejects absolute-form and authority-form targets
  const queryStart = rawUrl.indexOf('?')
  const path = queryStart === -1 ? rawUrl : rawUrl.slice(0, queryStart)
  // Fast path: with no dot, escape, backslash, fragment or control character there is nothing to decode.
  if (!NEEDS_SEGMENT_CHECK.test(path)) return true
  if (path.includes('\\') || path.includes('#')) return false
  for (const segment of path.split('/')) {
    const decoded = decodeRepeatedly(segment)
    if (decoded === undefined) return false
    // `..;x` too: some servers (Tomcat) strip path parameters before resolving dot segments.
    if (/^\.\.?(;.*)?$/.test(decoded)) return false
    if (/[/\\\u0000-\u001f\u007f]/.test(decoded)) return false // eslint-disable-line no-control-regex
  }
  return true
}
