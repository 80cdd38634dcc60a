// Counters the simulator keeps so tests and demos can see what a client did to it.

export interface SimulatorStats {
  /** Every request that arrived, whatever its path or outcome (unknown paths too). */
  requestsReceived: number
  /** Calls to the OAuth token endpoint, whatever the outcome. */
  tokenRequests: number
  /** Distinct access tokens minted. */
  oauthTokensIssued: number
  /** Successful logins. */
  logins: number
  /** Rejected logins, in total (wrong credentials or locked account). */
  failedLogins: number
  /** Rejected logins since the last successful one (or unlock()). */
  consecutiveFailedLogins: number
  logouts: number
  passwordResets: number
  /** Requests to non-session M2M endpoints (data and /simulator/ routes) that reached the handler. */
  dataRequests: number
  /** API requests answered 429 by the throttling mode. */
  throttledRequests: number
  /**
   * Arrival time (the simulator's clock, ms) of every API request past the bearer check, throttled or not: the last
   * 10,000.
   */
  apiRequestArrivals: number[]
  /** Arrival time of every throttled request: the last 10,000. */
  throttledArrivals: number[]
}

export function createStats (): SimulatorStats {
  return {
    requestsReceived: 0,
    tokenRequests: 0,
    oauthTokensIssued: 0,
    logins: 0,
    failedLogins: 0,
    consecutiveFailedLogins: 0,
    logouts: 0,
    passwordResets: 0,
    dataRequests: 0,
    throttledRequests: 0,
    apiRequestArrivals: new BoundedLog(10_000),
    throttledArrivals: new BoundedLog(10_000)
  }
}

/** An array that keeps only its last `limit` entries: the simulator runs for hours in soaks. */
class BoundedLog extends Array<number> {
  constructor (private readonly limit: number) {
    super()
  }

  override push (...items: number[]): number {
    const length = super.push(...items)
    if (length > this.limit) this.splice(0, length - this.limit)
    return this.length
  }
}
