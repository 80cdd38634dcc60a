// A few representative endpoints of each ThingSpace API family besides /api/m2m/v1, with the answer
// shapes of Verizon's SDK models and each family's own error body. The caller has checked both tokens.
import { randomUUID } from 'node:crypto'
import type { FastifyInstance, FastifyReply } from 'fastify'
import { type CloudConnectorError, type HyperPreciseError, UWS_ERROR_CODES, type UwsError, uwsError } from './errors.js'
import { accountInfo, devicePage, verizonDate } from './fake-data.js'
import { isRecord, stringField } from './request-input.js'

export interface FamilyRouteOptions {
  /** Account names the simulator knows; any other answers the family's "unknown account" error. */
  accounts: ReadonlySet<string>
}

/** Every API family's path prefix: the gateway wants the OAuth bearer, the services a VZ-M2M-Token. */
export const API_FAMILY_PREFIXES = [
  '/api/m2m/',
  '/api/v1/',
  '/api/loc/v1/',
  '/api/subsc/v1/',
  '/api/fota/v1/',
  '/api/fota/v2/',
  '/api/fota/v3/',
  '/api/diagnostics/v1/',
  '/api/cc/v1/',
  '/api/hyper-precise/v1/'
] as const

const MAX_REMEMBERED_REQUESTS = 10_000
const SUBSCRIBED_AT_MS = Date.UTC(2024, 2, 1, 14, 5, 9)
const UPDATED_AT_MS = Date.UTC(2025, 4, 20, 9, 41, 17)

/**
 * The `errorCode`/`errorMessage` body that Device Location, Subscription Server, Software Management and Diagnostics
 * share.
 */
function familyError (errorCode: string, errorMessage: string): UwsError {
  return { errorCode, errorMessage }
}

