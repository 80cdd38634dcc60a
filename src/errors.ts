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
