// Registering the inbox with ThingSpace (POST /admin/callbacks): each service's URL under the public base URL, with the
// username and password the listener checks, through ThingSpace's own callback API and the proxy's own session. The
// ThingSpace call is a port: app.ts sends it through the proxy listener, so tokens, renewal and throttling apply.

import type { CallbackCredentials } from '../config/load.js'

export interface ThingSpaceAnswer {
  statusCode: number
  body: unknown
}

/** One call to ThingSpace's API through the proxy (path under /api/, JSON body). */
export type ThingSpaceCall = (method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown) => Promise<ThingSpaceAnswer>

export type ServiceOutcome =
  | { service: string; done: true; url?: string }
  | { service: string; done: false; status: number; errorCode: string; errorMessage: string }

const CALLBACKS_PATH = '/api/m2m/v1/callbacks'

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

export function accountPath (accountName: string): string {
  return `${CALLBACKS_PATH}/${encodeURIComponent(accountName)}`
}

/** Registers `<baseUrl>/<Service>` for each service, one call each, in order; never stops half way on a refusal. */
export async function registerCallbacks (
  call: ThingSpaceCall,
  options: { accountName: string; baseUrl: string; services: readonly string[]; credentials: CallbackCredentials }
): Promise<ServiceOutcome[]> {
  const outcomes: ServiceOutcome[] = []
  for (const service of options.services) {
    const url = `${options.baseUrl}/${service}`
    const answer = await call('POST', accountPath(options.accountName), {
      name: service,
      url,
      username: options.credentials.username,
      password: options.credentials.password
    })
    outcomes.push(succeeded(answer) ? { service, done: true, url } : refusal(service, answer))
  }
  return outcomes
}

export async function deregisterCallbacks (
  call: ThingSpaceCall,
  options: { accountName: string; services: readonly string[] }
): Promise<ServiceOutcome[]> {
  const outcomes: ServiceOutcome[] = []
  for (const service of options.services) {
    const answer = await call('DELETE', `${accountPath(options.accountName)}/name/${encodeURIComponent(service)}`)
    outcomes.push(succeeded(answer) ? { service, done: true } : refusal(service, answer))
  }
  return outcomes
}

/**
 * What ThingSpace has registered for the account: name and URL only (a username or password it might echo is never
 * passed on).
 */
export async function listCallbacks (
  call: ThingSpaceCall,
  accountName: string
): Promise<{ callbacks: Array<{ name: string; url: string }> } | { refused: ServiceOutcome }> {
  const answer = await call('GET', accountPath(accountName))
  if (!succeeded(answer)) return { refused: refusal('list', answer) }
  const entries = Array.isArray(answer.body) ? answer.body : []
  return {
    callbacks: entries.flatMap((entry: unknown) => {
      const { name, url } = (typeof entry === 'object' && entry !== null ? entry : {}) as Record<string, unknown>
      return typeof name === 'string' ? [{ name, url: typeof url === 'string' ? url : '' }] : []
    })
  }
}