/** Deterministic UUID-shaped identifier from a seed, so the same question gets the same answer. */
function seededId (seed: string): string {
  const hex = Buffer.from(seed).toString('hex').padEnd(32, '0').slice(-32)
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`
}

function imeisOf (accountName: string, count: number): string[] {
  return devicePage(accountName, count, 0n).devices.map((device) => device.deviceIds[0]?.id ?? '')
}

async function thingspaceRoutes (scope: FastifyInstance, { accounts }: FamilyRouteOptions): Promise<void> {
  const requests = new Set<string>()
  const unknownAccount = (reply: FastifyReply, accountName: string): FastifyReply =>
    reply.code(400).send(uwsError(UWS_ERROR_CODES.accountNotFound, `Account ${accountName} was not found`))

  // AccountDetails: carriers and features as objects, service plans without pools.
  const accountDetails = (accountName: string): Record<string, unknown> => {
    const account = accountInfo(accountName)
    return {
      accountName,
      accountNumber: account.accountNumber,
      organizationName: account.organizationName,
      isProvisioningAllowed: account.isProvisioningAllowed,
      carriers: account.carriers.map((carriers) => ({ carriers })),
      features: account.features.map((features) => ({ features })),
      servicePlans: account.servicePlans.map(({ name, code, sizeKb, carrierServicePlanCode }) => ({
        name,
        code,
        sizeKb: String(sizeKb),
        carrierServicePlanCode
      }))
    }
  }
  for (const path of ['/api/v1/accounts/:accountName', '/api/v1/plans/:accountName']) {
    scope.get<{ Params: { accountName: string } }>(path, async (request, reply) => {
      const { accountName } = request.params
      return accounts.has(accountName) ? accountDetails(accountName) : unknownAccount(reply, accountName)
    })
  }

  // The global device list answers a request id at once and reports by callback; its status can be read.
  scope.post<{ Body: unknown }>('/api/m2m/v2/devices/actions/list', async (request, reply) => {
    const accountName = stringField(request.body, 'accountName')
    if (accountName === undefined) {
      return reply.code(400).send(uwsError(UWS_ERROR_CODES.badRequest, 'accountName (a string) is required'))
    }
    if (!accounts.has(accountName)) return unknownAccount(reply, accountName)
    if (requests.size >= MAX_REMEMBERED_REQUESTS) requests.clear()
    const requestId = randomUUID()
    requests.add(`${accountName}/${requestId}`)
    return { requestId }
  })

  scope.get<{ Params: { accountName: string; requestId: string } }>(
    '/api/m2m/v2/accounts/:accountName/requests/:requestId/status',
    async (request, reply) => {
      const { accountName, requestId } = request.params
      if (!accounts.has(accountName)) return unknownAccount(reply, accountName)
      if (!requests.has(`${accountName}/${requestId}`)) {
        return reply
          .code(400)
          .send(uwsError(UWS_ERROR_CODES.badRequest, `No request ${requestId} for account ${accountName}`))
      }
      return {
        requestId,
        status: 'Success',
        subrequests: imeisOf(accountName, 2).map((id) => ({ ids: { kind: 'imei', id }, status: 'Success' }))
      }
    }
  )
}

async function deviceLocationRoutes (scope: FastifyInstance, { accounts }: FamilyRouteOptions): Promise<void> {
  const prefix = '/api/loc/v1'
  const invalidAccount = (reply: FastifyReply, accountName: string): FastifyReply =>
    reply
      .code(400)
      .send(familyError('INVALID_ACCOUNT', `Account ${accountName} is not registered for location services`))

  scope.get<{ Params: { accountName: string } }>(`${prefix}/subscriptions/:accountName`, async (request, reply) => {
    const { accountName } = request.params
    if (!accounts.has(accountName)) return invalidAccount(reply, accountName)
    return {
      accountName,
      locType: 'TS-LOC-COARSE-CellID-5K',
      maxAllowance: '5000',
      purchaseTime: '2024-03-01 14:05:09.171 +0000 UTC'
    }
  })

  scope.post<{ Body: unknown }>(`${prefix}/locations`, async (request, reply) => {
    const body = request.body
    const accountName = stringField(body, 'accountName')
    const deviceList = isRecord(body) ? body.deviceList : undefined
    if (accountName === undefined || !Array.isArray(deviceList) || deviceList.length === 0) {
      return reply.code(400).send(familyError('INVALID_REQUEST', 'accountName and a non-empty deviceList are required'))
    }
    if (!accounts.has(accountName)) return invalidAccount(reply, accountName)
    return locationsOf(deviceList)
  })
  // Its callbacks (register, list, remove) and the asynchronous POST /devicelocations: callbacks.ts.
}

/** A made-up but stable location per device (the SDK's Location model), for the synchronous and callback answers. */
export function locationsOf (deviceList: unknown[]): Array<Record<string, unknown>> {
  return deviceList.map((device: unknown, index) => {
    const msid = stringField(device, 'mdn') ?? stringField(device, 'id') ?? String(index)
    const seed = Number.parseInt(Buffer.from(msid).toString('hex').slice(-6), 16) || index
    return {
      msid,
      pd: {
        time: '20250601120000',
        x: (40.7128 + (seed % 1000) / 10_000).toFixed(5),
        y: (-74.006 - (seed % 700) / 10_000).toFixed(5),
        radius: String(500 + (seed % 5000)),
        qos: false,
        utcoffset: '-0400'
      }
    }
  })
}

async function subscriptionServerRoutes (scope: FastifyInstance, { accounts }: FamilyRouteOptions): Promise<void> {
  const prefix = '/api/subsc/v1'
  const invalidAccount = (reply: FastifyReply, accountName: string): FastifyReply =>
    reply.code(400).send(familyError('INVALID_ACCOUNT', `Account ${accountName} was not found`))

  scope.get<{ Params: { accountName: string; serviceName: string } }>(
    `${prefix}/managedaccounts/:accountName/service/:serviceName`,
    async (request, reply) => {
      const { accountName } = request.params
      if (!accounts.has(accountName)) return invalidAccount(reply, accountName)
      return { accountName, ManagedAccAddedList: [], managedAccProvisionedList: [] }
    }
  )

  scope.post<{ Body: unknown }>(`${prefix}/usage/triggers`, async (request, reply) => {
    const body = request.body
    const accountName = stringField(body, 'accountName')
    const triggerName = stringField(body, 'triggerName')
    const thresholdValue = stringField(body, 'thresholdValue')
    if (accountName === undefined || triggerName === undefined || thresholdValue === undefined) {
      return reply
        .code(400)
        .send(familyError('INVALID_REQUEST', 'accountName, triggerName and thresholdValue (strings) are required'))
    }
    if (!accounts.has(accountName)) return invalidAccount(reply, accountName)
    const record = isRecord(body) ? body : {}
    const today = verizonDate(UPDATED_AT_MS).slice(0, 10)
    return {
      triggerId: randomUUID(),
      triggerName,
      accountName,
      serviceName: stringField(body, 'serviceName') ?? 'Location',
      thresholdValue,
      allowExcess: record.allowExcess === true,
      sendSmsNotification: record.sendSmsNotification === true,
      smsPhoneNumbers: stringField(body, 'smsPhoneNumbers') ?? '',
      sendEmailNotification: record.sendEmailNotification === true,
      emailAddresses: stringField(body, 'emailAddresses') ?? '',
      createDate: today,
      updateDate: today
    }
  })
}

async function softwareManagementRoutes (scope: FastifyInstance, { accounts }: FamilyRouteOptions): Promise<void> {
  const invalidAccount = (reply: FastifyReply, account: string): FastifyReply =>
    reply.code(400).send(familyError('INVALID_ACCOUNT', `Account ${account} has no software management subscription`))
  const subscription = (accountName: string, updateTime: string): Record<string, unknown> => ({
    accountName,
    purchaseType: 'TS-HFOTA-EVNT,TS-HFOTA-MRC',
    licenseCount: 500,
    licenseUsedCount: 25,
    updateTime
  })

  for (const version of ['v1', 'v2', 'v3'] as const) {
    scope.get<{ Params: { account: string } }>(
      `/api/fota/${version}/subscriptions/:account`,
      async (request, reply) => {
        const { account } = request.params
        if (!accounts.has(account)) return invalidAccount(reply, account)
        // v2 writes its times as Go does, v1 and v3 as ISO instants (the SDK's examples).
        return subscription(
          account,
          version === 'v2' ? '2025-05-20 09:41:17.079 +0000 UTC' : new Date(UPDATED_AT_MS).toISOString()
        )
      }
    )
  }

  scope.get<{ Params: { account: string } }>('/api/fota/v1/firmware/:account', async (request, reply) => {
    const { account } = request.params
    if (!accounts.has(account)) return invalidAccount(reply, account)
    return [
      {
        firmwareName: 'FOTA_Simulated_Model-A_01To02_HF',
        participantName: account,
        launchDate: new Date(SUBSCRIBED_AT_MS).toISOString(),
        releaseNote: '',
        model: 'Model-A',
        make: 'Simulated',
        fromVersion: 'SimulatedFirmwareVersion-01',
        toVersion: 'SimulatedFirmwareVersion-02'
      }
    ]
  })

  scope.get<{ Params: { account: string } }>('/api/fota/v2/software/:account', async (request, reply) => {
    const { account } = request.params
    if (!accounts.has(account)) return invalidAccount(reply, account)
    return [
      {
        softwareName: 'FOTA_Simulated_Model-A_02To03_HF',
        launchDate: '2025-03-01',
        releaseNote: '',
        model: 'Model-A',
        make: 'Simulated',
        distributionType: 'HTTP',
        devicePlatformId: 'IoT'
      }
    ]
  })

  scope.get<{ Params: { acc: string } }>('/api/fota/v3/firmware/:acc', async (request, reply) => {
    const { acc } = request.params
    if (!accounts.has(acc)) return invalidAccount(reply, acc)
    return [
      {
        firmwareName: 'Simulated_Model-B_SIM01A01_SIM01A02',
        firmwareFrom: 'SIM01A01',
        firmwareTo: 'SIM01A02',
        launchDate: new Date(SUBSCRIBED_AT_MS).toISOString(),
        releaseNote: '',
        model: 'Model-B',
        make: 'Simulated',
        protocol: 'LWM2M'
      }
    ]
  })
}

async function diagnosticsRoutes (scope: FastifyInstance, { accounts }: FamilyRouteOptions): Promise<void> {
  const prefix = '/api/diagnostics/v1'
  const accountOf = (query: unknown, reply: FastifyReply): string | undefined => {
    const accountName = stringField(query, 'accountName')
    if (accountName === undefined || !accounts.has(accountName)) {
      reply
        .code(400)
        .send(
          familyError(
            'INVALID_PARAMETER',
            accountName === undefined
              ? 'The accountName query parameter is required'
              : `Unknown accountName ${accountName}`
          )
        )
      return undefined
    }
    return accountName
  }

  scope.get(`${prefix}/subscriptions`, async (request, reply) => {
    const accountName = accountOf(request.query, reply)
    if (accountName === undefined) return reply
    return {
      accountName,
      skuName: 'TS-BUNDLE-KTO-DIAGNOSTIC-MRC',
      totalAllowed: 100,
      totalUsed: 7,
      createdOn: new Date(SUBSCRIBED_AT_MS).toISOString(),
      lastUpdated: new Date(UPDATED_AT_MS).toISOString()
    }
  })

  scope.get(`${prefix}/callbacks`, async (request, reply) => {
    const accountName = accountOf(request.query, reply)
    if (accountName === undefined) return reply
    return [
      {
        accountName,
        serviceName: 'Diagnostics',
        endpoint: 'https://callbacks.example.com/diagnostics',
        createdOn: new Date(SUBSCRIBED_AT_MS).toISOString()
      }
    ]
  })
}

async function cloudConnectorRoutes (scope: FastifyInstance, { accounts }: FamilyRouteOptions): Promise<void> {
  const prefix = '/api/cc/v1'
  const ccError = (reply: FastifyReply, status: number, body: CloudConnectorError): FastifyReply =>
    reply.code(status).send(body)
  const billingAccountOf = (body: unknown, reply: FastifyReply): string | undefined => {
    const identifier = isRecord(body) ? body.accountidentifier : undefined
    const billingAccountId = stringField(identifier, 'billingaccountid')
    if (billingAccountId === undefined) {
      ccError(reply, 400, {
        error: 'bad_request',
        error_description: 'Billing Account ID is required in resource body',
        cause: 'Request is missing required body content'
      })
      return undefined
    }
    if (!accounts.has(billingAccountId)) {
      ccError(reply, 404, {
        error: 'not_found',
        error_description: `Resource(Account) ${billingAccountId} is not found`,
        cause: 'Requested service not found'
      })
      return undefined
    }
    return billingAccountId
  }

  scope.post<{ Body: unknown }>(`${prefix}/subscriptions/actions/query`, async (request, reply) => {
    const account = billingAccountOf(request.body, reply)
    if (account === undefined) return reply
    return [
      {
        configurationfailures: 0,
        createdon: new Date(SUBSCRIBED_AT_MS).toISOString(),
        delegateid: '00000000-0000-0000-0000-000000000000',
        id: seededId(`cc-subscription:${account}`),
        kind: 'ts.subscription',
        laststreamingstatus: '',
        laststreamingtime: '0001-01-01T00:00:00Z',
        lastupdated: new Date(UPDATED_AT_MS).toISOString(),
        name: 'Simulated subscription',
        networkfailures: 0,
        streamfailures: 0,
        streamkind: 'ts.event',
        targetid: seededId(`cc-target:${account}`),
        version: '1.0',
        versionid: seededId(`cc-subscription-version:${account}`),
        description: 'All device events to the simulated target',
        disabled: false
      }
    ]
  })

  scope.post<{ Body: unknown }>(`${prefix}/targets/actions/query`, async (request, reply) => {
    const account = billingAccountOf(request.body, reply)
    if (account === undefined) return reply
    return [
      {
        address: 'https://targets.example.com/events',
        addressscheme: 'streamrest',
        billingaccountid: account,
        createdon: new Date(SUBSCRIBED_AT_MS).toISOString(),
        id: seededId(`cc-target:${account}`),
        kind: 'ts.target',
        lastupdated: new Date(UPDATED_AT_MS).toISOString(),
        name: 'Simulated target',
        region: 'us-east-1',
        version: '1.0',
        versionid: seededId(`cc-target-version:${account}`)
      }
    ]
  })
}

async function hyperPreciseRoutes (scope: FastifyInstance, { accounts }: FamilyRouteOptions): Promise<void> {
  const prefix = '/api/hyper-precise/v1'
  const accountOf = (query: unknown, reply: FastifyReply): string | undefined => {
    const accountNumber = stringField(query, 'accountNumber')
    if (accountNumber === undefined || !accounts.has(accountNumber)) {
      const body: HyperPreciseError = {
        responseCode: 'INVALID_PARAMETER',
        message:
          accountNumber === undefined
            ? 'The accountNumber query parameter is required'
            : `Unknown accountNumber ${accountNumber}`
      }
      reply.code(400).send(body)
      return undefined
    }
    return accountNumber
  }

  scope.get(`${prefix}/devices/services`, async (request, reply) => {
    const accountNumber = accountOf(request.query, reply)
    if (accountNumber === undefined) return reply
    const imei = stringField(request.query, 'imei')
    const ok = { responseCode: 'SUCCESS', message: 'Success' }
    const imeis = imei === undefined ? imeisOf(accountNumber, 3) : [imei]
    return {
      accountNumber,
      deviceList: imeis.map((id, index) => ({ imei: id, BullseyeEnable: index % 2 === 0, responseType: ok })),
      responseType: ok
    }
  })

  scope.get(`${prefix}/callbacks`, async (request, reply) => {
    const accountNumber = accountOf(request.query, reply)
    if (accountNumber === undefined) return reply
    return [{ aname: accountNumber, name: 'BullseyeReporting', url: 'https://callbacks.example.com/bullseye' }]
  })
}

/** Every family's routes; mounted where both tokens have been checked. */
export async function familyRoutes (scope: FastifyInstance, options: FamilyRouteOptions): Promise<void> {
  for (const routes of [
    thingspaceRoutes,
    deviceLocationRoutes,
    subscriptionServerRoutes,
    softwareManagementRoutes,
    diagnosticsRoutes,
    cloudConnectorRoutes,
    hyperPreciseRoutes
  ]) {
    await scope.register(routes, { accounts: options.accounts })
  }
}
