// The callback inbox's parts without a listener: what is accepted (receive.ts), the durable file store
// (file-inbox.ts) with its retention and crash recovery, and the long poll's wait (inbox.ts).

import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { receiveCallback } from '../../src/callbacks/receive.js'
import { CALLBACK_FILE, COMPACTION_RETRY_MS, FileInbox, MAX_PAGE_BYTES } from '../../src/callbacks/file-inbox.js'
import { waitForCallbacks, type CallbackMessage } from '../../src/callbacks/inbox.js'

const EXPECTED = { username: 'thingspace-callbacks', password: 'callback-password-0123456789' }
const RETENTION = { count: 1000, bytes: 16 * 1024 * 1024, ageMs: 3_600_000 }

function message (requestId: string | null, extra: Record<string, unknown> = {}): CallbackMessage {
  return { service: 'CarrierService', requestId, deviceIds: [], body: { requestId, ...extra } }
}

t.test('receive: the registered username and password, in a JSON object, for a known service', async (t) => {
  const body = JSON.stringify({
    ...EXPECTED,
    requestId: 'req-1',
    deviceIds: [{ id: '990013907835573', kind: 'imei' }, { id: 7 }],
    deviceResponse: { activateResponse: { status: 'Success' } }
  })
  const verdict = receiveCallback('CarrierService', body, EXPECTED)
  t.same(verdict, {
    accepted: {
      service: 'CarrierService',
      requestId: 'req-1',
      deviceIds: [{ id: '990013907835573', kind: 'imei' }],
      body: {
        requestId: 'req-1',
        deviceIds: [{ id: '990013907835573', kind: 'imei' }, { id: 7 }],
        deviceResponse: { activateResponse: { status: 'Success' } }
      }
    }
  }, 'stored as received, without the username and password')
  t.equal(
    (receiveCallback('DeviceUsage', JSON.stringify({ ...EXPECTED, txid: 'tx-9' }), EXPECTED) as { accepted: CallbackMessage })
      .accepted.requestId,
    'tx-9',
    "Device Location's transaction id names the request too"
  )
  for (const [name, text] of [
    ['a wrong password', JSON.stringify({ ...EXPECTED, password: 'callback-password-0123456780' })],
    ['a wrong username', JSON.stringify({ ...EXPECTED, username: 'someone' })],
    ['no password', JSON.stringify({ username: EXPECTED.username })],
    ['a password that is not a string', JSON.stringify({ ...EXPECTED, password: 12 })]
  ]) {
    t.same(receiveCallback('CarrierService', text as string, EXPECTED), {
      refused: 'unauthorized',
      reason: 'wrong or missing username or password'
    }, name as string)
  }
  t.match(receiveCallback('CarrierService', 'not json', EXPECTED), { refused: 'bad-request' })
  t.match(receiveCallback('CarrierService', '[1,2]', EXPECTED), { refused: 'bad-request' })
})

t.test('file inbox: appended, read by cursor and by request, and still there after reopening', async (t) => {
  const dir = t.testdir({})
  const inbox = await FileInbox.open(dir, RETENTION)
  const first = await inbox.append(message('req-1'))
  const second = await inbox.append(message('req-2'))
  const third = await inbox.append(message('req-1', { step: 2 }))
  t.same([first.seq, second.seq, third.seq], [1, 2, 3])
  t.same((await inbox.after(0, 10)).map((record) => record.seq), [1, 2, 3])
  t.same((await inbox.after(1, 1)).map((record) => record.seq), [2], 'limit')
  t.same((await inbox.forRequest('req-1')).map((record) => record.seq), [1, 3])
  t.same((await inbox.forRequest('req-none')), [])
  await inbox.close()

  const reopened = await FileInbox.open(dir, RETENTION)
  t.same((await reopened.after(0, 10)).map((record) => record.requestId), ['req-1', 'req-2', 'req-1'], 'survives a restart')
  t.equal((await reopened.append(message('req-3'))).seq, 4, 'sequence numbers are never reused')
  await reopened.close()
  t.equal(fs.statSync(path.join(dir, CALLBACK_FILE)).mode & 0o777, 0o600, 'the file is readable by its owner only')
})

t.test('file inbox: a last line cut short by a crash is dropped, the rest kept', async (t) => {
  const dir = t.testdir({})
  const inbox = await FileInbox.open(dir, RETENTION)
  await inbox.append(message('req-1'))
  await inbox.close()
  fs.appendFileSync(path.join(dir, CALLBACK_FILE), '{"seq":2,"receivedAt":"2026-')
  const reopened = await FileInbox.open(dir, RETENTION)
  t.same((await reopened.after(0, 10)).map((record) => record.seq), [1])
  await reopened.append(message('req-3'))
  await reopened.close()
  const lines = fs.readFileSync(path.join(dir, CALLBACK_FILE), 'utf8').trim().split('\n')
  t.same(lines.map((line) => (JSON.parse(line) as { seq: number }).seq), [1, 2], 'the torn line is gone from the file')
})

