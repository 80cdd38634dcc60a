// The stored secrets: read and validate the credentials file. Values never appear in an error message.

import fs from 'node:fs'
import { ConfigError } from '../config/errors.js'
import { errorCode } from '../errors.js'

export interface Credentials {
  /** UWS user name of the ThingSpace account. */
  username: string
  password: string
  /** ThingSpace app key and secret for the OAuth client-credentials grant. */
  clientId: string
  clientSecret: string
}

export const CREDENTIAL_FIELDS = ['username', 'password', 'clientId', 'clientSecret'] as const

const SETTING = 'M2M_PROXY_CREDENTIALS_FILE'

/** The text without a leading byte order mark, which Windows editors write and JSON.parse refuses. */
export function withoutBom (text: string): string {
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text
}

/** Validates parsed JSON; `source` names the file in messages. */
export function parseCredentials (json: string, source: string): Credentials {
  let parsed: unknown
  try {
    parsed = JSON.parse(withoutBom(json))
  } catch {
    // The parser's message can quote the file's content, which is secret: keep it out.
    throw new ConfigError(SETTING, `${source} is not valid JSON`)
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError(SETTING, `${source} must hold a JSON object {"username","password","clientId","clientSecret"}`)
  }
  const record = parsed as Record<string, unknown>
  for (const field of CREDENTIAL_FIELDS) {
    const value = record[field]
    if (typeof value !== 'string' || value.trim() === '') {
      throw new ConfigError(SETTING, `${source} is missing "${field}" (a non-empty string)`)
    }
  }
  return {
    username: record.username as string,
    password: record.password as string,
    clientId: record.clientId as string,
    clientSecret: record.clientSecret as string
  }
}

/**
 * A warning naming the fields (never their values) that begin or end with white space, undefined when none do: they are
 * sent as written, and a copied value often brings a space or a line break along, which costs a failed login.
 */
export function credentialsWhitespace (credentials: Credentials, source: string): string | undefined {
  const padded = CREDENTIAL_FIELDS.filter((field) => credentials[field] !== credentials[field].trim())
  if (padded.length === 0) return undefined
  return (
    `${padded.join(' and ')} in ${source} ${padded.length === 1 ? 'begins or ends' : 'begin or end'} with white space, ` +
    'which is sent to ThingSpace as part of it: remove it unless it belongs there'
  )
}

export function loadCredentials (file: string): Credentials {
  let json: string
  try {
    json = fs.readFileSync(file, 'utf8')
  } catch (error) {
    const code = errorCode(error)
    const hint = code === 'ENOENT' ? 'does not exist' : code === 'EACCES' ? 'is not readable by this user' : `cannot be read (${code})`
    throw new ConfigError(SETTING, `${file} ${hint}`)
  }
  return parseCredentials(json, file)
}
