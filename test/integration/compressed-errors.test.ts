// Compressed error answers (issue 11): a token refusal the upstream gzipped, deflated or brotli-compressed is
// still recognised, so the token is renewed and the request replayed; any other compressed answer reaches the
// client byte for byte, and one the proxy cannot decode (corrupt, a bomb, `compress`) is passed on, never a 500.

import t, { type Test } from 'tap'
import http from 'node:http'
import zlib from 'node:zlib'
import { request } from 'undici'
import { startStack, type Stack } from '../helpers/stack.js'
import { startStandInUpstream, type StandInUpstream } from '../helpers/stand-in-upstream.js'

/** What axios sends, and so the SDK. */
const SDK_ACCEPT_ENCODING = 'gzip, compress, deflate, br'

const SESSION_EXPIRED = JSON.stringify({
  errorCode: 'UnifiedWebService.REQUEST_FAILED.SessionToken.Expired',
  errorMessage: 'Token expired'
})
const BEARER_INVALID = JSON.stringify({
  fault: {
    code: 900901,
    message: 'Invalid Credentials',
    description: 'Access failure for API: /api/m2m, version: v1 status: (900901) - Invalid Credentials'
  }
})

interface Encoded {
  contentEncoding: string
  body: Buffer
}

/** Each coding of the issue, with the Content-Encoding an upstream would declare. */
const ENCODINGS: Record<string, (plain: Buffer) => Encoded> = {
  gzip: (plain) => ({ contentEncoding: 'gzip', body: zlib.gzipSync(plain) }),
  'x-gzip': (plain) => ({ contentEncoding: 'x-gzip', body: zlib.gzipSync(plain) }),
  'deflate (zlib-wrapped)': (plain) => ({ contentEncoding: 'deflate', body: zlib.deflateSync(plain) }),
  'deflate (raw)': (plain) => ({ contentEncoding: 'deflate', body: zlib.deflateRawSync(plain) }),
  br: (plain) => ({ contentEncoding: 'br', body: zlib.brotliCompressSync(plain) }),
  // Applied in the order listed: gzip first, then br; so undone br first.
  'gzip then br': (plain) => ({ contentEncoding: 'GZIP, br', body: zlib.brotliCompressSync(zlib.gzipSync(plain)) })
}

interface DataAnswer {
  status: number
  headers: http.OutgoingHttpHeaders
  body: Buffer
}

interface Upstream extends StandInUpstream {
  /** The Accept-Encoding of every data call, replays included. */
  acceptEncodings: string[]
}

/**
 * Tokens `oauth-<n>` and `session-<n>`, numbered from 1; data calls answered by `answer`, given the bearer
 * and session token they carry. Every answer is written with an explicit Content-Length, as gateways do.
 */
async function startUpstream (
  t: Test,
  answer: (oauthToken: string, sessionToken: string) => DataAnswer
): Promise<Upstream> {
  const acceptEncodings: string[] = []
  const upstream = await startStandInUpstream(t, (incoming, _body, response) => {
    acceptEncodings.push(String(incoming.headers['accept-encoding']))
    const oauthToken = String(incoming.headers.authorization).replace(/^Bearer /, '')
    const { status, headers, body } = answer(oauthToken, String(incoming.headers['vz-m2m-token']))
    response.writeHead(status, { ...headers, 'content-length': String(body.length) })
    response.end(body)
  })
  return { ...upstream, acceptEncodings }
}

const OK_BODY = Buffer.from('{"devices":[]}')
const ok: DataAnswer = { status: 200, headers: { 'content-type': 'application/json' }, body: OK_BODY }

function compressedAnswer (status: number, encoded: Encoded): DataAnswer {
  return {
    status,
    headers: { 'content-type': 'application/json', 'content-encoding': encoded.contentEncoding },
    body: encoded.body
  }
}

interface RawAnswer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Buffer
}

/** A GET as the SDK sends it; the body as it came over the wire (undici's request() never decodes). */
async function sdkCall (stack: Stack, urlPath = '/api/m2m/v1/devices/actions/list'): Promise<RawAnswer> {
  const answer = await request(stack.proxy.proxyUrl + urlPath, {
    headers: { 'accept-encoding': SDK_ACCEPT_ENCODING },
    dispatcher: stack.client
  })
  return { status: answer.statusCode, headers: answer.headers, body: Buffer.from(await answer.body.arrayBuffer()) }
}

