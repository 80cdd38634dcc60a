// The CLI's commands: each calls the admin API and says what came back, for a person (text) and for a script (the
// exit code, and the JSON with --json).

import { AdminClient, type AdminAnswer } from './admin-client.js'
import { describeCallbacks, describeFleet, describeServiceOutcomes, describeSession, errorLine, objectOf } from './format.js'

/** 0: done (status: ready); 1: the proxy answered but refused (or is not ready); 2: usage, unreachable. */
export const EXIT = { ok: 0, refused: 1, unusable: 2 } as const

export interface CommandResult {
  exitCode: number
  /** What --json prints. */
  json: unknown
  /** What a person reads. */
  text: string
  /** The text is a refusal: written to stderr. */
  refusal?: boolean
}

/** What follows a command's words: operands (service names) and the flags some commands take. */
export interface CommandArgs {
  operands: readonly string[]
  url?: string
  account?: string
}

export interface Command {
  /** How it is typed, e.g. "session end". */
  words: readonly string[]
  /** What may follow the words, for the usage text; none: nothing may. */
  operands?: string
  summary: string
  /** Whether the admin token is needed (status works without one, with less to say). */
  needsToken: boolean
  run: (client: AdminClient, args: CommandArgs) => Promise<CommandResult>
}

/** The fields of a /admin/callbacks body that were given. */
function callbackFields (args: CommandArgs, withUrl: boolean): Record<string, unknown> {
  return {
    ...(args.operands.length === 0 ? {} : { services: args.operands }),
    ...(args.account === undefined ? {} : { accountName: args.account }),
    ...(withUrl && args.url !== undefined ? { url: args.url } : {})
  }
}

function refusedOrOk (answer: AdminAnswer, describe: (body: Record<string, unknown>) => string): CommandResult {
  if (answer.status >= 400) return { exitCode: EXIT.refused, json: answer.body, text: errorLine(answer), refusal: true }
  return { exitCode: EXIT.ok, json: answer.body, text: describe(objectOf(answer.body)) }
}

async function status (client: AdminClient): Promise<CommandResult> {
  const ready = await client.request('GET', '/readyz')
  const readiness = objectOf(ready.body)
  if (ready.status !== 200 && ready.status !== 503) {
    return { exitCode: EXIT.refused, json: ready.body, text: errorLine(ready), refusal: true }
  }
  const lines = [
    `m2m-session-proxy at ${client.url}`,
    readiness.ready === true
      ? 'ready:    yes'
      : `ready:    no (${String(readiness.reason ?? 'unknown reason')})`
  ]
  let session: unknown = null
  if (!client.hasToken) {
    lines.push('session:  set M2M_PROXY_ADMIN_TOKEN or M2M_PROXY_ADMIN_TOKEN_FILE (or --token-file) to see more')
  } else {
    const answer = await client.request('GET', '/admin/session')
    if (answer.status >= 400) {
      return {
        exitCode: EXIT.refused,
        json: { readiness, session: answer.body },
        text: errorLine(answer),
        refusal: true
      }
    }
    session = answer.body
    lines.push(describeSession(objectOf(session)))
  }
  return {
    exitCode: readiness.ready === true ? EXIT.ok : EXIT.refused,
    json: { readiness, session },
    text: lines.join('\n')
  }
}

export const COMMANDS: readonly Command[] = [
  {
    words: ['status'],
    summary: 'readiness, the session and the password (exit 0 when ready, 1 when not)',
    needsToken: false,
    run: status
  },
  {
    words: ['session', 'start'],
    summary: 'log in now, replacing the session in use',
    needsToken: true,
    run: async (client) =>
      refusedOrOk(await client.request('POST', '/admin/session/start'), (body) => describeSession(body))
  },
  {
    words: ['session', 'end'],
    summary: 'log out of ThingSpace; the next request logs in again',
    needsToken: true,
    run: async (client) =>
      refusedOrOk(await client.request('POST', '/admin/session/end'), (body) =>
        body.ended === true ? 'session ended (logged out of ThingSpace)' : 'no session was open')
  },
  {
    words: ['password', 'rotate'],
    summary: 'set a new random password at ThingSpace and save it to the credentials file',
    needsToken: true,
    run: async (client) =>
      refusedOrOk(await client.request('POST', '/admin/password/rotate'), (body) =>
        [
          `password rotated at ${String(body.at)}`,
          body.verified === true ? 'a login with it succeeded' : 'not verified by a login yet',
          typeof body.generation === 'number' ? `fleet generation ${body.generation}` : undefined
        ]
          .filter((part) => part !== undefined)
          .join('; '))
  },
  {
    words: ['credentials', 'reload'],
    summary: 'read the credentials file again and log in with it',
    needsToken: true,
    run: async (client) =>
      refusedOrOk(await client.request('POST', '/admin/credentials/reload'), (body) =>
        `credentials file read again\n${describeSession(body)}`)
  },
  {
    words: ['fleet'],
    summary: 'every replica of the fleet, the login lock holder and who is stale',
    needsToken: true,
    run: async (client) => refusedOrOk(await client.request('GET', '/admin/fleet'), describeFleet)
  },
  {
    words: ['callbacks', 'register'],
    operands: '[SERVICE...] [--url URL] [--account NAME]',
    summary: 'register the callback inbox with ThingSpace (default CarrierService)',
    needsToken: true,
    run: async (client, args) =>
      refusedOrOk(await client.request('POST', '/admin/callbacks', callbackFields(args, true)), (body) =>
        describeServiceOutcomes('registered', body))
  },
  {
    words: ['callbacks', 'list'],
    operands: '[--account NAME]',
    summary: 'the callback listeners ThingSpace has for the account',
    needsToken: true,
    run: async (client, args) => {
      const query = args.account === undefined ? '' : `?accountName=${encodeURIComponent(args.account)}`
      return refusedOrOk(await client.request('GET', `/admin/callbacks${query}`), describeCallbacks)
    }
  },
  {
    words: ['callbacks', 'remove'],
    operands: '[SERVICE...] [--account NAME]',
    summary: 'remove callback listeners from ThingSpace (default CarrierService)',
    needsToken: true,
    run: async (client, args) =>
      refusedOrOk(await client.request('DELETE', '/admin/callbacks', callbackFields(args, false)), (body) =>
        describeServiceOutcomes('removed', body))
  }
]
