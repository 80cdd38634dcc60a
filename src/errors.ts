// How an error is named in a log line or an error message: a leaf module, imported from every folder.

/** The error's system code (ENOENT, EACCES, ...) when it has one, else its message. */
export function errorCode (error: unknown): string {
  if (error instanceof Error && 'code' in error && typeof error.code === 'string') return error.code
  return messageOf(error)
}

/** The error's message, or the thrown value as text. */
export function messageOf (error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}

/**
 * Network error codes of a request that failed before any byte of it left: no connection was made (refused, no such
 * host, no route, a connect timeout, a certificate refused in the handshake). After any other failure (a reset, a
 * closed connection, an answer that broke off or never came) the server may have received the request: counted a
 * login, or carried out an activation.
 */
const NOT_SENT_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EHOSTDOWN',
  'ENETDOWN',
  'EADDRNOTAVAIL',
  'UND_ERR_CONNECT_TIMEOUT'
])

/** OpenSSL's and Node's names of a certificate refused during the handshake. */
const CERTIFICATE_REFUSAL = /CERT|SELF_SIGNED|UNABLE_TO_/

/** Whether a request that failed with `code` certainly never reached the server. */
export function failedBeforeSending (code: string): boolean {
  return NOT_SENT_CODES.has(code) || CERTIFICATE_REFUSAL.test(code)
}
