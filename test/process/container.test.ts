// The container contract that can be checked without a Docker engine: Dockerfile shape, HEALTHCHECK script, /healthz.

import t from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { execFile } from 'node:child_process'
import { startStack } from '../helpers/stack.js'
import { ROOT } from '../helpers/root.js'
import { nodeScript, uninstrumented } from '../helpers/uninstrumented.js'

t.test(
  'Dockerfile: multi-stage, the bundle without node_modules, non-root, healthcheck, proxy on loopback, exec-form command',
  async (t) => {
    const dockerfile = fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8')
    const stages = dockerfile.match(/^FROM /gm) ?? []
    t.ok(stages.length >= 2, 'multi-stage')
    // Node 20 is end-of-life: every stage (build, dependencies, runtime) on the active LTS the suite also runs on.
    t.same(
      [...dockerfile.matchAll(/^FROM (\S+)/gm)].map((match) => match[1]),
      stages.map(() => 'node:24-bookworm-slim'),
      'every stage on node:24-bookworm-slim'
    )
    const final = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '))
    t.notMatch(final, /node_modules|npm (ci|install)/, 'the final stage installs nothing: the bundle carries its dependencies')
    t.match(final, /^USER node$/m, 'runs as the non-root node user')
    t.match(final, /^HEALTHCHECK .*CMD \["node", "dist\/healthcheck\.js"\]/m)
    // The proxy listener injects the account's tokens: loopback only unless a deployment opens it on purpose.
    t.equal(finalStage().env.M2M_PROXY_HOST, '127.0.0.1', 'the proxy listener binds to 127.0.0.1')
    t.equal(finalStage().env.M2M_PROXY_ADMIN_HOST, '0.0.0.0', 'the admin listener is reachable for probes by pod IP')
    t.notMatch(final, /^EXPOSE .*\b8080\b/m, 'the proxy port is not exposed (docker run -P would publish it)')
    t.match(final, /^CMD \["node", "dist\/main\.js"\]$/m, 'no shell as PID 1')
    t.ok(fs.existsSync(path.join(ROOT, 'dist/healthcheck.js')), 'the healthcheck script is built')
  }
)

t.test('healthcheck script: 0 while /healthz answers, 1 when nothing listens', async (t) => {
  const stack = await startStack(t)
  const health = await fetch(`${stack.proxy.adminUrl}/healthz`)
  t.equal(health.status, 200)
  const port = new URL(stack.proxy.adminUrl).port
  // Asynchronous: the admin listener runs in this very process and must keep answering.
  const run = (adminPort: string): Promise<number> =>
    new Promise((resolve) => {
      execFile(
        ...nodeScript(path.join(ROOT, 'dist/healthcheck.js'), [], { coverage: true }),
        {
          env: { M2M_PROXY_ADMIN_PORT: adminPort, M2M_PROXY_ADMIN_HOST: '0.0.0.0' },
          timeout: 10_000
        },
        (error) => resolve(error === null ? 0 : Number(error.code ?? 1))
      )
    })
  t.equal(await run(port), 0)
  await stack.stopProxy()
  t.equal(await run(port), 1)
})

/** ENV and CMD of the Dockerfile's final stage, as docker would read them (simple forms only). */
function finalStage (): {
  env: Record<string, string>
  cmd: string[]
  healthcheck: string[]
  workdir: string
  copies: string[]
} {
  const dockerfile = fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8').replace(/\\\n\s*/g, ' ')
  const final = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '))
  const env: Record<string, string> = {}
  for (const line of final.split('\n').filter((candidate) => candidate.startsWith('ENV '))) {
    for (const match of line.slice(4).matchAll(/([A-Z0-9_]+)=(\S+)/g)) env[match[1] as string] = match[2] as string
  }
  const json = (prefix: RegExp): string[] =>
    JSON.parse(
      final
        .split('\n')
        .find((line) => prefix.test(line))
        ?.replace(prefix, '') ?? '[]'
    ) as string[]
  return {
    env,
    cmd: json(/^CMD /),
    healthcheck: json(/^HEALTHCHECK .*CMD /),
    workdir: /^WORKDIR (\S+)$/m.exec(final)?.[1] ?? '/',
    copies: [...final.matchAll(/^COPY (?:--from=\S+ )?(\S+) /gm)].map((match) => match[1] as string)
  }
}

