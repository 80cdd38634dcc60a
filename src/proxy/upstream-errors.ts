// Reads an upstream error answer to decide whether it is an expired token the proxy should renew and replay.

import type { RenewalReason } from '../session/session-manager.js'

export interface TokenRejection {
  cause: 'session' | 'oauth'
  reason: RenewalReason
}

/** Only client-error answers can carry a token rejection; others stream through untouched. */
export function mayBeTokenRejection (statusCode: number): boolean {
  return statusCode >= 400 && statusCode < 500
}

/**
 * ThingSpace signals an expired or unknown session with an errorCode containing `.SessionToken.`
 * (status 400 expected but not relied on), and a bad bearer with a gateway fault 900901 on 401.
 */
export function tokenRejectionOf (statusCode: number, body: Buffer): TokenRejection | undefined {
  let parsed: unknown
  try {
    parsed = JSON.parse(body.toString('utf8'))
  } catch {
    return undefined
  }
  if (typeof parsed !== 'object' || parsed === null) return undefined
  const record = parsed as { errorCode?: unknown, fault?: { code?: unknown } }
  if (typeof record.errorCode === 'string' && record.errorCode.includes('.SessionToken.')) {
    return { cause: 'session', reason: record.errorCode.includes('.SessionToken.Expired') ? 'expired' : 'invalid' }
  }
  if (statusCode === 401 && String(record.fault?.code) === '900901') {
    return { cause: 'oauth', reason: 'expired' }
  }
  return undefined
}
