// Builds the proxy configuration: built-in defaults < JSON file named by M2M_PROXY_CONFIG < environment. Pure apart
// from the injected file reader.

import path from 'node:path'
import { ConfigError } from './errors.js'
import { errorCode } from '../errors.js'
import { DEFAULT_REDIS_KEY_PREFIX, DEFAULT_REDIS_TIMEOUT_MS, SETTINGS, type RawSettings, type SettingKey } from './settings.js'
import { checkEnvironmentNames } from './env-names.js'
import { FleetKeyError, parseFleetKey } from './fleet-key.js'

export const CONFIG_FILE_ENV = 'M2M_PROXY_CONFIG'
/**
 * Read by the fleet tests only (the Redis they use); known here so that a proxy started from a shell that sets it is
 * not refused.
 */
export const TEST_REDIS_URL_ENV = 'M2M_PROXY_TEST_REDIS_URL'
export const ADMIN_TOKEN_MIN_LENGTH = 24

type Required<K extends SettingKey> = NonNullable<RawSettings[K]>

export type ProxyConfig = {
  [
  K in Exclude<
    SettingKey,
    'adminToken' | 'adminTokenFile' | 'stateDir' | 'credentialsFile' | 'accountName' | FleetSettingKey | CallbackSettingKey
  >
  ]: Required<K>
} & {
  /** The billing account callbacks are registered for by default (M2M_PROXY_ACCOUNT_NAME); undefined: none set. */
  accountName: string | undefined
  /** The callback inbox; undefined: off (M2M_PROXY_CALLBACK_PORT not set). */
  callbacks: CallbackConfig | undefined
  /** Fleet mode through Redis; undefined: single-process mode. */
  fleet: FleetConfig | undefined
  /** Absolute path of the credentials JSON file. */
  credentialsFile: string
  /** Absolute path of the directory for state that survives restarts. */
  stateDir: string
  /** Bearer token of the admin routes; undefined disables them. */
  adminToken: string | undefined
  /** Absolute paths of the files secrets were read from (admin token, fleet key), for the start-up mode check. */
  secretFiles: Array<{ path: string; setting: string; holds: string }>
  /** Corporate egress proxy from HTTPS_PROXY / HTTP_PROXY / NO_PROXY (either case). */
  egress: EgressProxy
}

type FleetSettingKey = 'redisUrl' | 'fleetKey' | 'fleetKeyFile' | 'redisKeyPrefix' | 'redisTimeoutMs'
type CallbackSettingKey = Extract<SettingKey, `callback${string}`>

export interface CallbackConfig {
  host: string
  port: number
  /**
   * What ThingSpace sends in each callback's body, as registered with the callback URL; never log them. Undefined: the
   * proxy makes them and keeps them in its state directory (single-process mode only).
   */
  credentials: CallbackCredentials | undefined
  /** Where ThingSpace reaches the listener (M2M_PROXY_CALLBACK_PUBLIC_URL); undefined: given at registration. */
  publicUrl: string | undefined
  /** Addresses and CIDR blocks callbacks may come from; empty: any. */
  allowedSources: readonly string[]
  /** Peers (the ingress) whose X-Forwarded-For names the caller; empty: the socket's peer is the caller. */
  trustedProxies: readonly string[]
  /** M2M_PROXY_CALLBACK_LOCATION_KEY_HEADER (lower case); undefined: found by its name. */
  locationKeyHeader: string | undefined
  bodyLimitBytes: number
  retention: { count: number; bytes: number; ageMs: number }
  maxWaiting: number
}

export interface CallbackCredentials {
  username: string
  password: string
}

/** Shortest password the inbox accepts: ThingSpace sends it in every callback, and it is all that guards the inbox. */
export const CALLBACK_PASSWORD_MIN_LENGTH = 16

export interface FleetConfig {
  /** May hold a password: never log it. */
  redisUrl: string
  /** The 32-byte secret the replicas share; never log it. */
  fleetKey: Buffer
  keyPrefix: string
  /** M2M_PROXY_REDIS_TIMEOUT_MS. */
  commandTimeoutMs: number
}

export interface EgressProxy {
  httpProxy?: string
  httpsProxy?: string
  noProxy?: string
}

