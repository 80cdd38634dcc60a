// Refuses M2M_PROXY_* environment variables that no setting reads (a misspelling would otherwise be ignored
// silently), and recognises the variables Kubernetes injects for a Service whose name starts with m2m-proxy.

import { ConfigError } from './errors.js'

const PREFIX = 'M2M_PROXY'

/**
 * Kubernetes "service links": for every Service in the namespace, each pod gets <NAME>_SERVICE_HOST,
 * <NAME>_SERVICE_PORT[_<PORT NAME>], <NAME>_PORT=tcp://ip:port and <NAME>_PORT_<n>_<PROTO>[_PROTO|_PORT|_ADDR],
 * where <NAME> is the Service name upper-cased with - as _. A Service "m2m-proxy" gives M2M_PROXY_PORT.
 */
const LINK_URL = /^(tcp|udp|sctp):\/\/[^\s/]+:\d+$/i

/** The Services (as env prefixes) whose links are present: both <NAME>_SERVICE_HOST and <NAME>_SERVICE_PORT set. */
function linkedServices (env: NodeJS.ProcessEnv): string[] {
  const prefixes: string[] = []
  for (const name of Object.keys(env)) {
    const match = /^(M2M_PROXY(?:_[A-Z0-9_]+)?)_SERVICE_HOST$/.exec(name)
    if (match?.[1] !== undefined && env[`${match[1]}_SERVICE_PORT`] !== undefined) prefixes.push(match[1])
  }
  return prefixes.sort((a, b) => b.length - a.length)
}

function isLinkName (name: string, service: string, env: NodeJS.ProcessEnv): boolean {
  if (!name.startsWith(`${service}_`)) return false
  const rest = name.slice(service.length + 1)
  if (rest === 'SERVICE_HOST' || rest === 'SERVICE_PORT' || /^SERVICE_PORT_[A-Z0-9_]+$/.test(rest)) return true
  if (/^PORT_\d+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?$/.test(rest)) return true
  return rest === 'PORT' && LINK_URL.test(env[name] ?? '')
}

function serviceName (prefix: string): string {
  return prefix.toLowerCase().replaceAll('_', '-')
}

/** Edit distance (insertions, deletions, substitutions, adjacent transpositions). */
export function editDistance (a: string, b: string): number {
  const rows = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0))
  )
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      const row = rows[i] as number[]
      const previous = rows[i - 1] as number[]
      let best = Math.min((previous[j] as number) + 1, (row[j - 1] as number) + 1, (previous[j - 1] as number) + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        best = Math.min(best, ((rows[i - 2] as number[])[j - 2] as number) + 1)
      }
      row[j] = best
    }
  }
  return (rows[a.length] as number[])[b.length] as number
}

export function closestName (name: string, known: readonly string[]): string {
  const upper = name.toUpperCase()
  let best = known[0] ?? ''
  let bestDistance = Infinity
  for (const candidate of known) {
    const distance = editDistance(upper, candidate)
    if (distance < bestDistance) {
      best = candidate
      bestDistance = distance
    }
  }
  return best
}

/**
 * Throws a ConfigError for a Kubernetes service link that collides with one of our settings (naming the
 * Service and the two fixes), else for every M2M_PROXY_* variable (any case) that is not in `known`.
 */
export function checkEnvironmentNames (env: NodeJS.ProcessEnv, known: readonly string[]): void {
  const services = linkedServices(env)
  for (const name of known) {
    const value = env[name]
    if (value === undefined || !LINK_URL.test(value.trim())) continue
    const service = services.find((prefix) => `${prefix}_PORT` === name)
    if (service === undefined) continue // not a service link: the setting's own parser says what is wrong
    const injected = Object.keys(env)
      .filter((candidate) => isLinkName(candidate, service, env))
      .sort()
    throw new ConfigError(
      name,
      `is ${JSON.stringify(value.trim())}, injected by Kubernetes for the Service "${serviceName(service)}" in this namespace ` +
        `(service links: ${injected.join(', ')}), not a port number for this proxy. Fix: set enableServiceLinks: false in the pod spec ` +
        `(as deploy/kubernetes.yaml does), or rename that Service to a name that does not start with ${serviceName(PREFIX)}`
    )
  }
  const knownSet = new Set(known)
  const unknown = Object.keys(env)
    .filter((name) => name.toUpperCase().startsWith(PREFIX) && !knownSet.has(name))
    .filter((name) => !services.some((service) => isLinkName(name, service, env)))
    .sort()
  if (unknown.length === 0) return
  const hints = unknown.map((name) => `did you mean ${closestName(name, known)}?`)
  const described =
    unknown.length === 1
      ? `unknown variable, ${hints[0] ?? ''}`
      : `unknown variables (${unknown.map((name, i) => `${name}: ${hints[i] ?? ''}`).join('; ')}).`
  throw new ConfigError(
    unknown.join(', '),
    `${described} ${PREFIX}_* variables that no setting reads are refused, so that a misspelling is not ignored; the settings are listed in docs/configuration.md`
  )
}
