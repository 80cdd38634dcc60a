// Request ids: a client's X-Request-Id is kept when it is sane, otherwise one is made.

import { randomUUID } from 'node:crypto'

export const REQUEST_ID_HEADER = 'x-request-id'
// Printable, no spaces or quotes: safe in a header, a log line and a metric-free context.
const SANE_REQUEST_ID = /^[A-Za-z0-9._:@/+=-]{1,128}$/

export function requestIdFrom (header: string | string[] | undefined): string {
  return typeof header === 'string' && SANE_REQUEST_ID.test(header) ? header : randomUUID()
}