function proxyUrl (env: NodeJS.ProcessEnv, name: string): string | undefined {
  const value = env[name] ?? env[name.toLowerCase()]
  if (value === undefined || value.trim() === '') return undefined
  let url: URL
  try {
    url = new URL(value.trim())
  } catch {
    // not echoed: may hold a password
    throw new ConfigError(name, 'must be a URL such as http://proxy.example.com:3128')
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ConfigError(name, `must use http:// or https:// (got ${url.protocol})`)
  }
  return url.href
}

function resolveEgress (env: NodeJS.ProcessEnv): EgressProxy {
  const noProxy = env.NO_PROXY ?? env.no_proxy
  return {
    httpProxy: proxyUrl(env, 'HTTP_PROXY'),
    httpsProxy: proxyUrl(env, 'HTTPS_PROXY'),
    noProxy: noProxy === undefined || noProxy.trim() === '' ? undefined : noProxy.trim()
  }
}

export interface ConfigSources {
  env: NodeJS.ProcessEnv
  /** Reads a UTF-8 file; throws on failure (e.g. fs.readFileSync). */
  readTextFile: (file: string) => string
  cwd: string
}

const NO_CREDENTIALS_HINT =
  'is not set: point it at a JSON file {"username","password","clientId","clientSecret"} ' +
  '(your UWS login and ThingSpace app key and secret); see config/example.json. ' +
  'To try the proxy without an account, run `npm run demo`.'

function readConfigFile (sources: ConfigSources): Record<string, unknown> {
  const file = sources.env[CONFIG_FILE_ENV]
  if (file === undefined || file === '') return {}
  let parsed: unknown
  try {
    parsed = JSON.parse(sources.readTextFile(path.resolve(sources.cwd, file)))
  } catch (error) {
    // The parser's message quotes the file, which may hold the admin token: never include it.
    const reason = error instanceof SyntaxError ? 'is not valid JSON' : `cannot be read (${errorCode(error)})`
    throw new ConfigError(CONFIG_FILE_ENV, `${file} ${reason}`)
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError(CONFIG_FILE_ENV, `${file} must hold a JSON object`)
  }
  // No prototype: a "__proto__" key would otherwise set it and have its contents read as settings.
  const values: Record<string, unknown> = Object.create(null) as Record<string, unknown>
  for (const [key, value] of Object.entries(parsed)) {
    if (key.startsWith('//')) continue // comment keys, as in config/example.json
    if (!Object.hasOwn(SETTINGS, key)) {
      throw new ConfigError(
        CONFIG_FILE_ENV,
        `${file} has unknown key "${key}"; known keys: ${Object.keys(SETTINGS).join(', ')}`
      )
    }
    values[key] = value
  }
  return values
}

function resolveSettings (sources: ConfigSources): RawSettings {
  const fromFile = readConfigFile(sources)
  const resolved: Record<string, unknown> = {}
  for (const [key, definition] of Object.entries(SETTINGS)) {
    const envValue = sources.env[definition.env]
    if (envValue !== undefined && envValue !== '') {
      resolved[key] = definition.parse(envValue, definition.env)
    } else if (Object.hasOwn(fromFile, key)) {
      resolved[key] = definition.parse(
        fromFile[key],
        `${definition.env} (key "${key}" in ${sources.env[CONFIG_FILE_ENV]})`
      )
    } else {
      resolved[key] = definition.default
    }
  }
  return resolved as RawSettings
}

function resolveAdminToken (settings: RawSettings, sources: ConfigSources): string | undefined {
  const { adminToken, adminTokenFile } = settings
  if (adminToken !== undefined && adminTokenFile !== undefined) {
    throw new ConfigError(
      'M2M_PROXY_ADMIN_TOKEN',
      'set either M2M_PROXY_ADMIN_TOKEN or M2M_PROXY_ADMIN_TOKEN_FILE, not both'
    )
  }
  let token = adminToken
  let setting = 'M2M_PROXY_ADMIN_TOKEN'
  if (adminTokenFile !== undefined) {
    setting = 'M2M_PROXY_ADMIN_TOKEN_FILE'
    try {
      token = sources.readTextFile(path.resolve(sources.cwd, adminTokenFile)).trim()
    } catch (error) {
      throw new ConfigError(setting, `${adminTokenFile} cannot be read (${errorCode(error)})`)
    }
  }
  if (token === undefined) return undefined
  if (token.length < ADMIN_TOKEN_MIN_LENGTH || /\s/.test(token)) {
    // The length is safe to print; the token itself is not.
    throw new ConfigError(
      setting,
      `the admin token must be at least ${ADMIN_TOKEN_MIN_LENGTH} characters without spaces (got ${token.length}); generate one with: openssl rand -hex 24`
    )
  }
  return token
}

