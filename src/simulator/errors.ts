// ThingSpace's two error shapes: the API gateway's OAuth faults and the M2M services' errorCode/errorMessage.

/** Body of an M2M (UnifiedWebService) error, as the SDKs' ConnectivityManagementResultException reads it. */
export interface UwsError {
  errorCode: string
  errorMessage: string
}

/** Body of an API gateway rejection of the OAuth bearer. */
export interface GatewayFault {
  fault: { code: string; message: string; description: string }
}

/** Body of an OAuth token endpoint rejection (RFC 6749 section 5.2). */
export interface OAuthError {
  error: string
  error_description: string
}

export const UWS_ERROR_CODES = {
  invalidCredentials: 'UnifiedWebService.REQUEST_FAILED.InvalidCredentials',
  accountLocked: 'UnifiedWebService.REQUEST_FAILED.AccountLocked',
  invalidPassword: 'UnifiedWebService.REQUEST_FAILED.InvalidPassword',
  sessionExpired: 'UnifiedWebService.REQUEST_FAILED.SessionToken.Expired',
  sessionInvalid: 'UnifiedWebService.INPUT_INVALID.SessionToken.Invalid',
  notFound: 'UnifiedWebService.REQUEST_FAILED.NotFound',
  accountNotFound: 'UnifiedWebService.REQUEST_FAILED.AccountNotFound',
  badRequest: 'UnifiedWebService.INPUT_INVALID.BadRequest',
  requestTooLarge: 'UnifiedWebService.INPUT_INVALID.RequestTooLarge',
  unsupportedMediaType: 'UnifiedWebService.INPUT_INVALID.UnsupportedMediaType',
  internalError: 'UnifiedWebService.INTERNAL_ERROR',
  /** Not documented by Verizon (limits are per contract): the simulator's name for its 429. */
  tooManyRequests: 'UnifiedWebService.REQUEST_FAILED.TooManyRequests',
  /** Only for an injected 4xx login answer: the simulator's own code, so nobody mistakes it for a documented one. */
  simulatedFault: 'UnifiedWebService.REQUEST_FAILED.SimulatedFault'
} as const

/**
 * Body of a Hyper Precise Location error (the SDK's HyperPreciseLocationResultError):
 * `responseCode` is one of INVALID_ACCESS, INVALID_PARAMETER, INTERNAL_ERROR.
 */
export interface HyperPreciseError {
  responseCode: 'INVALID_ACCESS' | 'INVALID_PARAMETER' | 'INTERNAL_ERROR'
  message: string
}

/** Body of a Cloud Connector error (no SDK model; the shape of Verizon's Cloud Connector error examples). */
export interface CloudConnectorError {
  error: string
  error_description: string
  cause: string
}

export const GATEWAY_FAULT_CODES = {
  invalidCredentials: '900901',
  missingCredentials: '900902'
} as const

export function uwsError (errorCode: string, errorMessage: string): UwsError {
  return { errorCode, errorMessage }
}

export function missingCredentialsFault (): GatewayFault {
  return {
    fault: {
      code: GATEWAY_FAULT_CODES.missingCredentials,
      message: 'Missing Credentials',
      description: 'Invalid Credentials. Make sure your API invocation call has a header: "Authorization: Bearer ACCESS_TOKEN"'
    }
  }
}

export function invalidCredentialsFault (): GatewayFault {
  return {
    fault: {
      code: GATEWAY_FAULT_CODES.invalidCredentials,
      message: 'Invalid Credentials',
      description: 'Access failure for API: /api/m2m, version: v1 status: (900901) - Invalid Credentials. Make sure you have provided the correct security credentials'
    }
  }
}