t.test(
  'the final stage runs from the files the build stage copies (no node_modules), as its CMD and ENV say, writing nothing beside the state',
  async (t) => {
    const { startSimulator } = await import('../helpers/stack.js')
    const { startProxyProcess } = await import('../helpers/process.js')
    const { DEMO_ACCOUNT_NAME, DEMO_CREDENTIALS } = await import('../../src/simulator/app.js')
    const stage = finalStage()
    t.same(stage.cmd, ['node', 'dist/main.js'])
    t.same(stage.copies.sort(), ['/image', 'package.json'].sort())
    // Outside the checkout: a bare import the bundle left unresolved could not be found in its node_modules either.
    const image = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-image-'))
    t.teardown(() => { fs.rmSync(image, { recursive: true, force: true }) })
    fs.mkdirSync(path.join(image, 'state'))
    fs.writeFileSync(path.join(image, 'state', 'credentials.json'), JSON.stringify(DEMO_CREDENTIALS), { mode: 0o600 })
    const app = path.join(image, 'app')
    fs.mkdirSync(path.join(app, 'dist'), { recursive: true })
    fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(app, 'package.json'))
    // What the build stage puts in the image, as its `cp -r ... /image/` lists it: the proxy must run from that alone.
    const shipped = /cp -r ((?:dist\/\S+ )+)\/image\//.exec(fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8'))?.[1]
      ?.trim()
      .split(' ') ?? []
    t.ok(
      ['dist/main.js', 'dist/healthcheck.js', 'dist/cli.js'].every((file) => shipped.includes(file)),
      'the bundle, the healthcheck and the CLI'
    )
    t.match(
      fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8'),
      /ln -s \/app\/dist\/cli\.js \/usr\/local\/bin\/m2m-session-proxy/,
      'the CLI is on the PATH'
    )
    t.notOk(shipped.some((file) => file.includes('simulator') || file.includes('demo')), 'no simulator, no demo')
    for (const file of shipped) {
      fs.cpSync(path.join(ROOT, file), path.join(app, 'dist', path.basename(file)), { recursive: true })
    }
    t.notOk(fs.existsSync(path.join(app, 'node_modules')), 'no node_modules beside it')
    const before = listTree(app)

    const { sim, simUrl } = await startSimulator(t)
    const credentialsFile = path.join(image, 'state', 'credentials.json')
    const proxy = await startProxyProcess(
      {
        ...stage.env,
        M2M_PROXY_PORT: '0',
        M2M_PROXY_ADMIN_PORT: '0',
        M2M_PROXY_UPSTREAM: simUrl,
        M2M_PROXY_CREDENTIALS_FILE: credentialsFile
      },
      app,
      path.join(app, stage.cmd[1] ?? '')
    )
    t.teardown(() => {
      proxy.child.kill('SIGKILL')
    })
    await proxy.waitFor((line) => line.msg === 'logged in to ThingSpace')
    t.match(proxy.proxyUrl, /^http:\/\/127\.0\.0\.1:\d+$/, 'the proxy listener is on loopback as the image says')
    t.match(proxy.adminUrl, /^http:\/\/0\.0\.0\.0:\d+$/, 'the admin listener on 0.0.0.0 as the image says')
    const port = new URL(proxy.proxyUrl).port
    const answer = await fetch(`http://127.0.0.1:${port}/api/m2m/v1/accounts/${DEMO_ACCOUNT_NAME}`)
    t.equal(answer.status, 200)
    const external = Object.values(os.networkInterfaces())
      .flat()
      .find((address) => address?.family === 'IPv4' && !address.internal)
    if (external !== undefined) {
      const refused = await fetch(`http://${external.address}:${port}/healthz`).then(
        () => 'answered',
        (error: Error & { cause?: { code?: string } }) => error.cause?.code
      )
      t.equal(refused, 'ECONNREFUSED', `the proxy listener does not answer on ${external.address}`)
      const adminHealth = await fetch(`http://${external.address}:${new URL(proxy.adminUrl).port}/healthz`)
      t.equal(adminHealth.status, 200, `the admin listener answers on ${external.address} (probes by pod IP)`)
    }
    t.equal(sim.stats.logins, 1)

    const adminPort = new URL(proxy.adminUrl).port
    const health = await new Promise<number>((resolve) => {
      execFile(
        ...uninstrumented(process.execPath, stage.healthcheck.slice(1), { coverage: true }),
        { cwd: app, env: { ...stage.env, M2M_PROXY_ADMIN_PORT: adminPort } },
        (error) => resolve(error === null ? 0 : Number(error.code ?? 1))
      )
    })
    t.equal(health, 0, 'the HEALTHCHECK command passes')
    const cliStatus = await new Promise<{ code: number; stdout: string }>((resolve) => {
      execFile(
        ...nodeScript(path.join(app, 'dist', 'cli.js'), ['status'], { coverage: true }),
        { cwd: app, env: { ...stage.env, M2M_PROXY_ADMIN_PORT: adminPort } },
        (error, stdout) => { resolve({ code: error === null ? 0 : Number(error.code ?? 1), stdout }) }
      )
    })
    t.equal(cliStatus.code, 0, 'the shipped CLI runs from the image files alone')
    t.match(cliStatus.stdout, /^ready: +yes$/m)
    proxy.child.kill('SIGTERM')
    t.equal((await proxy.exit).code, 0)
    t.same(listTree(app), before, 'nothing written under the application directory (read-only root works)')
    t.ok(fs.existsSync(path.join(image, 'state', 'login-guard.json')), 'state went to the volume')
  }
)

function listTree (dir: string): string[] {
  return (fs.readdirSync(dir, { recursive: true }) as string[]).sort()
}
