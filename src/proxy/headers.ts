// Header rules for forwarded requests and answers: hop-by-hop headers stay on their hop, the proxy's tokens replace the client's.

import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'
import type { UpstreamTokens } from '../session/session-manager.js'

export const SESSION_TOKEN_HEADER = 'vz-m2m-token'

// RFC 9110 §7.6.1: these describe one connection, never the next one. (proxy-connection: legacy clients.)
const HOP_BY_HOP_HEADERS = ['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade'] as const

// Client credentials for the proxy itself or upstream are never passed on. `expect` is answered by
// this server (100-continue) and the buffered body is sent whole, so it must not travel on either.
const CLIENT_ONLY_HEADERS = ['authorization', SESSION_TOKEN_HEADER, 'proxy-authorization', 'expect'] as const

type Headers = IncomingHttpHeaders | OutgoingHttpHeaders

/** Removes hop-by-hop headers, including any the message's own Connection header names. Mutates. */
export function withoutHopByHop<T extends Headers> (headers: T): T {
  const connection = headers.connection
  if (connection !== undefined) {
    for (const name of String(connection).split(',')) {
      const trimmed = name.trim().toLowerCase()
      if (trimmed !== '') delete headers[trimmed]
    }
  }
  for (const name of HOP_BY_HOP_HEADERS) delete headers[name]
  return headers
}

/**
 * Mutates and returns `headers` (reply-from's copy of the client's headers, Connection-named ones
 * already dropped): hop-by-hop and client credentials out, the proxy's tokens in.
 */
export function withUpstreamAuth (headers: IncomingHttpHeaders, tokens: UpstreamTokens): IncomingHttpHeaders {
  withoutHopByHop(headers)
  for (const name of CLIENT_ONLY_HEADERS) delete headers[name]
  headers.authorization = `Bearer ${tokens.oauthToken}`
  headers[SESSION_TOKEN_HEADER] = tokens.sessionToken
  return headers
}