async function stackFor (
  t: Test,
  answer: (oauthToken: string, sessionToken: string) => DataAnswer
): Promise<{ upstream: Upstream; stack: Stack }> {
  const upstream = await startUpstream(t, answer)
  const stack = await startStack(t, { upstream: upstream.url })
  return { upstream, stack }
}

function notDecodedWarnings (stack: Stack): Array<Record<string, unknown>> {
  return stack.logs
    .entries()
    .filter((entry) => typeof entry.msg === 'string' && entry.msg.startsWith('compressed error answer not decoded'))
}

for (const [name, encode] of Object.entries(ENCODINGS)) {
  t.test(
    `${name}: a compressed 400 SessionToken.Expired renews the session once and the client gets the replay's 200`,
    async (t) => {
      const { upstream, stack } = await stackFor(t, (_oauth, session) =>
        session === 'session-1' ? compressedAnswer(400, encode(Buffer.from(SESSION_EXPIRED))) : ok
      )
      const answer = await sdkCall(stack)
      t.equal(answer.status, 200)
      t.same(answer.body, OK_BODY, "the replay's body")
      t.equal(answer.headers['content-encoding'], undefined, "none of the refusal's headers")
      t.equal(answer.headers['content-length'], String(OK_BODY.length))
      t.equal(upstream.sessionTokens.length, 2, 'one new session')
      t.same(
        upstream.acceptEncodings,
        [SDK_ACCEPT_ENCODING, SDK_ACCEPT_ENCODING],
        "sent and replayed with the client's Accept-Encoding"
      )
      t.same(notDecodedWarnings(stack), [])
    }
  )

  t.test(
    `${name}: a compressed 401 fault 900901 renews the OAuth token once and the client gets the replay's 200`,
    async (t) => {
      const { upstream, stack } = await stackFor(t, (oauth) =>
        oauth === 'oauth-1' ? compressedAnswer(401, encode(Buffer.from(BEARER_INVALID))) : ok
      )
      const answer = await sdkCall(stack)
      t.equal(answer.status, 200)
      t.same(answer.body, OK_BODY)
      t.equal(upstream.oauthTokens.length, 2, 'one new OAuth token')
      t.equal(upstream.sessionTokens.length, 1, 'the session kept')
      t.same(upstream.acceptEncodings, [SDK_ACCEPT_ENCODING, SDK_ACCEPT_ENCODING])
    }
  )
}

t.test(
  'a compressed 4xx that is no token refusal reaches the client byte for byte, with its own headers',
  async (t) => {
    const plain = Buffer.from(
      JSON.stringify({ errorCode: 'REQUEST_FAILED.Device.NotFound', errorMessage: 'no such device '.repeat(20) })
    )
    for (const [name, encode] of Object.entries(ENCODINGS)) {
      for (const status of [400, 401, 404]) {
        const sent = compressedAnswer(status, encode(plain))
        const { upstream, stack } = await stackFor(t, () => sent)
        const answer = await sdkCall(stack)
        t.equal(answer.status, status, `${name} ${status}: status`)
        t.ok(answer.body.equals(sent.body), `${name} ${status}: the compressed bytes, unchanged`)
        t.equal(
          answer.headers['content-encoding'],
          sent.headers['content-encoding'],
          `${name} ${status}: Content-Encoding`
        )
        t.equal(
          answer.headers['content-length'],
          String(sent.body.length),
          `${name} ${status}: Content-Length of the compressed body`
        )
        t.equal(answer.headers['content-type'], 'application/json')
        t.equal(upstream.sessionTokens.length, 1, `${name} ${status}: nothing renewed`)
        t.equal(upstream.oauthTokens.length, 1)
        t.equal(upstream.acceptEncodings.length, 1, `${name} ${status}: not replayed`)
        await stack.stopProxy()
      }
    }
  }
)

