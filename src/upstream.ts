// The HTTP client pool for every upstream call: TLS always verified, through the corporate egress proxy when
// configured.

import { Agent, EnvHttpProxyAgent, type Dispatcher } from 'undici'
import type { ProxyConfig } from './config/load.js'

const KEEP_ALIVE_TIMEOUT_MS = 4_000
const MAX_CONNECT_TIMEOUT_MS = 10_000

export function createUpstreamDispatcher (
  config: Pick<ProxyConfig, 'egress' | 'upstreamTimeoutMs'> & { upstreamConnections?: number }
): Dispatcher {
  // Explicit, because reply-from's default for its own clients is not to verify. Extra CAs: NODE_EXTRA_CA_CERTS.
  const connect = { rejectUnauthorized: true, timeout: Math.min(config.upstreamTimeoutMs, MAX_CONNECT_TIMEOUT_MS) }
  const { httpProxy, httpsProxy, noProxy } = config.egress
  if (httpProxy === undefined && httpsProxy === undefined) {
    // At most this many connections to ThingSpace: requests beyond wait in undici's queue for one (pipelined clients
    // included).
    return new Agent({ connect, keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS, connections: config.upstreamConnections })
  }
  // Empty strings, not undefined: the values come from the configuration, never again from process.env.
  return new EnvHttpProxyAgent({
    httpProxy: httpProxy ?? '',
    httpsProxy: httpsProxy ?? '',
    noProxy: noProxy ?? '',
    connect,
    requestTls: { rejectUnauthorized: true }, // TLS to ThingSpace inside the CONNECT tunnel
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    connections: config.upstreamConnections
  })
}

/** The egress proxy for logs: scheme, host and port only, never credentials. */
export function describeEgress (config: Pick<ProxyConfig, 'egress'>): string | undefined {
  const proxy = config.egress.httpsProxy ?? config.egress.httpProxy
  if (proxy === undefined) return undefined
  const url = new URL(proxy)
  return `${url.protocol}//${url.host}`
}
