// Checks every request on both listeners before its route runs: an origin-form target, an allowed Host, and no browser
// request from another site (DNS rebinding, cross-site requests).

import net from 'node:net'
import type { IncomingHttpHeaders } from 'node:http'

export interface RequestRefusal {
  kind: 'badRequest' | 'forbidden'
  /** Appended to the error code: Proxy.Forbidden.HostNotAllowed. */
  codeSuffix?: string
  message: string
}

/** Host names always accepted besides IP literals; the listener's own host and M2M_PROXY_ALLOWED_HOSTS are added. */
const DEFAULT_HOST_NAMES = ['localhost']
const MAX_ECHOED_LENGTH = 100

const PORT_SUFFIX = /^:\d{1,5}$/

/**
 * The host name of a Host header value (`name`, `name:port`, `[v6]:port`), lower case, without a trailing dot;
 * undefined when malformed.
 */
export function hostNameOf (hostHeader: string): string | undefined {
  let name = hostHeader
  let port = ''
  if (name.startsWith('[')) {
    const end = name.indexOf(']')
    if (end === -1) return undefined
    port = name.slice(end + 1)
    name = name.slice(1, end)
    if (!net.isIPv6(name)) return undefined
  } else {
    const colon = name.lastIndexOf(':')
    if (colon !== -1) {
      port = name.slice(colon)
      name = name.slice(0, colon)
      if (name.includes(':')) return undefined // IPv6 without brackets, or two ports
    }
  }
  if (port !== '' && !PORT_SUFFIX.test(port)) return undefined
  return name.toLowerCase().replace(/\.$/, '')
}

function quoted (value: string): string {
  return JSON.stringify(value.length > MAX_ECHOED_LENGTH ? `${value.slice(0, MAX_ECHOED_LENGTH)}...` : value)
}

export class RequestGuard {
  readonly #allowedNames: ReadonlySet<string>
  /** Nearly every client sends the same Host on every request: remembering the last accepted one skips the parse. */
  #lastAcceptedHost: string | undefined

  /**
   * `hostNames`: the listener's configured host and M2M_PROXY_ALLOWED_HOSTS; `localhost` and every IP literal are
   * always accepted.
   */
  constructor (hostNames: Iterable<string>) {
    this.#allowedNames = new Set([
      ...DEFAULT_HOST_NAMES,
      ...[...hostNames].map((name) => name.toLowerCase().replace(/\.$/, ''))
    ])
  }

  isAllowedHostName (name: string): boolean {
    return this.#allowedNames.has(name) || net.isIP(name) !== 0
  }

  /** undefined when the request may go on to routing. `rawUrl` is the request target exactly as received. */
  check (rawUrl: string, headers: IncomingHttpHeaders): RequestRefusal | undefined {
    // Absolute-form (http://host/path) and asterisk-form targets: Fastify's router would strip or
    // reinterpret them, so a check on the path could disagree with the route that runs.
    if (rawUrl.charCodeAt(0) !== 47 /* / */) {
      return {
        kind: 'badRequest',
        message:
          'the request target must be a path such as /api/m2m/v1/devices/actions/list (origin-form); absolute-form and other targets are refused'
      }
    }
    const host = headers.host
    // Node refuses HTTP/1.1 requests without Host; an HTTP/1.0 client without one is no browser.
    if (host !== undefined && host !== this.#lastAcceptedHost) {
      const name = hostNameOf(host)
      if (name === undefined || !this.isAllowedHostName(name)) {
        return {
          kind: 'forbidden',
          codeSuffix: 'HostNotAllowed',
          message: `Host ${quoted(host)} is not allowed: only localhost, IP addresses, the listener's host and the names in M2M_PROXY_ALLOWED_HOSTS are (protection against DNS rebinding)`
        }
      }
      this.#lastAcceptedHost = host
    }
    // Browsers mark requests from another site; legacy clients send neither header.
    const fetchSite = headers['sec-fetch-site']
    if (fetchSite !== undefined && fetchSite.toLowerCase() === 'cross-site') {
      return {
        kind: 'forbidden',
        codeSuffix: 'CrossSiteRequest',
        message: 'cross-site browser requests are refused (Sec-Fetch-Site: cross-site)'
      }
    }
    const origin = headers.origin
    if (origin !== undefined && !this.#isAllowedOrigin(origin)) {
      return {
        kind: 'forbidden',
        codeSuffix: 'CrossSiteRequest',
        message: `requests from the web origin ${quoted(origin)} are refused: its host is not allowed (M2M_PROXY_ALLOWED_HOSTS)`
      }
    }
    return undefined
  }

  #isAllowedOrigin (origin: string): boolean {
    let url: URL
    try {
      url = new URL(origin) // "null" (sandboxed pages, file://) does not parse, and is refused
    } catch {
      return false
    }
    const name = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname
    return this.isAllowedHostName(name.replace(/\.$/, ''))
  }
}
