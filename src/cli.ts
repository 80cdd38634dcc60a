#!/usr/bin/env node
// The operator's command line (the package's bin): m2m-session-proxy status | session start|end | password rotate |
// credentials reload | fleet | callbacks register|list|remove. Reaches the admin listener at the address and with the
// token the proxy's own settings give (environment, M2M_PROXY_CONFIG file, defaults), or as the flags say. Exit codes:
// 0 done, 1 refused or not ready, 2 usage or unreachable.

import fs from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { AdminClient, AdminUnreachableError } from './cli/admin-client.js'
import { COMMANDS, EXIT, type Command } from './cli/commands.js'
import { resolveAdminEndpoint } from './config/load.js'
import { ConfigError } from './config/errors.js'
import { messageOf } from './errors.js'
import { VERSION } from './version.js'

/** A day: beyond, a timer cannot be set (Node's limit is about 24.8 days) and nobody waits that long anyway. */
const MAX_TIMEOUT_SECONDS = 86_400

const USAGE = `usage: m2m-session-proxy <command> [--json] [--admin-url URL] [--token-file FILE] [--timeout SECONDS]

commands:
${COMMANDS.map((command) =>
  [
    `  ${command.words.join(' ').padEnd(20)}${command.summary}`,
    ...(command.operands === undefined ? [] : [`  ${''.padEnd(20)}  ${command.words.join(' ')} ${command.operands}`])
  ].join('\n')).join('\n')}

The admin address and token come from the proxy's settings (M2M_PROXY_ADMIN_HOST, M2M_PROXY_ADMIN_PORT,
M2M_PROXY_ADMIN_TOKEN or M2M_PROXY_ADMIN_TOKEN_FILE, M2M_PROXY_CONFIG), or from the flags. The token is never
taken on the command line, where other users of the machine could read it.
Exit codes: 0 done (status: ready), 1 refused or not ready, 2 usage error or no answer.`

class UsageError extends Error {}

/** The command the first words name, and the operands after them (only for a command that takes some). */
function findCommand (words: readonly string[]): { command: Command; operands: string[] } {
  const command = COMMANDS.find((candidate) =>
    candidate.words.every((word, i) => word === words[i]) &&
    (candidate.words.length === words.length || candidate.operands?.includes('SERVICE') === true))
  if (command === undefined) {
    throw new UsageError(words.length === 0 ? 'no command given' : `unknown command "${words.join(' ')}"`)
  }
  return { command, operands: words.slice(command.words.length) }
}

function readTextFile (file: string): string {
  return fs.readFileSync(file, 'utf8')
}

async function run (argv: string[]): Promise<number> {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        json: { type: 'boolean', default: false },
        'admin-url': { type: 'string' },
        'token-file': { type: 'string' },
        timeout: { type: 'string', default: '10' },
        url: { type: 'string' },
        account: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
        version: { type: 'boolean', default: false }
      }
    })
  } catch (error) {
    throw new UsageError(messageOf(error))
  }
  const { values, positionals } = parsed
  if (values.help) {
    process.stdout.write(`${USAGE}\n`)
    return EXIT.ok
  }
  if (values.version) {
    process.stdout.write(`${VERSION}\n`)
    return EXIT.ok
  }
  const { command, operands } = findCommand(positionals)
  for (const flag of ['url', 'account'] as const) {
    if (values[flag] !== undefined && command.operands?.includes(`--${flag}`) !== true) {
      throw new UsageError(`--${flag} is not an option of "${command.words.join(' ')}"`)
    }
  }
  const timeoutSeconds = Number(values.timeout)
  if (!Number.isFinite(timeoutSeconds) || timeoutSeconds <= 0 || timeoutSeconds > MAX_TIMEOUT_SECONDS) {
    throw new UsageError(
      `--timeout must be a number of seconds above 0 and at most ${MAX_TIMEOUT_SECONDS} (got ${JSON.stringify(values.timeout)})`
    )
  }
  const endpoint = resolveAdminEndpoint({ env: process.env, readTextFile, cwd: process.cwd() })
  let token: string | undefined
  const tokenFile = values['token-file']
  if (tokenFile !== undefined) {
    try {
      token = readTextFile(path.resolve(tokenFile)).trim()
    } catch (error) {
      throw new UsageError(`--token-file ${tokenFile} cannot be read (${messageOf(error)})`)
    }
  } else {
    token = endpoint.readToken()
  }
  if (command.needsToken && token === undefined) {
    throw new UsageError(
      `"${command.words.join(' ')}" needs the admin token: set M2M_PROXY_ADMIN_TOKEN or M2M_PROXY_ADMIN_TOKEN_FILE, ` +
        'or pass --token-file'
    )
  }
  const url = values['admin-url'] ?? endpoint.url
  if (/^https?:\/\/[^/]*@/.test(url)) {
    // Not echoed: the part before the @ would be a user and password.
    throw new UsageError('--admin-url must not hold a user or password: the admin token is sent as a header')
  }
  if (!/^https?:\/\/[^/]+\/?$/.test(url)) {
    throw new UsageError(`--admin-url must be an origin such as http://127.0.0.1:9090 (got ${JSON.stringify(url)})`)
  }
  const client = new AdminClient({ url: url.replace(/\/$/, ''), token, timeoutMs: timeoutSeconds * 1000 })
  const result = await command.run(client, { operands, url: values.url, account: values.account })
  const output = values.json ? JSON.stringify(result.json, null, 2) : result.text
  const stream = result.refusal === true && !values.json ? process.stderr : process.stdout
  stream.write(`${output}\n`)
  return result.exitCode
}

run(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (error: unknown) => {
    if (error instanceof UsageError) {
      process.stderr.write(`m2m-session-proxy: ${error.message}\n\n${USAGE}\n`)
    } else if (error instanceof ConfigError) {
      process.stderr.write(`m2m-session-proxy: configuration error: ${error.message}\n`)
    } else if (error instanceof AdminUnreachableError) {
      process.stderr.write(`m2m-session-proxy: ${error.message}\n`)
    } else {
      process.stderr.write(`m2m-session-proxy: ${messageOf(error)}\n`)
    }
    process.exitCode = EXIT.unusable
  }
)
