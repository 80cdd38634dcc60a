// Redis helpers for `npm run bench`'s fleet-mode rounds: is a Redis there, which commands did the proxy send it during
// the measured load, and removal of the keys the run wrote. Plain node-redis clients; nothing here is on the proxy's
// path.
import fs from 'node:fs'
import { createClient } from '@redis/client'

/** The URL without its user and password, for messages. */
export function shownUrl (url) {
  try {
    const parsed = new URL(url)
    parsed.username = ''
    parsed.password = ''
    return parsed.toString().replace(/\/$/, '')
  } catch {
    return '(an unparseable URL)'
  }
}

async function connected (url) {
  const client = createClient({ url, socket: { connectTimeout: 1000, reconnectStrategy: false } })
  client.on('error', () => {}) // a failed connect rejects connect(); nothing more to report
  await client.connect()
  return client
}

function closeQuietly (client) {
  try {
    if (client?.isOpen) client.destroy()
  } catch {
    // already gone
  }
}

/** undefined when a Redis answers PING at `url`, else why not. */
export async function redisProblem (url) {
  let client
  try {
    client = await connected(url)
    await client.ping()
    return undefined
  } catch (error) {
    return (error instanceof Error ? error.message || error.name : String(error)).split(url).join(shownUrl(url))
  } finally {
    closeQuietly(client)
  }
}

/**
 * Local ports of the TCP connections process `pid` holds to remote port `remotePort` (from /proc: its socket inodes,
 * then the TCP tables).
 */
function localPortsTo (pid, remotePort) {
  const ports = new Set()
  try {
    const inodes = new Set()
    for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
      try {
        const match = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`))
        if (match !== null) inodes.add(match[1])
      } catch {
        // closed meanwhile
      }
    }
    for (const table of ['tcp', 'tcp6']) {
      let text
      try {
        text = fs.readFileSync(`/proc/${pid}/net/${table}`, 'utf8')
      } catch {
        continue
      }
      for (const line of text.split('\n').slice(1)) {
        const fields = line.trim().split(/\s+/)
        if (fields.length < 10 || !inodes.has(fields[9])) continue
        if (parseInt(fields[2].split(':')[1], 16) === remotePort) ports.add(parseInt(fields[1].split(':')[1], 16))
      }
    }
  } catch {
    // no /proc: the count by connection stays empty and says so
  }
  return ports
}

/** `INFO commandstats` as a map of command name to calls. */
function commandCalls (info) {
  const calls = new Map()
  for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) calls.set(match[1], Number(match[2]))
  return calls
}

/**
 * Starts counting the commands Redis receives: every command, by the client connection that sent it (MONITOR), and the
 * server's own per-command totals (INFO commandstats, which include every other client of this Redis). stop() returns
 * { proxy, server, proxyConnections }: the commands from the connections process `pid` holds to this Redis (read at
 * start and at stop, so that a reconnect during the load is counted too) and the server-wide difference, without the
 * bench's own INFO; each a Map of command name to count.
 */
export async function startCommandCount (url, pid) {
  const redisPort = Number(new URL(url).port || 6379)
  const portsAtStart = localPortsTo(pid, redisPort)
  /** client port -> command -> count, for every client: which ports are the proxy's is settled at stop. */
  const byPort = new Map()
  const monitor = await connected(url)
  await monitor.monitor((line) => {
    const match = /^[\d.]+ \[\d+ [^\]]*?:(\d+)\] "([^"]*)"/.exec(String(line))
    if (match === null) return
    const port = Number(match[1])
    const command = match[2].toLowerCase()
    let commands = byPort.get(port)
    if (commands === undefined) byPort.set(port, (commands = new Map()))
    commands.set(command, (commands.get(command) ?? 0) + 1)
  })
  const info = await connected(url)
  const before = commandCalls(await info.info('commandstats'))
  return {
    async stop () {
      const after = commandCalls(await info.info('commandstats'))
      await new Promise((resolve) => setTimeout(resolve, 100)) // the last MONITOR lines in flight
      closeQuietly(info)
      closeQuietly(monitor)
      const server = new Map()
      for (const [command, calls] of after) {
        // The "before" INFO is counted in "after"; the "after" INFO is not yet counted in itself.
        const difference = calls - (before.get(command) ?? 0) - (command === 'info' ? 1 : 0)
        if (difference > 0) server.set(command, difference)
      }
      const proxyPorts = new Set([...portsAtStart, ...localPortsTo(pid, redisPort)])
      const proxy = new Map()
      for (const port of proxyPorts) {
        for (const [command, count] of byPort.get(port) ?? []) proxy.set(command, (proxy.get(command) ?? 0) + count)
      }
      return { proxy, server, proxyConnections: proxyPorts.size }
    }
  }
}

/** Deletes every key under `prefix` (SCAN, then UNLINK); returns how many. */
export async function deleteKeys (url, prefix) {
  const client = await connected(url)
  try {
    const pattern = `${prefix.replace(/[*?[\]\\]/g, (character) => `\\${character}`)}*`
    let deleted = 0
    for await (const keys of client.scanIterator({ MATCH: pattern, COUNT: 1000 })) {
      if (keys.length > 0) deleted += await client.unlink(keys)
    }
    return deleted
  } finally {
    closeQuietly(client)
  }
}

/** "3 (2 hgetall, 1 set)" from a Map of command name to count; "0" when empty. */
export function describeCommands (commands) {
  const total = [...commands.values()].reduce((sum, count) => sum + count, 0)
  if (total === 0) return '0'
  const parts = [...commands].sort((a, b) => b[1] - a[1]).map(([command, count]) => `${count} ${command}`)
  return `${total} (${parts.join(', ')})`
}
