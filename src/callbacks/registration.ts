// Registering the inbox with ThingSpace (POST /admin/callbacks): each service's URL under the public base URL, with the
// username and password the listener checks, through ThingSpace's own callback API and the proxy's own session. The
// ThingSpace call is a port: app.ts sends it through the proxy listener, so tokens, renewal and throttling apply.
// Device Location services (Location, DeviceLocation) are registered through their own API, and the shared key its
// answer returns is kept for the listener's signature check.

import type { CallbackCredentials } from '../config/load.js'
import { LOCATION_CALLBACK_SERVICES, isLocationService } from './location-signature.js'
import type { LocationKeyStore } from './location-keys.js'

export interface ThingSpaceAnswer {
  statusCode: number
  body: unknown
  /** The answer's headers, names in lower case (a Device Location registration returns its shared key in one). */
  headers: Record<string, string | string[] | undefined>
}

/** One call to ThingSpace's API through the proxy (path under /api/, JSON body). */
export type ThingSpaceCall = (method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown) => Promise<ThingSpaceAnswer>

export type ServiceOutcome =
  | { service: string; done: true; url?: string }
  | { service: string; done: false; status: number; errorCode: string; errorMessage: string }

const CALLBACKS_PATH = '/api/m2m/v1/callbacks'
/** Device Location's own callback API: registrations return a shared key instead of taking a username and password. */
const LOCATION_CALLBACKS_PATH = '/api/loc/v1/callbacks'

/** ThingSpace's (or the proxy's) {errorCode, errorMessage}, whatever else the body holds. */
function refusal (service: string, answer: ThingSpaceAnswer): ServiceOutcome {
  const { errorCode, errorMessage } = (typeof answer.body === 'object' && answer.body !== null ? answer.body : {}) as Record<string, unknown>
  return {
    service,
    done: false,
    status: answer.statusCode,
    errorCode: typeof errorCode === 'string' ? errorCode : 'unknown',
    errorMessage: typeof errorMessage === 'string' ? errorMessage.slice(0, 500) : `HTTP ${answer.statusCode}`
  }
}

const succeeded = (answer: ThingSpaceAnswer): boolean => answer.statusCode >= 200 && answer.statusCode < 300

export function accountPath (accountName: string, service?: string): string {
  const base = service !== undefined && isLocationService(service) ? LOCATION_CALLBACKS_PATH : CALLBACKS_PATH
  return `${base}/${encodeURIComponent(accountName)}`
}

/** Headers that never hold a callback key, whatever their names say. */
const ORDINARY_HEADERS = new Set(['content-type', 'content-length', 'date', 'connection', 'keep-alive', 'vary', 'etag'])

/**
 * The shared key a Device Location registration returned: in header `keyHeader` when one is set
 * (M2M_PROXY_CALLBACK_LOCATION_KEY_HEADER), otherwise in the one header whose name speaks of a key, secret or HMAC.
 * Verizon's pages say only that the key comes "in the header"; when none or several fit, the names (never the values)
 * are reported so that the operator can name the right one.
 */
export function sharedKeyOf (
  answer: ThingSpaceAnswer,
  keyHeader: string | undefined
): string | { headerNames: string[] } {
  const single = (value: string | string[] | undefined): string | undefined =>
    typeof value === 'string' && value.trim() !== '' ? value.trim() : undefined
  const candidates =
    keyHeader !== undefined
      ? [single(answer.headers[keyHeader.toLowerCase()])]
      : Object.entries(answer.headers)
        .filter(([name]) => !ORDINARY_HEADERS.has(name) && /key|secret|hmac/i.test(name))
        .map(([, value]) => single(value))
  const found = candidates.filter((value) => value !== undefined)
  return found.length === 1 ? (found[0] as string) : { headerNames: Object.keys(answer.headers) }
}