t.test('file inbox: appends arriving together are all stored, in order, one write for many', async (t) => {
  const dir = t.testdir({})
  const inbox = await FileInbox.open(dir, RETENTION)
  const stored = await Promise.all(Array.from({ length: 200 }, async (_, i) => await inbox.append(message(`req-${i}`))))
  t.same(stored.map((record) => record.seq), Array.from({ length: 200 }, (_, i) => i + 1))
  await inbox.close()
  const lines = fs.readFileSync(path.join(dir, CALLBACK_FILE), 'utf8').trim().split('\n')
  t.equal(lines.length, 200)
})

t.test('file inbox: retention by count and by age, in the index and on disk', async (t) => {
  const dir = t.testdir({})
  let now = Date.UTC(2026, 0, 1)
  const inbox = await FileInbox.open(dir, { count: 10, bytes: 16 * 1024 * 1024, ageMs: 60_000 }, { now: () => now })
  for (let i = 1; i <= 35; i++) await inbox.append(message(`req-${i}`))
  t.same((await inbox.after(0, 100)).map((record) => record.seq), Array.from({ length: 10 }, (_, i) => 26 + i), 'the newest 10')
  t.same((await inbox.forRequest('req-1')), [], 'the dropped ones are gone from the request index too')
  const lines = fs.readFileSync(path.join(dir, CALLBACK_FILE), 'utf8').trim().split('\n').length
  t.ok(lines <= 20, `the file is compacted (${lines} lines for 10 kept)`)
  now += 60_001
  t.same((await inbox.after(0, 100)), [], 'older than the retention age: gone')
  await inbox.close()
})

t.test('long poll: resolves when a matching callback arrives, empty on timeout or when the client leaves', async (t) => {
  const dir = t.testdir({})
  const inbox = await FileInbox.open(dir, RETENTION)
  t.teardown(async () => { await inbox.close() })
  const waiting = waitForCallbacks(inbox, () => inbox.forRequest('req-7'), 10_000, new AbortController().signal)
  await inbox.append(message('req-other'))
  await inbox.append(message('req-7'))
  t.same((await waiting).map((record) => record.requestId), ['req-7'], 'woken by its own request only')
  t.same(await waitForCallbacks(inbox, () => inbox.forRequest('req-8'), 20, new AbortController().signal), [])
  const gone = new AbortController()
  const left = waitForCallbacks(inbox, () => inbox.forRequest('req-9'), 10_000, gone.signal)
  gone.abort()
  t.same(await left, [])
})

t.test('file inbox: a line it cannot read is skipped, the others kept; a compaction drops it', async (t) => {
  const dir = t.testdir({})
  const inbox = await FileInbox.open(dir, { count: 2, bytes: 16 * 1024 * 1024, ageMs: 3_600_000 })
  await inbox.append(message('req-1'))
  await inbox.close()
  fs.appendFileSync(path.join(dir, CALLBACK_FILE), 'garbage that is not JSON\n')
  const reopened = await FileInbox.open(dir, { count: 2, bytes: 16 * 1024 * 1024, ageMs: 3_600_000 })
  t.same((await reopened.after(0, 10)).map((record) => record.seq), [1], 'the readable line kept')
  t.same(reopened.stats().count, 1)
  for (let i = 2; i <= 6; i++) await reopened.append(message(`req-${i}`))
  await reopened.close()
  const text = fs.readFileSync(path.join(dir, CALLBACK_FILE), 'utf8')
  t.notMatch(text, 'garbage', 'gone after compaction')
  t.ok(text.trim().split('\n').length <= 4, 'the file holds about what is kept')
})

t.test('file inbox: a line of valid JSON but another shape is skipped: the cursors go on from the readable ones', async (t) => {
  const dir = t.testdir({})
  const inbox = await FileInbox.open(dir, RETENTION)
  await inbox.append(message('req-1'))
  await inbox.close()
  const at = new Date().toISOString()
  const foreign = ['{}', '[]', '{"seq":"7"}', `{"seq":1e300,"receivedAt":"${at}","requestId":null}`, `{"seq":2,"receivedAt":"${at}"}`]
  fs.appendFileSync(path.join(dir, CALLBACK_FILE), foreign.join('\n') + '\n')
  const reopened = await FileInbox.open(dir, RETENTION)
  const stored = await reopened.append(message('req-2'))
  t.equal(stored.seq, 2, 'the next sequence number follows the readable lines')
  t.same((await reopened.after(0, 10)).map((record) => record.seq), [1, 2])
  t.same((await reopened.after(1, 10)).map((record) => record.requestId), ['req-2'], 'a reader after 1 gets it')
  await reopened.close()
})

