// Runs the built proxy (dist/main.js) as a child process and follows its JSON log lines.

import { spawn, type ChildProcess } from 'node:child_process'
import path from 'node:path'
import { ROOT } from './root.js'
import { nodeScript, type ChildOptions } from './uninstrumented.js'

export const MAIN = path.join(ROOT, 'dist', 'main.js')

export interface ProxyProcess {
  child: ChildProcess
  proxyUrl: string
  adminUrl: string
  lines: Array<Record<string, unknown>>
  /** What the process wrote to stderr so far. */
  readonly stderr: string
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  /** Resolves with the first log line for which `test` holds. */
  waitFor: (test: (line: Record<string, unknown>) => boolean, timeoutMs?: number) => Promise<Record<string, unknown>>
}

/** Another command line that runs the given one in the same process (one that execs it), e.g. inside a cgroup. */
export type CommandWrapper = (command: string, args: string[]) => [string, string[]]

/**
 * Starts `script` with `env` in `cwd`. `wrap`: started through another command that execs it, such as a memory
 * cgroup's. `measured`: with the production log buffer (for tests of the proxy's own memory or stdout).
 * `coverage`: counted in the coverage report (uninstrumented.ts), for a script other than the proxy's bundle.
 */
export async function startProxyProcess (
  env: Record<string, string>,
  cwd: string,
  script = MAIN,
  options: ChildOptions & { measured?: boolean; wrap?: CommandWrapper } = {}
): Promise<ProxyProcess> {
  const [plainCommand, plainArgs] = nodeScript(script, [], options)
  const [command, args] = options.wrap === undefined ? [plainCommand, plainArgs] : options.wrap(plainCommand, plainArgs)
  const child = spawn(command, args, {
    cwd,
    // Log lines written at once, not in 4 KiB batches flushed every second: a test waiting for a line waits
    // for the proxy, not for the buffer. A measured process keeps the production setting.
    env: {
      PATH: process.env.PATH ?? '',
      M2M_PROXY_PORT: '0',
      M2M_PROXY_ADMIN_PORT: '0',
      ...(options.measured === true ? {} : { M2M_PROXY_LOG_BUFFER_BYTES: '0' }),
      ...env
    },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const lines: Array<Record<string, unknown>> = []
  const waiters: Array<() => void> = []
  let buffered = ''
  child.stdout?.on('data', (chunk: Buffer) => {
    buffered += chunk.toString()
    const complete = buffered.split('\n')
    buffered = complete.pop() ?? ''
    for (const line of complete) {
      if (line.trim() === '') continue
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>)
      } catch {
        lines.push({ msg: line })
      }
    }
    for (const wake of waiters.splice(0)) wake()
  })
  let stderr = ''
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString()
  })
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => {
      for (const wake of waiters.splice(0)) wake()
      resolve({ code, signal })
    })
  })
  let exited = false
  void exit.then(() => {
    exited = true
  })
  const waitFor: ProxyProcess['waitFor'] = async (test, timeoutMs = 15_000) => {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const found = lines.find(test)
      if (found !== undefined) return found
      if (exited) throw new Error(`the proxy exited; stderr: ${stderr.trim()}`)
      if (Date.now() > deadline) throw new Error('timed out waiting for a log line')
      await new Promise<void>((resolve) => {
        waiters.push(resolve)
        setTimeout(resolve, 100)
      })
    }
  }
  let listening: Record<string, unknown>
  try {
    listening = await waitFor((line) => line.msg === 'listening')
  } catch (error) {
    // Not left running: its open stdout would hold the test process until tap's timeout.
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    throw error
  }
  return {
    child,
    proxyUrl: String(listening.proxyUrl),
    adminUrl: String(listening.adminUrl),
    lines,
    exit,
    waitFor,
    get stderr () {
      return stderr
    }
  }
}

/** GETs `url` in `rounds` one after the other, `perRound` at a time; resolves with how many were answered 200. */
export async function answeredInRounds (url: string, rounds: number, perRound = 25): Promise<number> {
  let answered = 0
  for (let round = 0; round < rounds; round++) {
    const statuses = await Promise.all(Array.from({ length: perRound }, async () => (await fetch(url)).status))
    answered += statuses.filter((status) => status === 200).length
  }
  return answered
}