/**
 * Fleet mode needs the Redis URL and exactly one of the key and the key file; a key without a URL is refused, not
 * ignored.
 */
function resolveFleet (settings: RawSettings, sources: ConfigSources): FleetConfig | undefined {
  const { redisUrl, fleetKey, fleetKeyFile, redisKeyPrefix, redisTimeoutMs } = settings
  if (fleetKey !== undefined && fleetKeyFile !== undefined) {
    throw new ConfigError('M2M_PROXY_FLEET_KEY', 'set either M2M_PROXY_FLEET_KEY or M2M_PROXY_FLEET_KEY_FILE, not both')
  }
  const setting = fleetKeyFile !== undefined ? 'M2M_PROXY_FLEET_KEY_FILE' : 'M2M_PROXY_FLEET_KEY'
  if (redisUrl === undefined) {
    if (fleetKey === undefined && fleetKeyFile === undefined) return undefined
    // Replicas believing they share state while each runs alone would each spend the lockout budget.
    throw new ConfigError(
      setting,
      'is set but M2M_PROXY_REDIS_URL is not: set both for fleet mode, or neither for a single process'
    )
  }
  let keyText = fleetKey
  if (fleetKeyFile !== undefined) {
    try {
      keyText = sources.readTextFile(path.resolve(sources.cwd, fleetKeyFile))
    } catch (error) {
      throw new ConfigError(setting, `${fleetKeyFile} cannot be read (${errorCode(error)})`)
    }
  }
  if (keyText === undefined) {
    throw new ConfigError(
      'M2M_PROXY_FLEET_KEY',
      'is required with M2M_PROXY_REDIS_URL (or M2M_PROXY_FLEET_KEY_FILE): the same 32-byte secret on every replica, 64 hex digits or base64; generate one with: openssl rand -hex 32'
    )
  }
  try {
    return {
      redisUrl,
      fleetKey: parseFleetKey(keyText),
      keyPrefix: redisKeyPrefix ?? DEFAULT_REDIS_KEY_PREFIX,
      commandTimeoutMs: redisTimeoutMs ?? DEFAULT_REDIS_TIMEOUT_MS
    }
  } catch (error) {
    if (error instanceof FleetKeyError) throw new ConfigError(setting, error.message)
    throw error
  }
}

function readCallbackCredentials (fileSetting: string, sources: ConfigSources): CallbackCredentials {
  const setting = 'M2M_PROXY_CALLBACK_CREDENTIALS_FILE'
  const file = path.resolve(sources.cwd, fileSetting)
  let parsed: unknown
  try {
    parsed = JSON.parse(sources.readTextFile(file))
  } catch (error) {
    // The parser's message may quote the password: never include it.
    throw new ConfigError(
      setting,
      `${fileSetting} ${error instanceof SyntaxError ? 'is not valid JSON' : `cannot be read (${errorCode(error)})`}`
    )
  }
  const { username, password } = (typeof parsed === 'object' && parsed !== null ? parsed : {}) as Record<string, unknown>
  if (typeof username !== 'string' || username.trim() === '' || typeof password !== 'string') {
    throw new ConfigError(setting, `${fileSetting} must hold {"username": "...", "password": "..."}`)
  }
  if (password.length < CALLBACK_PASSWORD_MIN_LENGTH) {
    throw new ConfigError(
      setting,
      `the password in ${fileSetting} must be at least ${CALLBACK_PASSWORD_MIN_LENGTH} characters (got ${password.length}); generate one with: openssl rand -hex 24`
    )
  }
  return { username, password }
}

