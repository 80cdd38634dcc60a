// M2M_PROXY_LOG_FORMAT=pretty (log-pretty.ts): the same lines, for a person; nothing added, nothing lost.

import t from 'tap'
import { Writable } from 'node:stream'
import { prettyLine, PrettyDestination } from '../../src/log-pretty.js'
import { createLogger } from '../../src/logging.js'

t.test('time, level, message, then every other field; strings with spaces quoted', async (t) => {
  const line = prettyLine(JSON.stringify({
    level: 40,
    time: Date.UTC(2026, 0, 2, 3, 4, 5, 678),
    pid: 7,
    hostname: 'h',
    service: 'm2m-session-proxy',
    msg: 'login failed',
    component: 'session',
    status: 400,
    reason: 'two words',
    cause: { networkError: 'ECONNREFUSED' }
  }))
  t.equal(
    line,
    '03:04:05.678 WARN  login failed  component=session status=400 reason="two words" cause={"networkError":"ECONNREFUSED"}\n'
  )
  t.equal(prettyLine('not json'), 'not json\n', 'anything else passes as it is')
})

t.test('through the logger: redaction holds, one pretty line per call', async (t) => {
  const written: string[] = []
  const sink = new Writable({
    write (chunk: Buffer, _encoding, done) {
      written.push(chunk.toString())
      done()
    }
  })
  const logger = createLogger('info', { bufferBytes: 0, destination: new PrettyDestination(sink) as never })
  logger.info({ password: 'hunter2-secret', component: 'x' }, 'hello')
  t.equal(written.length, 1)
  t.match(written[0], /^\d\d:\d\d:\d\d\.\d{3} INFO {2}hello {2}password=\[redacted\] component=x\n$/)
  t.notMatch(written.join(''), 'hunter2-secret')
})
