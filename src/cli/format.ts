// What the CLI prints for a person: a few aligned lines per answer. Reads the JSON loosely: the proxy answering may be
// another version than this CLI.

import type { AdminAnswer } from './admin-client.js'

export function objectOf (value: unknown): Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : {}
}

/** "3m 20s ago" / "in 17m": how far `iso` is from now. */
export function relative (iso: unknown, now = Date.now()): string {
  if (typeof iso !== 'string') return 'never'
  const at = Date.parse(iso)
  if (Number.isNaN(at)) return 'unknown'
  const seconds = Math.round((at - now) / 1000)
  if (seconds === 0) return 'just now'
  const span = duration(Math.abs(seconds))
  return seconds > 0 ? `in ${span}` : `${span} ago`
}

export function duration (seconds: number): string {
  if (seconds < 60) return `${seconds}s`
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${seconds % 60}s`
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ${Math.floor((seconds % 3600) / 60)}m`
  return `${Math.floor(seconds / 86400)}d ${Math.floor((seconds % 86400) / 3600)}h`
}

function row (label: string, value: string): string {
  return `${`${label}:`.padEnd(10)}${value}`
}

export function describeSession (snapshot: Record<string, unknown>): string {
  const lines = [
    row(
      'session',
      snapshot.state === 'active'
        ? `active, logged in ${relative(snapshot.loggedInAt)}, idle expiry ${relative(snapshot.idleExpiresAt)}`
        : String(snapshot.state ?? 'unknown')
    ),
    row(
      'logins',
      `${String(snapshot.logins ?? 0)} (renewals ${String(snapshot.renewals ?? 0)}), failed in a row ` +
        `${String(snapshot.consecutiveLoginFailures ?? 0)} of ${String(snapshot.maxLoginFailures ?? '?')} allowed`
    )
  ]
  const password = objectOf(snapshot.password)
  if (Object.keys(password).length > 0) {
    const parts = [
      password.changedAt === null ? 'age unknown' : `changed ${relative(password.changedAt)}`,
      typeof password.generation === 'number' ? `generation ${password.generation}` : undefined,
      password.savedToFile === false ? 'NOT saved to the credentials file' : undefined,
      password.published === false ? 'NOT published to the fleet' : undefined,
      password.rotationDueAt === null || password.rotationDueAt === undefined
        ? 'scheduled rotation off'
        : `rotation due ${relative(password.rotationDueAt)}`
    ]
    lines.push(row('password', parts.filter((part) => part !== undefined).join(', ')))
  }
  const fleet = objectOf(snapshot.fleet)
  if (snapshot.fleetMode === true) {
    lines.push(
      row('fleet', fleet.storeConnected === true ? 'store connected' : 'store NOT connected (see the proxy log)')
    )
  }
  return lines.join('\n')
}

export function describeFleet (view: Record<string, unknown>): string {
  if (view.mode !== 'fleet') return 'single-process mode: no fleet (M2M_PROXY_REDIS_URL is not set)'
  const replicas = Array.isArray(view.replicas) ? view.replicas.map(objectOf) : []
  const header = ['REPLICA', 'HOST', 'STATE', 'READY', 'GEN', 'LAST LOGIN', 'LAST SEEN', '']
  const rows = replicas.map((replica) => [
    String(replica.id ?? '?'),
    String(replica.host ?? '?'),
    String(replica.state ?? '?'),
    replica.ready === true ? 'yes' : `no: ${String(replica.notReadyReason ?? '?')}`,
    replica.generation === null || replica.generation === undefined ? '-' : String(replica.generation),
    relative(replica.loggedInAt),
    relative(replica.lastSeenAt),
    [
      replica.self === true ? '(this one)' : '',
      replica.id === view.lockHolder ? 'holds the login lock' : '',
      replica.stale === true ? 'STALE' : ''
    ]
      .filter((mark) => mark !== '')
      .join(', ')
  ])
  const widths = header.map((_, column) => Math.max(...[header, ...rows].map((cells) => (cells[column] ?? '').length)))
  const table = [header, ...rows].map((cells) =>
    cells
      .map((cell, column) => cell.padEnd(widths[column] ?? 0))
      .join('  ')
      .trimEnd())
  const notes = [
    `${replicas.length} replica(s); password generation ${String(view.generation ?? 'unknown')}; login lock ` +
      (typeof view.lockHolder === 'string' ? `held by ${view.lockHolder}` : 'free'),
    typeof view.unreadable === 'number' && view.unreadable > 0
      ? `${view.unreadable} heartbeat(s) could not be opened: a replica with another M2M_PROXY_FLEET_KEY?`
      : undefined
  ]
  return [...table, ...notes.filter((note) => note !== undefined)].join('\n')
}

/** After POST or DELETE /admin/callbacks: one line per service. */
export function describeServiceOutcomes (done: 'registered' | 'removed', body: Record<string, unknown>): string {
  const services = Array.isArray(body.services) ? body.services.map(objectOf) : []
  return services
    .map((outcome) =>
      `${String(outcome.service)}: ${done}` +
        (typeof outcome.url === 'string' ? ` at ${outcome.url}` : '') +
        ` (account ${String(body.accountName)})`)
    .join('\n')
}

/** GET /admin/callbacks: what ThingSpace has for the account. */
export function describeCallbacks (body: Record<string, unknown>): string {
  const callbacks = Array.isArray(body.callbacks) ? body.callbacks.map(objectOf) : []
  if (callbacks.length === 0) return `no callback listener registered for account ${String(body.accountName)}`
  return callbacks.map((entry) => `${String(entry.name).padEnd(28)}${String(entry.url)}`).join('\n')
}

/** One line for a refusal: the proxy's own errorCode and errorMessage when it sent them. */
export function errorLine (answer: AdminAnswer): string {
  const body = objectOf(answer.body)
  if (typeof body.errorCode === 'string') {
    return `refused (HTTP ${answer.status} ${body.errorCode}): ${String(body.errorMessage ?? '')}`
  }
  return `refused (HTTP ${answer.status})`
}
