// The answer deadline of Redis commands on a hand-moved clock: a command not answered in time fails, the connection
// then counts as stalled and later commands fail unsent, until a late answer or a new connection.
import t from 'tap'
import { AnswerDeadline, RedisNotAnsweringError } from '../../src/fleet/answer-deadline.js'
import { TimerClock } from '../helpers/fake-clock.js'

/** A command whose answer the test gives by hand. */
function pending<T> (): { promise: Promise<T>; answer: (value: T) => void; fail: (error: Error) => void } {
  let answer: (value: T) => void = () => {}
  let fail: (error: Error) => void = () => {}
  const promise = new Promise<T>((resolve, reject) => {
    answer = resolve
    fail = reject
  })
  return { promise, answer, fail }
}

const settle = async (): Promise<void> => await new Promise((resolve) => setImmediate(resolve))

t.test('an answer within the deadline is passed on; nothing stalls', async (t) => {
  const clock = new TimerClock()
  const changes: boolean[] = []
  const deadline = new AnswerDeadline({ timeoutMs: 2000, clock, onChange: (stalled) => changes.push(stalled) })
  const command = pending<string>()
  const result = deadline.run(async () => await command.promise)
  clock.advance(1999)
  command.answer('OK')
  t.equal(await result, 'OK')
  clock.advance(10_000)
  t.equal(deadline.stalled, false)
  t.same(changes, [], 'no change told')
})

t.test('no answer by the deadline: the command fails, the connection is stalled, later commands fail unsent', async (t) => {
  const clock = new TimerClock()
  const changes: boolean[] = []
  const deadline = new AnswerDeadline({ timeoutMs: 2000, clock, onChange: (stalled) => changes.push(stalled) })
  const hung = pending<string>()
  const result = deadline.run(async () => await hung.promise)
  clock.advance(1999)
  await settle()
  t.equal(deadline.stalled, false, 'not before the deadline')
  clock.advance(1)
  await t.rejects(result, new RedisNotAnsweringError(2000), 'fails at the deadline')
  t.equal(deadline.stalled, true)
  t.same(changes, [true], 'told once')

  let sent = 0
  await t.rejects(deadline.run(async () => { sent++; return 'never' }), RedisNotAnsweringError)
  t.equal(sent, 0, 'while stalled, nothing more is sent')

  // Redis answers the hung command at last: it is back.
  hung.answer('late')
  await settle()
  t.equal(deadline.stalled, false, 'a late answer ends the stall')
  t.same(changes, [true, false], 'told again')
  t.equal(await deadline.run(async () => 'sent'), 'sent', 'commands are sent again')
})

t.test('a failed command is passed on and proves nothing; a new connection ends a stall without telling', async (t) => {
  const clock = new TimerClock()
  const changes: boolean[] = []
  const deadline = new AnswerDeadline({ timeoutMs: 500, clock, onChange: (stalled) => changes.push(stalled) })
  const refused = new Error('connection closed')
  await t.rejects(deadline.run(async () => { throw refused }), refused, 'its own error')
  t.equal(deadline.stalled, false, 'an error before the deadline does not stall')

  const hung = pending<string>()
  const result = deadline.run(async () => await hung.promise)
  clock.advance(500)
  await t.rejects(result, RedisNotAnsweringError)
  hung.fail(new Error('the socket closed'))
  await settle()
  t.equal(deadline.stalled, true, 'the connection failing it is no answer')
  deadline.reset()
  t.equal(deadline.stalled, false, 'reset: a new connection')
  t.same(changes, [true], 'the reset is its caller\'s to announce')
})

t.test('a clock without timers: real, unreferenced timers keep the deadline', async (t) => {
  const deadline = new AnswerDeadline({ timeoutMs: 20, clock: { now: () => Date.now() } })
  const started = Date.now()
  // The deadline's timer does not keep the process alive: this one does, for the test.
  const keepAlive = setTimeout(() => {}, 5000)
  await t.rejects(deadline.run(async () => await new Promise<never>(() => {})), RedisNotAnsweringError)
  clearTimeout(keepAlive)
  t.ok(Date.now() - started >= 15, 'after about its deadline')
  t.equal(deadline.stalled, true)
})
