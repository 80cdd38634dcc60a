// What both listeners share of their Fastify options: the logger, request ids, timeouts and malformed-request answers.

import { LogController, type FastifyBaseLogger } from 'fastify'
import type { Logger } from 'pino'
import type { ProxyConfig } from '../config/load.js'
import { lazyRequestLogger } from '../logging.js'
import { REQUEST_ID_HEADER, requestIdFrom } from '../proxy/request-id.js'
import { answerClientError, listenerTimeouts } from './hardening.js'

/** `log`: the listener's logger (a child of the process's, with its `listener` name). */
export function listenerOptions (config: ProxyConfig, log: Logger) {
  return {
    loggerInstance: log as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }), // the proxy writes one line per request itself
    childLoggerFactory: lazyRequestLogger,
    genReqId: (request: { headers: Record<string, string | string[] | undefined> }) =>
      requestIdFrom(request.headers[REQUEST_ID_HEADER]),
    requestIdHeader: false as const,
    ...listenerTimeouts(config.requestTimeoutMs, config.idleConnectionTimeoutMs),
    clientErrorHandler: answerClientError
  }
}
