// The one table of settings: environment name, config-file key, default and parser. The Config type is derived from it.

import { isIP } from 'node:net'
import { ConfigError } from './errors.js'
import { DEFAULT_FORWARD_PREFIXES, parseForwardPrefixes } from './forward-prefixes.js'

type Parser<T> = (raw: unknown, setting: string) => T

/** Start of every key the fleet stores (M2M_PROXY_REDIS_KEY_PREFIX), so that fleets share a Redis. */
export const DEFAULT_REDIS_KEY_PREFIX = 'm2m-session-proxy:'
/** M2M_PROXY_REDIS_TIMEOUT_MS's default. */
export const DEFAULT_REDIS_TIMEOUT_MS = 2000

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
export type LogLevel = (typeof LOG_LEVELS)[number]

function describe (raw: unknown): string {
  return typeof raw === 'string' ? JSON.stringify(raw) : String(raw)
}

function text (raw: unknown, setting: string): string {
  if (typeof raw !== 'string' || raw.trim() === '') {
    throw new ConfigError(setting, `must be a non-empty string (got ${describe(raw)})`)
  }
  return raw.trim()
}

/** An HTTP header name (RFC 9110 token), kept in lower case as Node gives header names. */
function headerName (raw: unknown, setting: string): string {
  const name = text(raw, setting)
  if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) {
    throw new ConfigError(setting, `must be an HTTP header name (got ${JSON.stringify(name.slice(0, 64))})`)
  }
  return name.toLowerCase()
}

function integer (min: number, max: number): Parser<number> {
  return (raw, setting) => {
    const value =
      typeof raw === 'number' ? raw : typeof raw === 'string' && /^\s*-?\d+\s*$/.test(raw) ? Number(raw) : NaN
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new ConfigError(setting, `must be an integer from ${min} to ${max} (got ${describe(raw)})`)
    }
    return value
  }
}

const port = integer(0, 65535)

/** Days, fractions allowed: 0 (off) or from `min` to `max`. */
function daysOrOff (min: number, max: number): Parser<number> {
  return (raw, setting) => {
    const value =
      typeof raw === 'number' ? raw : typeof raw === 'string' && /^\s*\d+(\.\d+)?\s*$/.test(raw) ? Number(raw) : NaN
    if (!Number.isFinite(value) || (value !== 0 && (value < min || value > max))) {
      throw new ConfigError(
        setting,
        `must be 0 (off) or a number of days from ${min} to ${max}, fractions allowed (got ${describe(raw)})`
      )
    }
    return value
  }
}

/** Addresses and CIDR blocks, IPv4 or IPv6 (`203.0.113.7`, `198.51.100.0/24`, `2001:db8::/32`). */
function addressList (raw: unknown, setting: string): readonly string[] {
  const entries = (typeof raw === 'string' ? raw.split(',') : Array.isArray(raw) ? raw : [raw])
    .map((entry) => (typeof entry === 'string' ? entry.trim() : entry))
    .filter((entry) => entry !== '')
  for (const entry of entries) {
    const [address = '', bits, extra] = typeof entry === 'string' ? entry.split('/') : []
    const family = isIP(address)
    const maxBits = family === 6 ? 128 : 32
    const bitsOk = bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) <= maxBits)
    if (family === 0 || !bitsOk || extra !== undefined) {
      throw new ConfigError(
        setting,
        `must be a comma-separated list of IP addresses or CIDR blocks, such as 203.0.113.7,198.51.100.0/24 (got ${describe(entry)})`
      )
    }
  }
  return entries as string[]
}

/**
 * The one set of boolean spellings, in the environment and the config file alike (case-insensitive; JSON true/false
 * too).
 */
export const BOOLEAN_SPELLINGS = { true: ['true', 'yes', 'on', '1'], false: ['false', 'no', 'off', '0'] } as const

function boolean (raw: unknown, setting: string): boolean {
  if (typeof raw === 'boolean') return raw
  const value = typeof raw === 'string' ? raw.trim().toLowerCase() : typeof raw === 'number' ? String(raw) : ''
  if ((BOOLEAN_SPELLINGS.true as readonly string[]).includes(value)) return true
  if ((BOOLEAN_SPELLINGS.false as readonly string[]).includes(value)) return false
  throw new ConfigError(
    setting,
    `must be ${BOOLEAN_SPELLINGS.true.join(', ')} (enabled) or ${BOOLEAN_SPELLINGS.false.join(', ')} (disabled), any case (got ${describe(raw)})`
  )
}

