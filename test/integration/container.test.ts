// The container contract that can be checked without a Docker engine: Dockerfile shape, HEALTHCHECK script, /healthz.

import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { startStack } from '../helpers/stack.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')

t.test('Dockerfile: multi-stage, production dependencies only, non-root, healthcheck, 0.0.0.0, exec-form command', async (t) => {
  const dockerfile = fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8')
  const stages = dockerfile.match(/^FROM /gm) ?? []
  t.ok(stages.length >= 2, 'multi-stage')
  const final = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '))
  t.match(final, /npm ci --omit=dev|COPY --from=production-dependencies/, 'final stage gets production dependencies only')
  t.match(final, /^USER node$/m, 'runs as the non-root node user')
  t.match(final, /^HEALTHCHECK .*CMD \["node", "dist\/healthcheck\.js"\]/m)
  t.match(final, /M2M_PROXY_HOST=0\.0\.0\.0/)
  t.match(final, /^CMD \["node", "dist\/main\.js"\]$/m, 'no shell as PID 1')
  t.ok(fs.existsSync(path.join(ROOT, 'dist/healthcheck.js')), 'the healthcheck script is built')
})

t.test('healthcheck script: 0 while /healthz answers, 1 when nothing listens', async (t) => {
  const stack = await startStack(t)
  const health = await fetch(`${stack.proxy.adminUrl}/healthz`)
  t.equal(health.status, 200)
  const port = new URL(stack.proxy.adminUrl).port
  // Asynchronous: the admin listener runs in this very process and must keep answering.
  const run = (adminPort: string): Promise<number> => new Promise((resolve) => {
    execFile(process.execPath, [path.join(ROOT, 'dist/healthcheck.js')], {
      env: { M2M_PROXY_ADMIN_PORT: adminPort, M2M_PROXY_ADMIN_HOST: '0.0.0.0' },
      timeout: 10_000
    }, (error) => resolve(error === null ? 0 : Number(error.code ?? 1)))
  })
  t.equal(await run(port), 0)
  await stack.stopProxy()
  t.equal(await run(port), 1)
})