t.test('file inbox: a write that fails rejects its callbacks (no 2xx), the next ones are stored', async (t) => {
  const dir = t.testdir({})
  const inbox = await FileInbox.open(dir, RETENTION)
  const handle = (inbox as unknown as { handle: { appendFile: (text: string) => Promise<void> } }).handle
  const original = handle.appendFile.bind(handle)
  let failures = 1
  handle.appendFile = async (text: string) => {
    if (failures-- > 0) throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' })
    await original(text)
  }
  await t.rejects(inbox.append(message('req-lost')), { code: 'ENOSPC' })
  t.same((await inbox.after(0, 10)), [], 'not kept in memory either')
  t.equal((await inbox.append(message('req-next'))).requestId, 'req-next')
  t.same((await inbox.after(0, 10)).map((record) => record.requestId), ['req-next'])
  await inbox.close()
})

t.test('file inbox: a write cut off half way leaves nothing behind; the lines after it read back whole', async (t) => {
  const dir = t.testdir({})
  const inbox = await FileInbox.open(dir, RETENTION)
  await inbox.append(message('req-1'))
  const handle = (inbox as unknown as { handle: { appendFile: (text: string) => Promise<void> } }).handle
  const original = handle.appendFile.bind(handle)
  let failures = 1
  handle.appendFile = async (text: string) => {
    if (failures-- <= 0) return await original(text)
    await original(text.slice(0, 20)) // the disk filled up part way through the batch
    throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' })
  }
  await t.rejects(inbox.append(message('req-lost')), { code: 'ENOSPC' })
  await inbox.append(message('req-3', { step: 3 }))
  t.same((await inbox.after(0, 10)).map((record) => record.requestId), ['req-1', 'req-3'])
  t.same((await inbox.forRequest('req-3')).map((record) => record.body), [{ requestId: 'req-3', step: 3 }])
  await inbox.close()
  const lines = fs.readFileSync(path.join(dir, CALLBACK_FILE), 'utf8').trim().split('\n')
  t.same(lines.map((line) => (JSON.parse(line) as { requestId: string }).requestId), ['req-1', 'req-3'], 'no torn line')
})

t.test('file inbox: a compaction that fails (a full disk) answers every callback and changes nothing', async (t) => {
  const dir = t.testdir({ [`${CALLBACK_FILE}.compacting`]: 'left by a compaction cut short' })
  let now = Date.UTC(2026, 0, 1)
  const warnings: string[] = []
  const inbox = await FileInbox.open(dir, { count: 5, bytes: 16 * 1024 * 1024, ageMs: 3_600_000 }, {
    now: () => now,
    warn: (warning) => { warnings.push(warning) }
  })
  t.teardown(async () => { await inbox.close() })
  const file = path.join(dir, CALLBACK_FILE)
  t.notOk(fs.existsSync(`${file}.compacting`), 'what a crash left mid-compaction is removed at start')
  for (let i = 1; i <= 5; i++) await inbox.append(message(`req-${i}`))
  const inode = fs.statSync(file).ino
  // The compaction's new file cannot be put in place (as with a full disk, it throws): a directory holds its name.
  fs.mkdirSync(`${file}.compacting`)
  const stored = await Promise.all(Array.from({ length: 11 }, async (_, i) => await inbox.append(message(`req-${6 + i}`))))
  t.same(stored.map((record) => record.seq), Array.from({ length: 11 }, (_, i) => 6 + i), 'every callback stored and answered')
  t.equal(warnings.length, 1, 'one warning, not one per append')
  t.match(warnings[0], /could not be compacted \(EISDIR\).*tried again in 60 s/)
  t.equal(fs.statSync(file).ino, inode, 'the file was not replaced')
  t.equal(fs.readFileSync(file, 'utf8').trim().split('\n').length, 16, 'and holds every line')
  t.same((await inbox.after(0, 10)).map((record) => record.seq), [12, 13, 14, 15, 16], 'reads as before')
  t.same((await inbox.forRequest('req-14')).map((record) => record.seq), [14])

  fs.rmdirSync(`${file}.compacting`)
  await inbox.append(message('req-17'))
  t.equal(fs.statSync(file).ino, inode, `not tried again before ${COMPACTION_RETRY_MS} ms`)
  now += COMPACTION_RETRY_MS
  await inbox.append(message('req-18'))
  t.not(fs.statSync(file).ino, inode, 'compacted once the wait is over')
  t.equal(fs.readFileSync(file, 'utf8').trim().split('\n').length, 5, 'down to what is retained')
  t.same((await inbox.after(0, 10)).map((record) => record.seq), [14, 15, 16, 17, 18])
  t.same((await inbox.forRequest('req-17')).map((record) => record.requestId), ['req-17'], 'read from the new file')
  t.equal(warnings.length, 1, 'no further warning')
  await inbox.append(message('req-19'))
  t.same((await inbox.after(17, 10)).map((record) => record.seq), [18, 19], 'appends go to the new file')
})