function upstreamOrigin (raw: unknown, setting: string): string {
  const value = text(raw, setting)
  let url: URL
  try {
    url = new URL(value)
  } catch {
    // Not echoed: an unparseable value may still carry user:password.
    throw new ConfigError(setting, 'must be an absolute http(s) URL such as https://thingspace.verizon.com')
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new ConfigError(setting, `must use https:// or http:// (got ${url.protocol})`)
  }
  if (url.username !== '' || url.password !== '') {
    // Never echo the value back: it holds a secret.
    throw new ConfigError(setting, 'must not contain a user name or password')
  }
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '') {
    throw new ConfigError(setting, `must be an origin only, without path or query (got ${JSON.stringify(value)})`)
  }
  return url.origin
}

/** Host names a client may send in the Host header (besides the defaults; see src/listener/request-guard.ts). */
function hostNameList (raw: unknown, setting: string): readonly string[] {
  const entries = (typeof raw === 'string' ? raw.split(',') : Array.isArray(raw) ? raw : [raw]).map((entry) =>
    typeof entry === 'string' ? entry.trim().toLowerCase().replace(/\.$/, '') : entry
  )
  const names = entries.filter((entry) => entry !== '')
  for (const name of names) {
    if (
      typeof name !== 'string' ||
      name.length > 253 ||
      !/^[a-z0-9_][a-z0-9_-]*(\.[a-z0-9_][a-z0-9_-]*)*$/.test(name)
    ) {
      throw new ConfigError(
        setting,
        `must be a comma-separated list of host names without port or scheme, such as m2m-session-proxy,proxy.internal (got ${describe(name)})`
      )
    }
  }
  return names
}

/**
 * Path prefixes under /api/ to forward (see src/proxy/paths.ts), comma-separated or a JSON array; checked and put in
 * one spelling here, at start-up.
 */
function forwardPrefixList (raw: unknown, setting: string): readonly string[] {
  const entries = typeof raw === 'string' ? raw.split(',') : Array.isArray(raw) ? raw : [raw]
  const prefixes = entries.filter((entry) => typeof entry !== 'string' || entry.trim() !== '')
  if (prefixes.length === 0) {
    throw new ConfigError(
      setting,
      `must name at least one path prefix under /api/, such as /api/m2m/,/api/loc/v1/ (got ${describe(raw)})`
    )
  }
  const invalid = prefixes.find((entry) => typeof entry !== 'string')
  if (invalid !== undefined) {
    throw new ConfigError(
      setting,
      `must be a comma-separated list of path prefixes under /api/ (got ${describe(invalid)})`
    )
  }
  try {
    return parseForwardPrefixes(prefixes as string[])
  } catch (error) {
    throw new ConfigError(
      setting,
      `must be a comma-separated list of path prefixes under /api/, such as /api/m2m/,/api/loc/v1/: ${(error as Error).message}`
    )
  }
}

function logLevel (raw: unknown, setting: string): LogLevel {
  const value = text(raw, setting).toLowerCase()
  const level = LOG_LEVELS.find((candidate) => candidate === value)
  if (level === undefined) {
    throw new ConfigError(setting, `must be one of ${LOG_LEVELS.join(', ')} (got ${describe(raw)})`)
  }
  return level
}

const LOG_FORMATS = ['json', 'pretty'] as const
export type LogFormat = (typeof LOG_FORMATS)[number]

function logFormat (raw: unknown, setting: string): LogFormat {
  const value = text(raw, setting).toLowerCase()
  const format = LOG_FORMATS.find((candidate) => candidate === value)
  if (format === undefined) {
    throw new ConfigError(setting, `must be json (one JSON object per line) or pretty (for people) (got ${describe(raw)})`)
  }
  return format
}

function secretText (raw: unknown, setting: string): string {
  if (typeof raw !== 'string' || raw.trim() === '') {
    throw new ConfigError(setting, 'must be a non-empty string')
  }
  return raw.trim()
}

/**
 * Where ThingSpace reaches the callback listener from outside (the ingress): an http(s) origin and optional path, no
 * credentials, query or fragment; each service is registered at `<url>/<Service>`. Also checks POST /admin/callbacks.
 */