/**
 * The inbox needs the username and password it checks, without which anyone could write to it: the operator's file, or
 * (single process) a pair the proxy makes once and keeps in its state directory (callbacks/credentials.ts).
 */
function resolveCallbacks (settings: RawSettings, sources: ConfigSources): CallbackConfig | undefined {
  const { callbackPort, callbackCredentialsFile } = settings
  if (callbackPort === undefined) return undefined
  const setting = 'M2M_PROXY_CALLBACK_CREDENTIALS_FILE'
  if (callbackCredentialsFile === undefined && settings.redisUrl !== undefined) {
    throw new ConfigError(
      setting,
      'is required with M2M_PROXY_CALLBACK_PORT in fleet mode: every replica must check the same username and ' +
        'password, so give them all one JSON file {"username","password"}'
    )
  }
  const credentials =
    callbackCredentialsFile === undefined ? undefined : readCallbackCredentials(callbackCredentialsFile, sources)
  return {
    host: settings.callbackHost ?? '127.0.0.1',
    port: callbackPort,
    credentials,
    publicUrl: settings.callbackPublicUrl,
    allowedSources: settings.callbackAllowedSources ?? [],
    trustedProxies: settings.callbackTrustedProxies ?? [],
    locationKeyHeader: settings.callbackLocationKeyHeader,
    bodyLimitBytes: settings.callbackBodyLimitBytes ?? 262144,
    retention: {
      count: settings.callbackRetentionCount ?? 10000,
      bytes: settings.callbackRetentionBytes ?? 32 * 1024 * 1024,
      ageMs: (settings.callbackRetentionHours ?? 168) * 3_600_000
    },
    maxWaiting: settings.callbackMaxWaiting ?? 256
  }
}

/**
 * Every M2M_PROXY_* variable the proxy reads (and the tests' Redis URL); any other one is refused (see env-names.ts).
 */
export const KNOWN_ENV_NAMES: readonly string[] = [
  ...Object.values(SETTINGS).map((definition) => definition.env),
  CONFIG_FILE_ENV,
  TEST_REDIS_URL_ENV
]

/** Loopback: what never leaves this machine (the simulator, a TLS-terminating sidecar in the same pod). */
function isLoopbackHost (hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').toLowerCase()
  return host === 'localhost' || host.endsWith('.localhost') || host === '::1' || /^127(\.\d{1,3}){3}$/.test(host)
}

/** Plain http:// to another machine would send the password and both tokens in clear. */
function checkUpstreamTransport (upstream: string | undefined, allowInsecure: boolean | undefined): void {
  if (upstream === undefined) return
  const url = new URL(upstream)
  if (url.protocol !== 'http:' || allowInsecure === true || isLoopbackHost(url.hostname)) return
  throw new ConfigError(
    'M2M_PROXY_UPSTREAM',
    `is http:// to ${url.hostname}, another machine: the ThingSpace password and tokens would cross the network in ` +
      'clear. Use https://, or set M2M_PROXY_ALLOW_INSECURE_UPSTREAM=true for an upstream you trust on a network you trust'
  )
}

const WILDCARD_HOSTS: ReadonlySet<string> = new Set(['0.0.0.0', '::', '[::]'])

/** Both listeners on one port of one address: the second bind would fail with a misleading "in use". */
function checkListenerPorts (settings: { port?: number, adminPort?: number, host?: string, adminHost?: string }): void {
  const { port, adminPort, host, adminHost } = settings
  if (port === undefined || port === 0 || port !== adminPort || host === undefined || adminHost === undefined) return
  if (host !== adminHost && !WILDCARD_HOSTS.has(host) && !WILDCARD_HOSTS.has(adminHost)) return
  throw new ConfigError(
    'M2M_PROXY_ADMIN_PORT',
    `is ${adminPort}, the port of the proxy listener too (M2M_PROXY_PORT, on ${host}): give the admin listener a port of its own`
  )
}

/** Where a client on this machine reaches the admin listener, and with which token (the CLI, the healthcheck). */
export interface AdminEndpoint {
  /** http://host:port, a wildcard listener reached through loopback. */
  url: string
  /**
   * The admin token, read when asked (a token file the healthcheck need not read); undefined: none is configured, the
   * operator routes are off and the probes still answer.
   */
  readToken: () => string | undefined
}

