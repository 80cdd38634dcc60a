// Which request targets may be forwarded: origin-form paths under the configured prefixes (default: all of /api/), with
// no way to climb out of them.

import {
  API_ROOT,
  DEFAULT_FORWARD_PREFIXES,
  LOCALLY_ANSWERED_ENDPOINTS,
  type LocalEndpoint
} from '../config/forward-prefixes.js'

export {
  API_ROOT,
  DEFAULT_FORWARD_PREFIXES,
  LOCALLY_ANSWERED_ENDPOINTS,
  parseForwardPrefix,
  parseForwardPrefixes
} from '../config/forward-prefixes.js'
export type { LocalEndpoint, LocalEndpointName } from '../config/forward-prefixes.js'

const MAX_DECODE_ROUNDS = 3
const NEEDS_SEGMENT_CHECK = /[%.\\#\u0000-\u001f\u007f]/ // eslint-disable-line no-control-regex
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
      if (
        rawUrl.startsWith(stem) &&
        (rawUrl.length === stem.length || rawUrl.charCodeAt(stem.length) === QUESTION_MARK)
      ) { return true }
    }
    return false
  }
}

export const DEFAULT_FORWARD_RULE = new ForwardPrefixes(DEFAULT_FORWARD_PREFIXES)

/** Why a target under /api/ is not forwarded: the Proxy.NotFound.* suffix and a message that says the real reason. */
export interface TargetRefusal {
  code: 'OutsidePrefixes' | 'EncodedTraversal' | 'MalformedPath' | 'TooManyEncodings'
  message: string
}

/**
 * Rounds of percent-decoding looked through; a path still changing after that is refused (no client encodes so deep).
 */
const MAX_LOOKED_THROUGH_ROUNDS = 10
const DOT_SEGMENT = /^\.\.?(;.*)?$/
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f]/ // eslint-disable-line no-control-regex
const WELL_FORMED_ESCAPES = /^(?:[^%]|%[0-9a-fA-F]{2})*$/

/**
 * The path as received and each decoding of it (lenient: a malformed escape stays as it is), up to
 * MAX_LOOKED_THROUGH_ROUNDS; undefined when it still changes after that.
 */
function decodingsOf (path: string): string[] | undefined {
  const decodings = [path]
  let current = path
  for (let round = 0; current.includes('%'); round++) {
    const decoded = decodeOnce(current)
    if (decoded === current) return decodings
    if (round === MAX_LOOKED_THROUGH_ROUNDS) return undefined
    decodings.push(decoded)
    current = decoded
  }
  return decodings
}

/**
 * One round of decoding every well-formed run of escapes, leaving malformed ones as they are: a lenient server may do
 * the same.
 */
function decodeOnce (path: string): string {
  return path.replace(/(?:%[0-9a-fA-F]{2})+/g, (run) => {
    try {
      return decodeURIComponent(run)
    } catch {
      return run
    }
  })
}

/**
 * Why `rawUrl` (the request target as received) is not forwarded, or undefined when it is: it must be
 * an origin-form path under one of `prefixes`, with well-formed escapes and no backslash, fragment or
 * control character as received, and no decoding of it (escapes decoded 1 to 10 times, `%2F` and
 * `%5C` read as `/`) may have a dot segment or a control character. Anything else is forwarded byte for
 * byte: a free-text name such as `Fleet%2050%25` or `EU%2FNorth` is the client's business.
 */
export function targetRefusal (
  rawUrl: string,
  prefixes: ForwardPrefixes = DEFAULT_FORWARD_RULE
): TargetRefusal | undefined {
  // also absolute- and authority-form
  if (!prefixes.admits(rawUrl)) return { code: 'OutsidePrefixes', message: prefixes.notForwardedMessage }
  const queryStart = rawUrl.indexOf('?')
  const path = queryStart === -1 ? rawUrl : rawUrl.slice(0, queryStart)
  // Fast path: with no dot, escape, backslash, fragment or control character there is nothing to decode.
  if (!NEEDS_SEGMENT_CHECK.test(path)) return undefined
  if (path.includes('\\') || path.includes('#') || CONTROL_CHARACTER.test(path) || !WELL_FORMED_ESCAPES.test(path)) {
    return {
      code: 'MalformedPath',
      message: 'not proxied: the path has a backslash, a fragment, a control character or a malformed % escape'
    }
  }
  try {
    decodeURIComponent(path)
  } catch {
    // Not UTF-8 (`%c0%ae`, an overlong dot): a lenient decoder may read it as anything.
    return { code: 'MalformedPath', message: "not proxied: the path's escapes are not valid UTF-8" }
  }
  const decodings = decodingsOf(path)
  if (decodings === undefined) {
    return {
      code: 'TooManyEncodings',
      message: `not proxied: the path is still percent-encoded after ${MAX_LOOKED_THROUGH_ROUNDS} rounds of decoding`
    }
  }
  for (const [round, decoding] of decodings.entries()) {
    // `..;x` too: some servers (Tomcat) strip path parameters before resolving dot segments.
    if (decoding.split(/[/\\]/).some((segment) => DOT_SEGMENT.test(segment))) {
      return {
        code: 'EncodedTraversal',
        message:
          round === 0
            ? 'not proxied: the path has a dot segment (. or ..), which could climb out of the forwarded prefixes'
            : `not proxied: the path decoded ${round} time(s) has a dot segment (. or ..), which could climb out of the forwarded prefixes`
      }
    }
    if (round > 0 && CONTROL_CHARACTER.test(decoding)) {
      return { code: 'MalformedPath', message: 'not proxied: the path decodes to a control character' }
    }
    if (round > 0 && !prefixes.admits(decoding.replaceAll('\\', '/'))) {
      return { code: 'EncodedTraversal', message: prefixes.notForwardedMessage }
    }
  }
  // Decoding stopped on escapes that are not UTF-8 (`%25c0%25ae` hides an overlong dot one level down).
  if (/%[89a-fA-F][0-9a-fA-F]/.test(decodings[decodings.length - 1] as string)) {
    return {
      code: 'MalformedPath',
      message: 'not proxied: a decoding of the path has escapes that are not valid UTF-8'
    }
  }
  return undefined
}

