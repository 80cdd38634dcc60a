// Header rules for forwarded requests and answers: hop-by-hop headers stay on their hop, the proxy's tokens replace the
// client's.

import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'
import type { UpstreamTokens } from '../session/session-manager.js'

export const SESSION_TOKEN_HEADER = 'vz-m2m-token'

// RFC 9110 §7.6.1: these describe one connection, never the next one. (proxy-connection: legacy clients.)
const HOP_BY_HOP_HEADERS = [
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade'
]

// Client credentials for the proxy itself or upstream are never passed on. `expect` is answered by
// this server (100-continue) and the buffered body is sent whole, so it must not travel on either.
const CLIENT_ONLY_HEADERS = ['authorization', SESSION_TOKEN_HEADER, 'proxy-authorization', 'expect']
// Headers with which some servers (IIS, Symfony, Zend) route by another path than the request line's: the path rules
// check the request line only, so an upstream honouring them could be led into the session namespace.
const PATH_OVERRIDE_HEADERS = ['x-original-url', 'x-rewrite-url']

const NOT_FORWARDED_RESPONSE = new Set(HOP_BY_HOP_HEADERS)
const NOT_FORWARDED_REQUEST = new Set([...HOP_BY_HOP_HEADERS, ...CLIENT_ONLY_HEADERS, ...PATH_OVERRIDE_HEADERS])

type Headers = IncomingHttpHeaders | OutgoingHttpHeaders

/** Names listed in the message's own Connection header: hop-by-hop too. */
function connectionNamed (headers: Headers): Set<string> | undefined {
  const connection = headers.connection
  // The usual value names only a header dropped anyway: no set to build for nearly every answer.
  if (connection === undefined || connection === 'keep-alive') return undefined
  const named = new Set<string>()
  for (const name of String(connection).split(',')) {
    const trimmed = name.trim().toLowerCase()
    if (trimmed !== '') named.add(trimmed)
  }
  return named
}

/**
 * A copy without the excluded names: copying once is cheaper on the hot path than deleting keys,
 * which turns V8 objects into slow dictionaries.
 */
function copyWithout<T extends Headers> (headers: T, excluded: Set<string>): T {
  const named = connectionNamed(headers)
  const copy: Headers = {}
  for (const name in headers) {
    if (excluded.has(name) || named?.has(name) === true) continue
    // `vz_m2m_token`: servers that read `_` as `-` (CGI-style frameworks, nginx's underscores_in_headers) would take it
    // for the real one.
    if (name.includes('_') && excluded.has(name.replaceAll('_', '-'))) continue
    copy[name] = headers[name]
  }
  return copy as T
}

/** Without hop-by-hop headers, including any the message's own Connection header names. */
export function withoutHopByHop<T extends Headers> (headers: T): T {
  return copyWithout(headers, NOT_FORWARDED_RESPONSE)
}

/**
 * The headers to send upstream, from reply-from's copy of the client's (Connection-named ones already
 * dropped): hop-by-hop and client credentials out, the proxy's tokens in.
 */
export function withUpstreamAuth (headers: IncomingHttpHeaders, tokens: UpstreamTokens): IncomingHttpHeaders {
  const forwarded = copyWithout(headers, NOT_FORWARDED_REQUEST)
  forwarded.authorization = `Bearer ${tokens.oauthToken}`
  forwarded[SESSION_TOKEN_HEADER] = tokens.sessionToken
  return forwarded
}
