// Every shell block of README.md and docs/*.md marked `sh demo` runs as written, against `npm run demo`
// (dist/demo.js), with the variables of the export line the demo prints: each block on a demo of its own, in bash
// with -e, so that any command failing (curl -f: any HTTP error) fails the test.

import t, { type Test } from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { execFile, spawn } from 'node:child_process'
import { promisify } from 'node:util'
import { ROOT } from '../helpers/root.js'
import { nodeScript, uninstrumented } from '../helpers/uninstrumented.js'

const execFileAsync = promisify(execFile)
const DEMO = path.join(ROOT, 'dist', 'demo.js')

interface Block {
  file: string
  line: number
  script: string
}

function demoBlocks (): Block[] {
  const files = ['README.md', ...fs.readdirSync(path.join(ROOT, 'docs')).map((name) => `docs/${name}`)]
  return files
    .filter((file) => file.endsWith('.md'))
    .flatMap((file) => {
      const text = fs.readFileSync(path.join(ROOT, file), 'utf8')
      return [...text.matchAll(/^```sh demo\n([\s\S]*?)^```$/gm)].map((match) => ({
        file,
        line: text.slice(0, match.index).split('\n').length,
        script: match[1] as string
      }))
    })
}

/** The demo with free ports; resolves with the variables of its export line, and a way to stop it. */
async function startDemo (t: Test): Promise<Record<string, string>> {
  const tmp = t.testdir({})
  const child = spawn(...nodeScript(DEMO), {
    env: {
      PATH: process.env.PATH ?? '',
      TMPDIR: tmp,
      M2M_PROXY_PORT: '0',
      M2M_PROXY_ADMIN_PORT: '0',
      M2M_DEMO_SIMULATOR_PORT: '0'
    },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  t.teardown(() => {
    child.kill('SIGKILL')
  })
  let stdout = ''
  return await new Promise((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString()
      const line = /^ {2}export (.+)$/m.exec(stdout)
      if (line === null) return
      resolve(Object.fromEntries((line[1] as string).split(' ').map((pair) => pair.split('=', 2) as [string, string])))
    })
    child.on('exit', (code) => {
      reject(new Error(`the demo exited (${code}) before printing its export line`))
    })
  })
}

const blocks = demoBlocks()
const curlInstalled = await execFileAsync('sh', ['-c', 'command -v curl']).then(
  () => true,
  () => false
)

// Each block runs on a demo of its own (free ports, its own directory): several at a time.
t.jobs = 3

t.test('the docs have runnable examples', async (t) => {
  t.ok(blocks.length >= 4, `${blocks.length} blocks marked sh demo`)
  t.ok(blocks.some((block) => block.file === 'README.md'), 'in the README')
})

for (const block of blocks) {
  t.test(`${block.file}:${block.line} runs as written`, { skip: !curlInstalled && 'no curl' }, async (t) => {
    const variables = await startDemo(t)
    t.same(Object.keys(variables).sort(), ['ADMIN', 'M2M_PROXY_ADMIN_PORT', 'M2M_PROXY_ADMIN_TOKEN', 'PROXY', 'SIMULATOR'])
    const { stdout } = await execFileAsync(...uninstrumented('bash', ['-e', '-o', 'pipefail', '-c', block.script]), {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', ...variables },
      timeout: 30_000
    })
    t.pass('exit 0')
    if (block.script.includes('"mode":"reject"')) {
      t.match(stdout, /^ready: +no \(credentials-rejected\)$/m, 'the lockout guard engaged')
      t.match(stdout, /"failedLogins":2\b/, 'four asked, two sent: the guard stopped the rest')
    }
    if (block.script.includes('sessions/expire') && block.script.includes('devices/actions/list')) {
      t.match(stdout, /"logins":2\b/, 'one re-login for the expired session')
    }
  })
}

// A reader runs the README's tour block after block, on one demo: each block must leave the demo in a state the next
// one works in.
t.test('the README tour runs in order on one demo', { skip: !curlInstalled && 'no curl' }, async (t) => {
  const tour = blocks.filter((block) => block.file === 'README.md')
  t.ok(tour.length >= 4, `${tour.length} blocks`)
  const variables = await startDemo(t)
  for (const block of tour) {
    await execFileAsync(...uninstrumented('bash', ['-e', '-o', 'pipefail', '-c', block.script]), {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', ...variables },
      timeout: 30_000
    }).then(
      () => t.pass(`README.md:${block.line}, after the blocks before it`),
      (error: { stderr?: string }) => t.fail(`README.md:${block.line}, after the blocks before it: ${error.stderr ?? ''}`)
    )
  }
})
