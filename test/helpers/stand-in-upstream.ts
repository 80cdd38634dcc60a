// A minimal ThingSpace stand-in, for tests that need an upstream answering what the simulator cannot: an invalid
// status, a gateway refusing every bearer, a body written as fast as the socket takes it, a request held back.

import http from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Test } from 'tap'

export interface StandInUpstream {
  url: string
  /** OAuth tokens issued so far, in order: `<prefix>oauth-1`, `<prefix>oauth-2`, ... */
  oauthTokens: string[]
  /** Session tokens issued by logins so far, in order: `<prefix>session-1`, ... */
  sessionTokens: string[]
}

/** Any request other than the proxy's own token and login calls, with its body read whole. */
export type StandInHandler = (request: http.IncomingMessage, body: Buffer, response: http.ServerResponse) => void

/**
 * Answers the proxy's own calls (POST to the OAuth token endpoint and to the session login) with new numbered
 * tokens, and hands every other request to `handle` once its body is read. `tokenPrefix` makes the tokens
 * easy to spot in an answer or a log. Closed, its connections with it, when the test ends.
 */
export async function startStandInUpstream (
  t: Test,
  handle: StandInHandler,
  { tokenPrefix = '' }: { tokenPrefix?: string } = {}
): Promise<StandInUpstream> {
  const oauthTokens: string[] = []
  const sessionTokens: string[] = []
  const json = (response: http.ServerResponse, body: unknown): void => {
    response.setHeader('content-type', 'application/json')
    response.end(JSON.stringify(body))
  }
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => {
      if (request.method === 'POST' && request.url === '/api/ts/v1/oauth2/token') {
        const token = `${tokenPrefix}oauth-${oauthTokens.length + 1}`
        oauthTokens.push(token)
        json(response, { access_token: token, token_type: 'bearer', expires_in: 3600 })
      } else if (request.method === 'POST' && request.url === '/api/m2m/v1/session/login') {
        const token = `${tokenPrefix}session-${sessionTokens.length + 1}`
        sessionTokens.push(token)
        json(response, { sessionToken: token })
      } else {
        handle(request, Buffer.concat(chunks), response)
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      })
  )
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, oauthTokens, sessionTokens }
}
