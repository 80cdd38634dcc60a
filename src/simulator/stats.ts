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
    dataRequests: 0
  }
}
