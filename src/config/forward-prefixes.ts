// Which path prefixes may be configured for forwarding (M2M_PROXY_FORWARD_PREFIXES), and the ThingSpace endpoints
// that can never be one because the proxy answers them itself: in config/, which checks them at start-up; the
// forwarding rules (proxy/paths.ts) build on them.

/**
 * The forwarding root: every prefix lies under it, and by default all of it is forwarded (the OAuth token endpoint is
 * answered locally).
 */
export const API_ROOT = '/api/'
/**
 * Every ThingSpace API family on the upstream host (Connectivity Management, Device Location, Software Management,
 * ...): see docs/requests.md.
 */
export const DEFAULT_FORWARD_PREFIXES: readonly string[] = [API_ROOT]
/** Characters of a configured prefix's segments: RFC 3986 unreserved, so there is nothing to decode or normalise. */
const PREFIX_SEGMENT = /^[A-Za-z0-9._~-]+$/

export type LocalEndpointName = 'login' | 'logout' | 'passwordReset' | 'oauthToken'

export interface LocalEndpoint {
  name: LocalEndpointName
  method: 'POST' | 'PUT'
  path: string
}

/**
 * Client calls answered by the proxy itself (proxy/session-stubs.ts): forwarded, they would act on the shared session.
 */
export const LOCALLY_ANSWERED_ENDPOINTS: readonly LocalEndpoint[] = [
  { name: 'login', method: 'POST', path: '/api/m2m/v1/session/login' },
  { name: 'logout', method: 'POST', path: '/api/m2m/v1/session/logout' },
  { name: 'passwordReset', method: 'PUT', path: '/api/m2m/v1/session/password/actions/reset' },
  { name: 'oauthToken', method: 'POST', path: '/api/ts/v1/oauth2/token' }
]

/**
 * A configured prefix in its one spelling (`/api/loc/v1` and `/api/loc/v1/` are `/api/loc/v1/`); throws
 * an Error saying what is wrong with it. Anything that a server could read as another path (escapes,
 * dot segments, empty segments, backslashes, `;` parameters, a query) is refused rather than normalised.
 */
export function parseForwardPrefix (raw: string): string {
  const prefix = raw.trim()
  if (prefix === '/api' || prefix === API_ROOT) return API_ROOT
  if (!prefix.startsWith(API_ROOT)) {
    throw new Error(`${JSON.stringify(prefix)} is not under ${API_ROOT}: only ThingSpace API paths are forwarded`)
  }
  if (prefix.includes('..')) throw new Error(`${JSON.stringify(prefix)} contains ".."`)
  if (prefix.includes('%')) throw new Error(`${JSON.stringify(prefix)} contains a % escape: write the path as it is`)
  if (prefix.includes('//')) throw new Error(`${JSON.stringify(prefix)} contains an empty segment ("//")`)
  const segments = (prefix.endsWith('/') ? prefix.slice(API_ROOT.length, -1) : prefix.slice(API_ROOT.length)).split('/')
  for (const segment of segments) {
    if (segment === '.' || !PREFIX_SEGMENT.test(segment)) {
      throw new Error(
        `${JSON.stringify(prefix)} has the segment ${JSON.stringify(segment)}: segments are made of letters, digits and - . _ ~ only (no query, ; or \\)`
      )
    }
  }
  const normalised = `${API_ROOT}${segments.join('/')}/`
  const local = LOCALLY_ANSWERED_ENDPOINTS.find((endpoint) => `${endpoint.path}/` === normalised)
  if (local !== undefined) {
    throw new Error(`${JSON.stringify(prefix)} is ${local.path}, which the proxy answers itself and never forwards`)
  }
  return normalised
}

/** Configured prefixes, each checked by parseForwardPrefix; duplicates and prefixes inside another dropped. */
export function parseForwardPrefixes (raw: readonly string[]): string[] {
  const parsed = raw.map(parseForwardPrefix)
  return [...new Set(parsed)].filter(
    (prefix, _index, all) => !all.some((other) => other !== prefix && prefix.startsWith(other))
  )
}