export function callbackBaseUrl (raw: unknown, setting: string): string {
  const value = text(raw, setting)
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw new ConfigError(setting, `must be an absolute URL such as https://callbacks.example.com (got ${describe(raw)})`)
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new ConfigError(setting, `must use https:// (or http:// for a test listener) (got ${url.protocol})`)
  }
  // A bare `?` or `#` leaves search and hash empty but stays in the URL, and the service's name would follow it.
  if (url.username !== '' || url.password !== '' || url.href.includes('?') || url.href.includes('#')) {
    throw new ConfigError(setting, 'must not hold credentials, a query or a fragment')
  }
  return url.href.replace(/\/+$/, '')
}

/** A ThingSpace billing account name, as in /api/m2m/v1/callbacks/{accountName}. */
export function billingAccountName (raw: unknown, setting: string): string {
  const value = text(raw, setting)
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(value)) {
    throw new ConfigError(setting, `must be an account name such as 0000123456-00001 (got ${describe(raw)})`)
  }
  return value
}

/** A redis:// or rediss:// URL; never echoed, as it may hold a password. */
function redisUrl (raw: unknown, setting: string): string {
  const value = secretText(raw, setting)
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw new ConfigError(
      setting,
      'must be a URL such as redis://redis.internal:6379 or rediss://user:password@redis.internal:6380'
    )
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    throw new ConfigError(setting, `must use redis:// or rediss:// (TLS) (got ${url.protocol})`)
  }
  if (url.hostname === '') throw new ConfigError(setting, 'must name a host, such as redis://redis.internal:6379')
  return value
}

/**
 * Start of every Redis key the proxy writes: letters, digits and : _ . - only, so that it is safe in a SCAN pattern.
 */
function keyPrefix (raw: unknown, setting: string): string {
  const value = text(raw, setting)
  if (!/^[A-Za-z0-9:_.-]{1,100}$/.test(value)) {
    throw new ConfigError(setting, `must be 1 to 100 letters, digits or : _ . - (got ${describe(raw)})`)
  }
  return value
}

interface Setting<T> {
  env: string
  default: T | undefined
  parse: Parser<T>
}

function setting<T> (env: string, defaultValue: T | undefined, parse: Parser<T>): Setting<T> {
  return { env, default: defaultValue, parse }
}

