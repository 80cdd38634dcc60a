// What npm run bench's memory section and test/process/memory-bounds.test.ts share to measure the proxy's memory: the
// RSS target, the image's memory ENV, RSS sampling, a slow ThingSpace, and a memory cgroup limited like the Kubernetes
// example's pod for the proxy to run in. Node sizes V8's heap from the container's memory limit
// (uv_get_constrained_memory): on a large host without one, V8 lets garbage pile up far longer than in a pod.
import fs from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

/** The README's target for the peak RSS, in a pod limited as the Kubernetes example's. */
export const RSS_TARGET_MIB = 160

/** The ENV lines of the Dockerfile that tune memory, so that the process runs as in the image. */
export function imageMemoryEnv () {
  // Comment lines left out: they may name settings the image no longer sets.
  const dockerfile = fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8').replace(/^\s*#.*$/gm, '')
  return Object.fromEntries([...dockerfile.matchAll(/\b(MALLOC_[A-Z_]+)=(\d+)/g)].map(([, name, value]) => [name, value]))
}

/** Resident memory of a process, MiB (Linux). */
export function rssMiB (pid) {
  return Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024
}

/** Samples the process's RSS every 50 ms until the returned function is called; it returns the peak. */
export function watchRss (pid) {
  let peak = rssMiB(pid)
  const timer = setInterval(() => {
    try {
      peak = Math.max(peak, rssMiB(pid))
    } catch {
      // exited: the peak so far stands
    }
  }, 50)
  return () => {
    clearInterval(timer)
    try {
      return Math.max(peak, rssMiB(pid))
    } catch {
      return peak
    }
  }
}

/**
 * A ThingSpace that answers the proxy's token and login calls at once and every other request 300 ms after its body.
 */
export async function startSlowUpstream () {
  const server = http.createServer((request, response) => {
    response.setHeader('content-type', 'application/json')
    if (request.url === '/api/ts/v1/oauth2/token') {
      response.end('{"access_token":"oauth-token","token_type":"bearer","expires_in":3600}')
      return
    }
    if (request.url === '/api/m2m/v1/session/login') {
      response.end('{"sessionToken":"session-token"}')
      return
    }
    request.resume()
    request.on('end', () => setTimeout(() => response.end('{}'), 300))
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => {
      server.closeAllConnections()
      server.close()
    }
  }
}

/** The memory limit of the proxy's container in deploy/kubernetes.yaml, in MiB. */
export function podMemoryLimitMiB () {
  const limit = /limits:\s*\{\s*memory:\s*(\d+)Mi/.exec(
    fs.readFileSync(path.join(ROOT, 'deploy/kubernetes.yaml'), 'utf8')
  )?.[1]
  if (limit === undefined) throw new Error('deploy/kubernetes.yaml states no memory limit in Mi')
  return Number(limit)
}

/**
 * A memory cgroup limited to `limitMiB` beside this process's own; undefined where none can be made (not root, no
 * memory controller, a v2 tree not delegated). `wrap(command, args)` gives the command line that starts `command`
 * inside it (a shell moves itself there, then becomes the command, so that node starts inside and sizes its heap by the
 * limit);
 * `remove()` once its processes have exited.
 */
export function createMemoryCgroup (limitMiB) {
  const lines = fs.readFileSync('/proc/self/cgroup', 'utf8').split('\n')
  const v1 = lines.map((line) => /^\d+:([^:]*\bmemory\b[^:]*):(.*)$/.exec(line)).find(Boolean)
  const v2 = lines.map((line) => /^0::(.*)$/.exec(line)).find(Boolean)
  const candidates = []
  if (v1) candidates.push({ dir: path.join('/sys/fs/cgroup/memory', v1[2]), limitFile: 'memory.limit_in_bytes' })
  if (v2) {
    candidates.push(
      { dir: path.join('/sys/fs/cgroup', v2[1]), limitFile: 'memory.max' },
      { dir: path.join('/sys/fs/cgroup/unified', v2[1]), limitFile: 'memory.max' }
    )
  }
  for (const { dir, limitFile } of candidates) {
    const child = path.join(dir, `m2m-memory-${process.pid}-${Math.random().toString(36).slice(2, 8)}`)
    try {
      fs.mkdirSync(child)
      fs.writeFileSync(path.join(child, limitFile), String(limitMiB * 1024 * 1024))
      return {
        dir: child,
        limitMiB,
        wrap: (command, args) => [
          '/bin/sh',
          ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', child, command, ...args]
        ],
        remove: () => {
          try {
            fs.rmdirSync(child)
          } catch {
            /* a process still in it: left for the system */
          }
        }
      }
    } catch {
      try {
        fs.rmdirSync(child)
      } catch {
        /* never made */
      }
    }
  }
  return undefined
}