t.test('file inbox: a file of large lines is indexed in pieces at start-up and read back byte for byte', async (t) => {
  const dir = t.testdir({})
  const inbox = await FileInbox.open(dir, RETENTION)
  // 40 lines of 100 KB: 4 MB, read at start-up 1 MiB at a time, so lines cross the pieces' ends.
  const payloads = Array.from({ length: 40 }, (_, i) => `${i}:`.padEnd(100_000, String.fromCharCode(97 + (i % 26))))
  for (const [i, payload] of payloads.entries()) await inbox.append(message(`req-${i}`, { payload, text: 'héllo ✓' }))
  await inbox.close()
  const reopened = await FileInbox.open(dir, RETENTION)
  t.teardown(async () => { await reopened.close() })
  const records = await reopened.after(0, 100)
  t.equal(records.length, 40)
  const bodies = records.map((record) => record.body as { payload: string; text: string })
  t.ok(bodies.every((body, i) => body.payload === payloads[i]), 'every payload as written')
  t.ok(bodies.every((body) => body.text === 'héllo ✓'), 'multi-byte characters intact')
  t.same((await reopened.forRequest('req-39')).map((record) => record.seq), [40])
})

t.test('file inbox: reads under way while a compaction replaces the file get what they asked for', async (t) => {
  const dir = t.testdir({})
  const inbox = await FileInbox.open(dir, { count: 5, bytes: 16 * 1024 * 1024, ageMs: 3_600_000 })
  t.teardown(async () => { await inbox.close() })
  for (let i = 1; i <= 5; i++) await inbox.append(message(`req-${i}`))
  const fileBefore = fs.statSync(path.join(dir, CALLBACK_FILE)).ino
  // The reads take their offsets now and read only once the appends below have had the file compacted (replaced).
  type Readable = { handle: { read: (...args: unknown[]) => Promise<unknown> } }
  const { handle } = (inbox as unknown as { reader: Readable }).reader
  const read = handle.read.bind(handle)
  let release = (): void => {}
  const released = new Promise<void>((resolve) => { release = resolve })
  handle.read = async (...args: unknown[]) => { await released; return await read(...args) }
  const byCursor = inbox.after(0, 5)
  const byRequest = inbox.forRequest('req-3')
  for (let i = 6; i <= 16; i++) await inbox.append(message(`req-${i}`))
  t.not(fs.statSync(path.join(dir, CALLBACK_FILE)).ino, fileBefore, 'the file was compacted')
  release()
  t.same((await byCursor).map((record) => record.seq), [1, 2, 3, 4, 5], 'the five asked for')
  t.same((await byRequest).map((record) => record.requestId), ['req-3'])
  t.same((await inbox.after(0, 10)).map((record) => record.seq), [12, 13, 14, 15, 16], 'and afterwards, the newest five')
})

t.test('file inbox: a page read by cursor stops at MAX_PAGE_BYTES, one callback at least; read on from its end', async (t) => {
  const dir = t.testdir({})
  const inbox = await FileInbox.open(dir, { count: 1000, bytes: 64 * 1024 * 1024, ageMs: 3_600_000 })
  t.teardown(async () => { await inbox.close() })
  const payload = 'x'.repeat(1024 * 1024) // each line a little over 1 MiB: three fit in a page, not four
  for (let i = 1; i <= 7; i++) await inbox.append(message(`req-${i}`, { payload }))
  const pages: number[][] = []
  for (let cursor = 0; ;) {
    const page = await inbox.after(cursor, 100)
    if (page.length === 0) break
    pages.push(page.map((record) => record.seq))
    cursor = page.at(-1)?.seq ?? cursor
  }
  t.same(pages, [[1, 2, 3], [4, 5, 6], [7]], 'every callback once, in pages under the byte bound')
  const huge = await FileInbox.open(t.testdir({}), { count: 10, bytes: 64 * 1024 * 1024, ageMs: 3_600_000 })
  t.teardown(async () => { await huge.close() })
  await huge.append(message('req-huge', { payload: 'y'.repeat(MAX_PAGE_BYTES + 1) }))
  t.equal((await huge.after(0, 10)).length, 1, 'a callback larger than the bound still comes, alone')
})