t.test("a corrupt gzip body is passed on unchanged with the upstream's status, never a 500", async (t) => {
  const whole = zlib.gzipSync(Buffer.from(SESSION_EXPIRED))
  const corrupt: Record<string, Buffer> = {
    'not gzip at all': Buffer.from('this was never gzip'),
    truncated: whole.subarray(0, whole.length - 12),
    'bad checksum': Buffer.concat([
      whole.subarray(0, whole.length - 8),
      Buffer.from([1, 2, 3, 4]),
      whole.subarray(whole.length - 4)
    ])
  }
  for (const [name, body] of Object.entries(corrupt)) {
    const sent = compressedAnswer(400, { contentEncoding: 'gzip', body })
    const { upstream, stack } = await stackFor(t, () => sent)
    const answer = await sdkCall(stack)
    t.equal(answer.status, 400, `${name}: the upstream's status`)
    t.ok(answer.body.equals(body), `${name}: the same bytes`)
    t.equal(answer.headers['content-encoding'], 'gzip')
    t.equal(answer.headers['content-length'], String(body.length))
    t.equal(upstream.sessionTokens.length, 1, `${name}: nothing renewed`)
    t.match(
      notDecodedWarnings(stack),
      [{ level: 40, contentEncoding: 'gzip', reason: /^gzip: Z_/ }],
      `${name}: one warning says why it was not read`
    )
    await stack.stopProxy()
  }
})

t.test(
  'a gzip bomb (10 MB of zeros in ~10 KB) is passed on untouched, decoded no further than 64 KiB, no 500',
  async (t) => {
    const bomb = zlib.gzipSync(Buffer.alloc(10 * 1024 * 1024), { level: 9 })
    t.ok(bomb.length < 64 * 1024, `small enough to be read whole (${bomb.length} bytes)`)
    const sent = compressedAnswer(400, { contentEncoding: 'gzip', body: bomb })
    const { upstream, stack } = await stackFor(t, () => sent)
    const answer = await sdkCall(stack)
    t.equal(answer.status, 400)
    t.ok(answer.body.equals(bomb), 'the same bytes')
    t.equal(answer.headers['content-length'], String(bomb.length))
    t.equal(upstream.sessionTokens.length, 1)
    // The decoder gave up at the cap: it never held the 10 MB.
    t.match(notDecodedWarnings(stack), [{ contentEncoding: 'gzip', reason: 'gzip: expands past 65536 bytes' }])
  }
)

t.test('`compress` (LZW, no decoder in Node) and unknown codings are passed on untouched, not read', async (t) => {
  // Not real LZW: the proxy cannot tell, and must not read the bytes as JSON, whatever they look like.
  for (const contentEncoding of ['compress', 'x-compress', 'zstd', 'gzip, compress']) {
    const body = Buffer.from(SESSION_EXPIRED)
    const sent = compressedAnswer(400, { contentEncoding, body })
    const { upstream, stack } = await stackFor(t, () => sent)
    const answer = await sdkCall(stack)
    t.equal(answer.status, 400, contentEncoding)
    t.ok(answer.body.equals(body), `${contentEncoding}: the same bytes`)
    t.equal(answer.headers['content-encoding'], contentEncoding)
    t.equal(upstream.sessionTokens.length, 1, `${contentEncoding}: not taken for a refusal`)
    t.match(notDecodedWarnings(stack), [{ reason: /^unsupported coding "(x-)?(compress|zstd)"$/ }])
    await stack.stopProxy()
  }
})

t.test('an uncompressed refusal and `identity` are read as before', async (t) => {
  for (const contentEncoding of [undefined, 'identity']) {
    const { upstream, stack } = await stackFor(t, (_oauth, session) =>
      session !== 'session-1'
        ? ok
        : {
            status: 400,
            headers: {
              'content-type': 'application/json',
              ...(contentEncoding === undefined ? {} : { 'content-encoding': contentEncoding })
            },
            body: Buffer.from(SESSION_EXPIRED)
          }
    )
    const answer = await sdkCall(stack)
    t.equal(answer.status, 200, String(contentEncoding))
    t.equal(upstream.sessionTokens.length, 2)
    await stack.stopProxy()
  }
})
