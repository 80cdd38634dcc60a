// A private redis-server for `npm run soak`'s fleet round: its own free port, no persistence, stopped
// with SIGTERM and started again on the same port (a Redis restart that loses every key). Never the
// machine's own Redis.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import { clearTimeout } from 'node:timers'
import { setTimeout as sleep } from 'node:timers/promises'

export const REDIS_SERVER = process.env.SOAK_REDIS_SERVER ?? '/usr/bin/redis-server'

export const redisServerAvailable = () => {
  try {
    fs.accessSync(REDIS_SERVER, fs.constants.X_OK)
    return true
  } catch {
    return false
  }
}

async function freePort () {
  const server = net.createServer()
  await new Promise((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve))
  const { port } = server.address()
  await new Promise((resolve) => server.close(resolve))
  return port
}

/** One PING over a raw socket: true when the server answers +PONG within timeoutMs. */
async function pings (port, timeoutMs = 500) {
  return await new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port })
    let answer = ''
    const done = (ok) => { socket.destroy(); clearTimeout(timer); resolve(ok) }
    const timer = setTimeout(() => done(false), timeoutMs)
    socket.on('connect', () => socket.write('PING\r\n'))
    socket.on('data', (chunk) => { answer += chunk.toString(); if (answer.includes('\r\n')) done(answer.startsWith('+PONG')) })
    socket.on('error', () => done(false))
  })
}

/**
 * Starts redis-server on a free port of 127.0.0.1 (`--save '' --appendonly no`). `onChild` is told of
 * every process started (for the caller's clean-up). Returns { port, url, stop(), start() }.
 */
export async function startPrivateRedis ({ dir, onChild = () => {} }) {
  const port = await freePort()
  let child
  const start = async () => {
    child = spawn(REDIS_SERVER, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' })
    onChild(child)
    let exited = false
    child.once('exit', () => { exited = true })
    for (let i = 0; i < 100; i++) {
      if (exited) throw new Error(`redis-server on port ${port} exited at start`)
      if (await pings(port)) return
      await sleep(50)
    }
    throw new Error(`redis-server on port ${port} did not answer PING within 5 s`)
  }
  const stop = async () => {
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGTERM')
    const stopped = await Promise.race([exited.then(() => true), sleep(5000).then(() => false)])
    if (!stopped) { child.kill('SIGKILL'); await exited }
  }
  await start()
  return { port, url: `redis://127.0.0.1:${port}`, start, stop }
}