export interface RegistrationOptions {
  accountName: string
  baseUrl: string
  services: readonly string[]
  credentials: CallbackCredentials
  /** Where the Device Location services' shared keys are kept. */
  locationKeys: LocationKeyStore
  /** The header of a Device Location registration's answer that holds its key; undefined: found by its name. */
  locationKeyHeader: string | undefined
}

/**
 * Registers `<baseUrl>/<Service>` for each service, one call each, in order; never stops half way on a refusal. A
 * Device Location service is registered with its URL only, and counts as done once its shared key is kept.
 */
export async function registerCallbacks (
  call: ThingSpaceCall,
  options: RegistrationOptions
): Promise<ServiceOutcome[]> {
  const outcomes: ServiceOutcome[] = []
  for (const service of options.services) {
    const url = `${options.baseUrl}/${service}`
    const location = isLocationService(service)
    const answer = await call(
      'POST',
      accountPath(options.accountName, service),
      location
        ? { name: service, url }
        : { name: service, url, username: options.credentials.username, password: options.credentials.password }
    )
    if (!succeeded(answer)) {
      outcomes.push(refusal(service, answer))
      continue
    }
    if (location) {
      const key = sharedKeyOf(answer, options.locationKeyHeader)
      if (typeof key !== 'string') {
        outcomes.push({
          service,
          done: false,
          status: answer.statusCode,
          errorCode: 'Proxy.NoSharedKey',
          errorMessage:
            `ThingSpace registered ${service} but no header of its answer could be taken for the shared key ` +
            `(headers: ${key.headerNames.join(', ') || 'none'}); set M2M_PROXY_CALLBACK_LOCATION_KEY_HEADER to the one that holds it ` +
            'and register again'
        })
        continue
      }
      await options.locationKeys.remember(service, key)
    }
    outcomes.push({ service, done: true, url })
  }
  return outcomes
}

export async function deregisterCallbacks (
  call: ThingSpaceCall,
  options: { accountName: string; services: readonly string[]; locationKeys: LocationKeyStore }
): Promise<ServiceOutcome[]> {
  const outcomes: ServiceOutcome[] = []
  for (const service of options.services) {
    const answer = await call('DELETE', `${accountPath(options.accountName, service)}/name/${encodeURIComponent(service)}`)
    if (succeeded(answer) && isLocationService(service)) await options.locationKeys.forget(service)
    outcomes.push(succeeded(answer) ? { service, done: true } : refusal(service, answer))
  }
  return outcomes
}

/** name and url of each entry of a list answer (a username or password ThingSpace might echo is never passed on). */
function listed (answer: ThingSpaceAnswer): Array<{ name: string; url: string }> {
  const entries = Array.isArray(answer.body) ? answer.body : []
  return entries.flatMap((entry: unknown) => {
    const { name, serviceName, url } = (typeof entry === 'object' && entry !== null ? entry : {}) as Record<string, unknown>
    const service = typeof name === 'string' ? name : serviceName
    return typeof service === 'string' ? [{ name: service, url: typeof url === 'string' ? url : '' }] : []
  })
}

/**
 * What ThingSpace has registered for the account; Device Location's list too when the proxy holds a key for one of its
 * services (an account without that API may be refused its list).
 */
export async function listCallbacks (
  call: ThingSpaceCall,
  accountName: string,
  locationKeys: LocationKeyStore
): Promise<{ callbacks: Array<{ name: string; url: string }> } | { refused: ServiceOutcome }> {
  const answer = await call('GET', accountPath(accountName))
  if (!succeeded(answer)) return { refused: refusal('list', answer) }
  const callbacks = listed(answer)
  const keyed = await Promise.all(
    LOCATION_CALLBACK_SERVICES.map(async (service) => (await locationKeys.keys(service)).length > 0)
  )
  if (!keyed.includes(true)) return { callbacks }
  const location = await call('GET', accountPath(accountName, LOCATION_CALLBACK_SERVICES[0]))
  if (!succeeded(location)) return { refused: refusal('list', location) }
  return { callbacks: [...callbacks, ...listed(location)] }
}
