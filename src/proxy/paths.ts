// Which request targets may be forwarded: origin-form paths under the configured prefixes (default: all of /api/), with no way to climb out of them.

/** The forwarding root: every prefix lies under it, and by default all of it is forwarded (the OAuth token endpoint is answered locally). */
export const API_ROOT = '/api/'
/** Every ThingSpace API family on the upstream host (Connectivity Management, Device Location, Software Management, ...): see the README. */
export const DEFAULT_FORWARD_PREFIXES: readonly string[] = [API_ROOT]
const MAX_DECODE_ROUNDS = 3
const NEEDS_SEGMENT_CHECK = /[%.\\#\u0000-\u001f\u007f]/ // eslint-disable-line no-control-regex
/** Characters of a configured prefix's segments: RFC 3986 unreserved, so there is nothing to decode or normalise. */
const PREFIX_SEGMENT = /^[A-Za-z0-9._~-]+$/
const QUESTION_MARK = 63

/**
 * The configured prefixes, prepared once: a target is under a prefix when it starts with it (each ends
 * with `/`, so `/api/loc/` never admits `/api/location`), or is the prefix itself without its slash,
 * with or without a query (`/api/loc/v1`, `/api/loc/v1?x=1`), except the bare `/api`.
 */
export class ForwardPrefixes {
  readonly prefixes: readonly string[]
  /** Fewer than all of /api/: a target that passed isForwardableTarget must still be admitted. */
  readonly narrowed: boolean
  /** The 404 message for a target outside the prefixes (also the proxy listener's not-found answer). */
  readonly notForwardedMessage: string
  /** The prefixes without their trailing slash, `/api` left out: targets admitted as they are. */
  private readonly stems: readonly string[]

  constructor (prefixes: readonly string[]) {
    this.prefixes = prefixes
    this.narrowed = prefixes.length !== 1 || prefixes[0] !== API_ROOT
    this.notForwardedMessage = `not proxied: only paths under ${prefixes.join(', ')} are forwarded`
    this.stems = prefixes.filter((prefix) => prefix !== API_ROOT).map((prefix) => prefix.slice(0, -1))
  }

  admits (rawUrl: string): boolean {
    for (const prefix of this.prefixes) if (rawUrl.startsWith(prefix)) return true
    for (const stem of this.stems) {
      if (rawUrl.startsWith(stem) && (rawUrl.length === stem.length || rawUrl.charCodeAt(stem.length) === QUESTION_MARK)) return true
    }
    return false
  }
}

export const DEFAULT_FORWARD_RULE = new ForwardPrefixes(DEFAULT_FORWARD_PREFIXES)

/**
 * A configured prefix in its one spelling (`/api/loc/v1` and `/api/loc/v1/` are `/api/loc/v1/`); throws
 * an Error saying what is wrong with it. Anything that a server could read as another path (escapes,
 * dot segments, empty segments, backslashes, `;` parameters, a query) is refused rather than normalised.
 */
export function parseForwardPrefix (raw: string): string {
  const prefix = raw.trim()
  if (prefix === '/api' || prefix === API_ROOT) return API_ROOT
  if (!prefix.startsWith(API_ROOT)) throw new Error(`${JSON.stringify(prefix)} is not under ${API_ROOT}: only ThingSpace API paths are forwarded`)
  if (prefix.includes('..')) throw new Error(`${JSON.stringify(prefix)} contains ".."`)
  if (prefix.includes('%')) throw new Error(`${JSON.stringify(prefix)} contains a % escape: write the path as it is`)
  if (prefix.includes('//')) throw new Error(`${JSON.stringify(prefix)} contains an empty segment ("//")`)
  const segments = (prefix.endsWith('/') ? prefix.slice(API_ROOT.length, -1) : prefix.slice(API_ROOT.length)).split('/')
  for (const segment of segments) {
    if (segment === '.' || !PREFIX_SEGMENT.test(segment)) {
      throw new Error(`${JSON.stringify(prefix)} has the segment ${JSON.stringify(segment)}: segments are made of letters, digits and - . _ ~ only (no query, ; or \\)`)
    }
  }
  const normalised = `${API_ROOT}${segments.join('/')}/`
  const local = LOCALLY_ANSWERED_ENDPOINTS.find((endpoint) => `${endpoint.path}/` === normalised)
  if (local !== undefined) throw new Error(`${JSON.stringify(prefix)} is ${local.path}, which the proxy answers itself and never forwards`)
  return normalised
}

/** Configured prefixes, each checked by parseForwardPrefix; duplicates and prefixes inside another dropped. */
export function parseForwardPrefixes (raw: readonly string[]): string[] {
  const parsed = raw.map(parseForwardPrefix)
  return [...new Set(parsed)].filter((prefix, _index, all) => !all.some((other) => other !== prefix && prefix.startsWith(other)))
}

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
 * True when `rawUrl` (the request target as received) is an origin-form path under one of `prefixes`
 * whose segments, decoded, contain no `.` or `..`, no slash or backslash hidden in an escape, no control
 * characters: so no dot segment can climb out of a prefix, whatever the upstream resolves.
 */
export function isForwardableTarget (rawUrl: string, prefixes: ForwardPrefixes = DEFAULT_FORWARD_RULE): boolean {
  if (!prefixes.admits(rawUrl)) return false // also rejects absolute-form and authority-form targets
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
