// Header rules for forwarded requests: the proxy's tokens replace whatever the client sent.

import type { IncomingHttpHeaders } from 'node:http'
import type { UpstreamTokens } from '../session/session-manager.js'

export const SESSION_TOKEN_HEADER = 'vz-m2m-token'

// Client credentials for the proxy itself or upstream are never passed on.
const CLIENT_AUTH_HEADERS = ['authorization', SESSION_TOKEN_HEADER, 'proxy-authorization'] as const

/**
 * Mutates and returns `headers` (a copy made by reply-from, which already dropped hop-by-hop headers
 * and those named in Connection): client auth headers out, the proxy's tokens in.
 */
export function withUpstreamAuth (headers: IncomingHttpHeaders, tokens: UpstreamTokens): IncomingHttpHeaders {
  for (const name of CLIENT_AUTH_HEADERS) delete headers[name]
  headers.authorization = `Bearer ${tokens.oauthToken}`
  headers[SESSION_TOKEN_HEADER] = tokens.sessionToken
  return headers
}