/** True when `rawUrl` may be forwarded (see targetRefusal). */
export function isForwardableTarget (rawUrl: string, prefixes: ForwardPrefixes = DEFAULT_FORWARD_RULE): boolean {
  return targetRefusal(rawUrl, prefixes) === undefined
}

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
    const decoded = decodeOnce(current)
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

/** The session controller's namespace and the OAuth token endpoint, as skeleton segments (see skeletonOf). */
const RESERVED_SKELETONS: ReadonlyArray<readonly string[]> = [
  ['api', 'm2m', 'v1', 'session'],
  ['api', 'ts', 'v1', 'oauth2', 'token']
]
/**
 * Whatever could spell a reserved path in some decoding or to some lenient server: its words, an escape, a non-ASCII
 * character.
 */
const MAY_SPELL_RESERVED = /session|oauth|%|[^\x21-\x7e]/i

/**
 * A path's segments as the most lenient server could read them: `;params` and a `.suffix` dropped,
 * dot segments resolved, compatibility forms folded (NFKC, `ſ` → s), then everything but letters and
 * digits removed (spaces, zero-width characters, `~`, ...) and case folded; empty segments dropped.
 */
function skeletonOf (path: string): string[] {
  const segments: string[] = []
  for (const raw of path.split(/[/\\]/)) {
    const segment = (raw.split(';', 1)[0] as string).normalize('NFKC')
    if (segment === '..') {
      segments.pop()
      continue
    }
    const word = segment.replace(/^[^\p{L}\p{N}]+/u, '').split('.', 1)[0] as string
    const skeleton = word
      .replace(/[^\p{L}\p{N}]/gu, '')
      .toUpperCase()
      .toLowerCase()
    if (skeleton !== '') segments.push(skeleton)
  }
  return segments
}

/**
 * True when `rawUrl`, in any decoding (see targetRefusal) and read as leniently as any server could,
 * lies under /api/m2m/v1/session or is the OAuth token endpoint: such a path is never forwarded
 * (deny by default), since an upstream that trims or normalises segments would take it for a session
 * call and act on the shared session, or receive a client's own password unguarded.
 */
export function inReservedNamespace (rawUrl: string): boolean {
  if (!MAY_SPELL_RESERVED.test(rawUrl)) return false // the hot path: one regex, no allocation
  const queryStart = rawUrl.indexOf('?')
  const path = queryStart === -1 ? rawUrl : rawUrl.slice(0, queryStart)
  const decodings = decodingsOf(path) ?? [path, decodeOnce(path)]
  return decodings.some((decoding) => {
    const skeleton = skeletonOf(decoding)
    return RESERVED_SKELETONS.some((reserved) => reserved.every((word, index) => skeleton[index] === word))
  })
}

/** The message of a reserved path's 404. */
export const RESERVED_NAMESPACE_MESSAGE =
  'not proxied: paths under /api/m2m/v1/session and the OAuth token endpoint are never forwarded; ' +
  'the proxy answers POST /api/m2m/v1/session/login, POST /api/m2m/v1/session/logout, PUT /api/m2m/v1/session/password/actions/reset ' +
  'and POST /api/ts/v1/oauth2/token itself'

/** The locally answered endpoint that `rawUrl` (as received) names in any spelling, or undefined. */
export function locallyAnsweredEndpoint (rawUrl: string): LocalEndpoint | undefined {
  if (!MAY_SPELL_LOCAL_ENDPOINT.test(rawUrl)) return undefined // the hot path: one regex, no allocation
  return LOCAL_ENDPOINT_BY_PATH.get(normalisedPath(rawUrl))
}
