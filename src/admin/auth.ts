// Bearer-token check of the admin routes, in constant time.

import { createHash, timingSafeEqual } from 'node:crypto'

const digest = (value: string): Buffer => createHash('sha256').update(value).digest()

export type AdminAuthResult = 'ok' | 'disabled' | 'missing' | 'wrong'

/** Comparing digests keeps the time independent of where the strings differ and of their lengths. */
export function checkAdminAuthorization (header: string | undefined, adminToken: string | undefined): AdminAuthResult {
  if (adminToken === undefined) return 'disabled'
  const match = header === undefined ? null : /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header)
  if (match === null) return 'missing'
  return timingSafeEqual(digest(match[1] ?? ''), digest(adminToken)) ? 'ok' : 'wrong'
}