/**
 * The admin listener's address and token from the same sources as the proxy's own configuration (defaults < config
 * file < environment), without asking for what only the proxy needs (the credentials file).
 */
export function resolveAdminEndpoint (sources: ConfigSources): AdminEndpoint {
  checkEnvironmentNames(sources.env, KNOWN_ENV_NAMES)
  const settings = resolveSettings(sources)
  const configuredHost = settings.adminHost ?? '127.0.0.1'
  // A wildcard listener is reached through loopback from the same machine (or container).
  const host = WILDCARD_HOSTS.has(configuredHost) ? '127.0.0.1' : configuredHost.replace(/^\[|\]$/g, '')
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${settings.adminPort ?? 9090}`,
    readToken: () => resolveAdminToken(settings, sources)
  }
}

export function createConfig (sources: ConfigSources): ProxyConfig {
  checkEnvironmentNames(sources.env, KNOWN_ENV_NAMES)
  const settings = resolveSettings(sources)
  if (settings.credentialsFile === undefined) {
    throw new ConfigError('M2M_PROXY_CREDENTIALS_FILE', NO_CREDENTIALS_HINT)
  }
  const credentialsFile = path.resolve(sources.cwd, settings.credentialsFile)
  const { bodyMemoryBytes, bodyLimitBytes } = settings
  if (bodyMemoryBytes !== undefined && bodyLimitBytes !== undefined && bodyMemoryBytes < bodyLimitBytes) {
    throw new ConfigError(
      'M2M_PROXY_BODY_MEMORY_BYTES',
      `is ${bodyMemoryBytes}, less than M2M_PROXY_BODY_LIMIT_BYTES (${bodyLimitBytes}): a body of the largest size allowed could never be admitted`
    )
  }
  checkUpstreamTransport(settings.upstream, settings.allowInsecureUpstream)
  checkListenerPorts(settings)
  const {
    adminTokenFile: _file,
    adminToken: _token,
    redisUrl: _redisUrl,
    fleetKey: _fleetKey,
    fleetKeyFile: _fleetKeyFile,
    redisKeyPrefix: _prefix,
    redisTimeoutMs: _redisTimeoutMs,
    callbackPort: _callbackPort,
    callbackHost: _callbackHost,
    callbackCredentialsFile: _callbackCredentialsFile,
    callbackPublicUrl: _callbackPublicUrl,
    callbackAllowedSources: _callbackAllowedSources,
    callbackTrustedProxies: _callbackTrustedProxies,
    callbackBodyLimitBytes: _callbackBodyLimitBytes,
    callbackRetentionCount: _callbackRetentionCount,
    callbackRetentionBytes: _callbackRetentionBytes,
    callbackRetentionHours: _callbackRetentionHours,
    callbackMaxWaiting: _callbackMaxWaiting,
    ...rest
  } = settings
  return {
    ...(rest as Omit<
      ProxyConfig,
      'credentialsFile' | 'stateDir' | 'adminToken' | 'egress' | 'fleet' | 'secretFiles' | 'callbacks'
    >),
    fleet: resolveFleet(settings, sources),
    callbacks: resolveCallbacks(settings, sources),
    credentialsFile,
    stateDir:
      settings.stateDir === undefined ? path.dirname(credentialsFile) : path.resolve(sources.cwd, settings.stateDir),
    adminToken: resolveAdminToken(settings, sources),
    secretFiles: [
      ...(settings.adminTokenFile === undefined
        ? []
        : [
            {
              path: path.resolve(sources.cwd, settings.adminTokenFile),
              setting: 'M2M_PROXY_ADMIN_TOKEN_FILE',
              holds: 'the admin token'
            }
          ]),
      ...(settings.fleetKeyFile === undefined
        ? []
        : [
            {
              path: path.resolve(sources.cwd, settings.fleetKeyFile),
              setting: 'M2M_PROXY_FLEET_KEY_FILE',
              holds: 'the fleet key'
            }
          ])
    ],
    egress: resolveEgress(sources.env)
  }
}
