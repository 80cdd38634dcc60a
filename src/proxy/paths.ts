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

export type LocalEndpointName = 'login' | 'logout' | 'passwordReset' | 'oauthToken'

export interface LocalEndpoint {
  name: LocalEndpointName
  method: 'POST' | 'PUT'
  path: string
}

/** Client calls answered by the proxy itself (session-stubs.ts): forwarded, they would act on the shared session. */
export const LOCALLY_ANSWERED_ENDPOINTS: readonly LocalEndpoint[] = [
  { name: 'login', method: 'POST', path: '/api/m2m/v1/session/login' },
  { name: 'logout', method: 'POST', path: '/api/m2m/v1/session/logout' },
  { name: 'passwordReset', method: 'PUT', path: '/api/m2m/v1/session/password/actions/reset' },
  { name: 'oauthToken', method: 'POST', path: '/api/ts/v1/oauth2/token' }
]

const LOCAL_ENDPOINT_BY_PATH = new Map(LOCALLY_ANSWERED_ENDPOINTS.map((endpoint) => [endpoint.path, endpoint]))

/**
 * Every spelling of a locally answered path contains one of these: normalisation only removes
 * characters at segment boundaries and folds case, so without an escape the words themselves stay.
 */
const MAY_SPELL_LOCAL_ENDPOINT = /session|oauth|%/i

/** Decodes every well-formed run of escapes, leaving malformed ones as they are: a lenient server may do the same. */
function decodeLeniently (path: string): string {
  let current = path
  for (let round = 0; round < MAX_DECODE_ROUNDS && current.includes('%'); round++) {
    const decoded = current.replace(/(?:%[0-9a-fA-F]{2})+/g, (run) => {
      try {
        return decodeURIComponent(run)
      } catch {
        return run
      }
    })
    if (decoded === current) break
    current = decoded
  }
  return current
}

/**
 * The path as a lenient upstream would match it (servlet containers, older Spring): escapes decoded,
 * `;params` removed, dot segments resolved, repeated and trailing slashes collapsed, a last-segment
 * `.extension` dropped (Spring's suffix match), case folded.
 */
export function normalisedPath (rawUrl: string): string {
  const queryStart = rawUrl.indexOf('?')
  const segments: string[] = []
  for (const segment of decodeLeniently(queryStart === -1 ? rawUrl : rawUrl.slice(0, queryStart)).split(/[/\\]/)) {
    const withoutParams = segment.split(';', 1)[0] as string
    if (withoutParams === '' || withoutParams === '.') continue
    if (withoutParams === '..') segments.pop()
    else segments.push(withoutParams)
  }
  const last = segments.at(-1)
  const extensionStart = last === undefined ? -1 : last.indexOf('.', 1)
  if (last !== undefined && extensionStart !== -1) segments[segments.length - 1] = last.slice(0, extensionStart)
  // Upper then lower: folds 'ſ' (long s), 'ı' (dotless i) and the Kelvin sign as Java's equalsIgnoreCase does.
  return '/' + segments.join('/').toUpperCase().toLowerCase()
}

/** The locally answered endpoint that `rawUrl` (as received) names in any spelling, or undefined. */
export function locallyAnsweredEndpoint (rawUrl: string): LocalEndpoint | undefined {
  if (!MAY_SPELL_LOCAL_ENDPOINT.test(rawUrl)) return undefined // the hot path: one regex, no allocation
  return LOCAL_ENDPOINT_BY_PATH.get(normalisedPath(rawUrl))
}