/** Keys are the config-file keys (camelCase of the environment names). */
export const SETTINGS = {
  upstream: setting('M2M_PROXY_UPSTREAM', 'https://thingspace.verizon.com', upstreamOrigin),
  // http:// to another machine would carry the password and tokens in clear: refused unless this says it is meant.
  allowInsecureUpstream: setting('M2M_PROXY_ALLOW_INSECURE_UPSTREAM', false, boolean),
  host: setting('M2M_PROXY_HOST', '127.0.0.1', text),
  port: setting('M2M_PROXY_PORT', 8080, port),
  adminHost: setting('M2M_PROXY_ADMIN_HOST', '127.0.0.1', text),
  adminPort: setting('M2M_PROXY_ADMIN_PORT', 9090, port),
  allowedHosts: setting<readonly string[]>('M2M_PROXY_ALLOWED_HOSTS', [], hostNameList),
  forwardPrefixes: setting<readonly string[]>(
    'M2M_PROXY_FORWARD_PREFIXES',
    DEFAULT_FORWARD_PREFIXES,
    forwardPrefixList
  ),
  requestTimeoutMs: setting('M2M_PROXY_REQUEST_TIMEOUT_MS', 30000, integer(100, 3_600_000)),
  // A connection must send a whole request head within this of opening or of its previous answer.
  idleConnectionTimeoutMs: setting('M2M_PROXY_IDLE_CONNECTION_TIMEOUT_MS', 5000, integer(100, 600_000)),
  // Only against descriptor exhaustion: memory is bounded by the admission limits below, not by the connection count.
  maxConnections: setting('M2M_PROXY_MAX_CONNECTIONS', 4096, integer(1, 65536)),
  // Admission on the proxy listener: requests handled at once, waiting at most (and how long), request-body bytes held
  // in memory across every connection, requests one connection may have in progress; beyond, 503 with Retry-After.
  maxInFlight: setting('M2M_PROXY_MAX_IN_FLIGHT', 128, integer(1, 65536)),
  maxQueued: setting('M2M_PROXY_MAX_QUEUED', 4096, integer(0, 1_000_000)),
  queueTimeoutMs: setting('M2M_PROXY_QUEUE_TIMEOUT_MS', 30000, integer(1, 600_000)),
  bodyMemoryBytes: setting('M2M_PROXY_BODY_MEMORY_BYTES', 32 * 1024 * 1024, integer(1, 4 * 1024 * 1024 * 1024)),
  maxPipelined: setting('M2M_PROXY_MAX_PIPELINED', 8, integer(1, 1024)),
  // Connections to ThingSpace at most; requests beyond wait for one.
  upstreamConnections: setting('M2M_PROXY_UPSTREAM_CONNECTIONS', 128, integer(1, 65536)),
  // Admin bodies are small JSON (ADMIN_BODY_LIMIT_BYTES): 256 connections hold at most 16 MiB, and 64 held by an
  // attacker leave room for probes; beyond the cap, connections idle for a second make room for new ones.
  adminMaxConnections: setting('M2M_PROXY_ADMIN_MAX_CONNECTIONS', 256, integer(1, 65536)),
  credentialsFile: setting<string>('M2M_PROXY_CREDENTIALS_FILE', undefined, text),
  adminToken: setting<string>('M2M_PROXY_ADMIN_TOKEN', undefined, secretText),
  adminTokenFile: setting<string>('M2M_PROXY_ADMIN_TOKEN_FILE', undefined, text),
  stateDir: setting<string>('M2M_PROXY_STATE_DIR', undefined, text),
  sessionIdleSeconds: setting('M2M_PROXY_SESSION_IDLE_SECONDS', 1200, integer(10, 86400)),
  upstreamTimeoutMs: setting('M2M_PROXY_UPSTREAM_TIMEOUT_MS', 30000, integer(100, 600000)),
  // ThingSpace's throttling (429, or 503 with Retry-After): every request pauses for Retry-After (capped), the
  // throttled one is sent again; a request waits at most this long in all before the client gets the 429 (or 503
  // Proxy.Overloaded).
  throttleMaxWaitMs: setting('M2M_PROXY_THROTTLE_MAX_WAIT_MS', 30000, integer(0, 600_000)),
  throttleMaxPauseMs: setting('M2M_PROXY_THROTTLE_MAX_PAUSE_MS', 60000, integer(100, 3_600_000)),
  // The contracted rate (requests per second sent upstream at most); 0: none.
  upstreamRateLimit: setting('M2M_PROXY_UPSTREAM_RATE_LIMIT', 0, integer(0, 100_000)),
  bodyLimitBytes: setting('M2M_PROXY_BODY_LIMIT_BYTES', 1048576, integer(1, 100 * 1024 * 1024)),
  maxLoginFailures: setting('M2M_PROXY_MAX_LOGIN_FAILURES', 2, integer(1, 4)),
  logLevel: setting<LogLevel>('M2M_PROXY_LOG_LEVEL', 'info', logLevel),
  // json for log collectors; pretty for a person at a terminal (the demo's default).
  logFormat: setting<LogFormat>('M2M_PROXY_LOG_FORMAT', 'json', logFormat),
  // One info line per request answered on the proxy listener (method, path, status, duration); false leaves them out,
  // m2m_proxy_requests_total still counts every request. What a line costs: docs/performance.md.
  logRequests: setting('M2M_PROXY_LOG_REQUESTS', true, boolean),
  // sonic-boom needs it below its 16 KiB write size.
  logBufferBytes: setting('M2M_PROXY_LOG_BUFFER_BYTES', 4096, integer(0, 16383)),
  // Lines kept for a slow stdout reader; beyond, lines are dropped and counted instead of growing memory.
  logMaxBufferedBytes: setting('M2M_PROXY_LOG_MAX_BUFFERED_BYTES', 1024 * 1024, integer(16384, 256 * 1024 * 1024)),
  credentialsWatchIntervalMs: setting('M2M_PROXY_CREDENTIALS_WATCH_INTERVAL_MS', 2000, integer(0, 3_600_000)),
  shutdownGraceMs: setting('M2M_PROXY_SHUTDOWN_GRACE_MS', 10000, integer(0, 600_000)),
  logoutOnShutdown: setting('M2M_PROXY_LOGOUT_ON_SHUTDOWN', true, boolean),
  // Scheduled rotation: the password is rotated once older than this (its change time in the state directory, and in
  // Redis in fleet mode); 0: off.
  passwordRotationDays: setting('M2M_PROXY_PASSWORD_ROTATION_DAYS', 0, daysOrOff(1, 3650)),
  passwordRotationFirstCheckMs: setting(
    'M2M_PROXY_PASSWORD_ROTATION_FIRST_CHECK_MS',
    60_000,
    integer(1000, 86_400_000)
  ),
  // Fleet mode: replicas of one account share the session, the lockout budget and the password through Redis.
  redisUrl: setting<string>('M2M_PROXY_REDIS_URL', undefined, redisUrl),
  fleetKey: setting<string>('M2M_PROXY_FLEET_KEY', undefined, secretText),
  fleetKeyFile: setting<string>('M2M_PROXY_FLEET_KEY_FILE', undefined, text),
  redisKeyPrefix: setting('M2M_PROXY_REDIS_KEY_PREFIX', DEFAULT_REDIS_KEY_PREFIX, keyPrefix),
  // A Redis command not answered within this fails, and Redis counts as unreachable until it answers again
  // (fleet/answer-deadline.ts): a stopped Redis that keeps its connections open must not hold requests forever.
  redisTimeoutMs: setting('M2M_PROXY_REDIS_TIMEOUT_MS', DEFAULT_REDIS_TIMEOUT_MS, integer(100, 60_000)),
  // The callback inbox (docs/callbacks.md): off unless the port is set; ThingSpace's callbacks are checked against the
  // username and password in the credentials file (or made by the proxy in its state directory), stored durably, and
  // read from the proxy listener.
  callbackPort: setting<number>('M2M_PROXY_CALLBACK_PORT', undefined, port),
  callbackHost: setting('M2M_PROXY_CALLBACK_HOST', '127.0.0.1', text),
  callbackCredentialsFile: setting<string>('M2M_PROXY_CALLBACK_CREDENTIALS_FILE', undefined, text),
  callbackPublicUrl: setting<string>('M2M_PROXY_CALLBACK_PUBLIC_URL', undefined, callbackBaseUrl),
  accountName: setting<string>('M2M_PROXY_ACCOUNT_NAME', undefined, billingAccountName),
  callbackAllowedSources: setting<readonly string[]>('M2M_PROXY_CALLBACK_ALLOWED_SOURCES', [], addressList),
  // The ingress in front of the callback listener: from these peers the caller's address is taken from
  // X-Forwarded-For (the nearest address not in the list), for the source check and the log.
  callbackTrustedProxies: setting<readonly string[]>('M2M_PROXY_CALLBACK_TRUSTED_PROXIES', [], addressList),
  // The header of a Device Location registration's answer that holds the shared key its callbacks are signed with;
  // unset: the one header whose name speaks of a key, secret or HMAC (Verizon's pages do not name it).
  callbackLocationKeyHeader: setting<string>('M2M_PROXY_CALLBACK_LOCATION_KEY_HEADER', undefined, headerName),
  callbackBodyLimitBytes: setting('M2M_PROXY_CALLBACK_BODY_LIMIT_BYTES', 262144, integer(1024, 16 * 1024 * 1024)),
  callbackRetentionCount: setting('M2M_PROXY_CALLBACK_RETENTION_COUNT', 10000, integer(1, 10_000_000)),
  callbackRetentionBytes: setting(
    'M2M_PROXY_CALLBACK_RETENTION_BYTES',
    32 * 1024 * 1024,
    integer(1024 * 1024, 4 * 1024 * 1024 * 1024)
  ),
  callbackRetentionHours: setting('M2M_PROXY_CALLBACK_RETENTION_HOURS', 168, integer(1, 87600)),
  // Long polls waiting at once; beyond, 503 with Retry-After (they hold no admission slot of the proxy listener).
  callbackMaxWaiting: setting('M2M_PROXY_CALLBACK_MAX_WAITING', 256, integer(1, 65536)),
  // Each replica's heartbeat for GET /admin/fleet: stale after 3 missed, dropped after 12.
  fleetHeartbeatMs: setting('M2M_PROXY_FLEET_HEARTBEAT_MS', 5000, integer(1000, 300_000))
} as const

export type SettingKey = keyof typeof SETTINGS

/** Values as parsed; settings without a default may be absent. */
export type RawSettings = {
  [K in SettingKey]: (typeof SETTINGS)[K] extends Setting<infer T> ? T | undefined : never
}
