// The deployment examples say what the README promises: probes, secrets, a writable state volume, no root.

import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseAllDocuments, parse } from 'yaml'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')

interface Container {
  name: string
  restartPolicy?: string
  env?: Array<{ name: string, value?: string }>
  ports?: Array<{ name?: string, containerPort: number }>
  livenessProbe?: { httpGet?: { path: string, port: string | number } }
  readinessProbe?: { httpGet?: { path: string, port: string | number } }
  securityContext?: { readOnlyRootFilesystem?: boolean }
  volumeMounts?: Array<{ name: string, mountPath: string, readOnly?: boolean }>
}

t.test('Kubernetes example: proxy sidecar with probes, Secrets, a writable persistent state volume', async (t) => {
  const documents = parseAllDocuments(fs.readFileSync(path.join(ROOT, 'deploy/kubernetes.yaml'), 'utf8')).map((document) => document.toJS() as Record<string, unknown>)
  const kinds = documents.map((document) => document.kind)
  t.same(kinds.sort(), ['Deployment', 'NetworkPolicy', 'PersistentVolumeClaim', 'Secret', 'Secret'])
  const deployment = documents.find((document) => document.kind === 'Deployment') as { spec: { template: { spec: Record<string, unknown> } } }
  const pod = deployment.spec.template.spec as { initContainers: Container[], containers: Container[], volumes: Array<Record<string, unknown>>, securityContext: { runAsNonRoot: boolean }, enableServiceLinks?: boolean }
  t.equal(pod.securityContext.runAsNonRoot, true)
  // A Service named m2m-proxy would otherwise inject M2M_PROXY_PORT=tcp://ip:port, which the proxy refuses.
  t.equal(pod.enableServiceLinks, false, 'no Kubernetes service links in the environment')
  const proxy = pod.initContainers.find((container) => container.name === 'm2m-session-proxy')
  t.ok(proxy, 'the proxy is a sidecar')
  t.equal(proxy?.restartPolicy, 'Always', 'a native sidecar')
  t.equal(proxy?.livenessProbe?.httpGet?.path, '/healthz')
  t.equal(proxy?.readinessProbe?.httpGet?.path, '/readyz')
  t.equal(proxy?.securityContext?.readOnlyRootFilesystem, true)
  const env = Object.fromEntries((proxy?.env ?? []).map((entry) => [entry.name, entry.value]))
  const stateMount = proxy?.volumeMounts?.find((mount) => env.M2M_PROXY_CREDENTIALS_FILE?.startsWith(mount.mountPath + '/'))
  t.ok(stateMount !== undefined && stateMount.readOnly !== true, 'the credentials file is on a writable mount')
  const stateVolume = pod.volumes.find((volume) => volume.name === stateMount?.name)
  t.ok(stateVolume?.persistentVolumeClaim, 'which is persistent (rotation must survive the pod)')
  const tokenMount = proxy?.volumeMounts?.find((mount) => env.M2M_PROXY_ADMIN_TOKEN_FILE?.startsWith(mount.mountPath + '/'))
  t.equal(tokenMount?.readOnly, true)
  t.ok(pod.volumes.find((volume) => volume.name === tokenMount?.name)?.secret, 'admin token from a Secret')
  const seed = pod.initContainers[0]
  t.equal(seed?.name, 'seed-credentials', 'credentials are seeded from the Secret before the proxy starts')
  const client = pod.containers[0]
  t.match(client?.env?.find((entry) => entry.name === 'THINGSPACE_BASE_URL')?.value, /^http:\/\/127\.0\.0\.1:8080$/)
})

interface NetworkPolicyPeer { podSelector?: unknown, namespaceSelector?: unknown, ipBlock?: unknown }
interface NetworkPolicy {
  spec: {
    podSelector?: { matchLabels?: Record<string, string> }
    policyTypes?: string[]
    ingress?: Array<{ from?: NetworkPolicyPeer[], ports?: Array<{ port?: string | number, protocol?: string, endPort?: number }> }>
  }
}

t.test('Kubernetes example: the proxy listener on loopback, a NetworkPolicy admitting only the admin port', async (t) => {
  const documents = parseAllDocuments(fs.readFileSync(path.join(ROOT, 'deploy/kubernetes.yaml'), 'utf8')).map((document) => document.toJS() as Record<string, unknown>)
  const deployment = documents.find((document) => document.kind === 'Deployment') as { spec: { template: { metadata: { labels: Record<string, string> }, spec: { initContainers: Container[] } } } }
  const proxy = deployment.spec.template.spec.initContainers.find((container) => container.name === 'm2m-session-proxy')
  const env = Object.fromEntries((proxy?.env ?? []).map((entry) => [entry.name, entry.value]))
  // Set in the manifest itself: an image built before the loopback default would otherwise bind 0.0.0.0.
  t.equal(env.M2M_PROXY_HOST, '127.0.0.1', 'the proxy listener binds to 127.0.0.1 (the client shares the pod)')
  t.equal(env.M2M_PROXY_ADMIN_HOST, '0.0.0.0', 'the admin listener is reachable by pod IP, for probes')
  const adminPort = Number(env.M2M_PROXY_ADMIN_PORT ?? 9090)
  const declared = proxy?.ports ?? []
  t.same(declared.map((port) => port.containerPort), [adminPort], 'only the admin port is declared')
  const named = new Map(declared.filter((port) => port.name !== undefined).map((port) => [port.name, port.containerPort]))
  for (const probe of ['livenessProbe', 'readinessProbe', 'startupProbe'] as const) {
    const port = (proxy as Record<string, { httpGet?: { port: string | number } } | undefined> | undefined)?.[probe]?.httpGet?.port
    t.equal(typeof port === 'string' ? named.get(port) : port, adminPort, `${probe} on the admin port`)
  }

  const policies = documents.filter((document) => document.kind === 'NetworkPolicy') as unknown as NetworkPolicy[]
  t.equal(policies.length, 1, 'a NetworkPolicy ships with the example')
  const policy = policies[0]
  const selector = policy?.spec.podSelector?.matchLabels ?? {}
  const podLabels = deployment.spec.template.metadata.labels
  t.ok(Object.keys(selector).length > 0, 'it selects particular pods, not the whole namespace')
  t.ok(Object.entries(selector).every(([key, value]) => podLabels[key] === value), 'it selects the proxy pod')
  t.ok(policy?.spec.policyTypes?.includes('Ingress'), 'it isolates the pod for ingress')
  const rules = policy?.spec.ingress ?? []
  t.ok(rules.length > 0, 'it admits the scraper to the admin port')
  for (const rule of rules) {
    // A rule without ports admits every port, a rule without peers every source.
    t.ok((rule.ports ?? []).length > 0, 'each rule names its ports')
    for (const port of rule.ports ?? []) {
      const number = typeof port.port === 'string' ? named.get(port.port) : port.port
      t.equal(number, adminPort, `admits port ${String(port.port)}: the admin port only`)
      t.equal(port.endPort, undefined, 'no port range')
    }
    t.ok((rule.from ?? []).length > 0, 'each rule names who may connect')
  }
})

t.test('docker compose example: read-only proxy with a state volume, a legacy client waiting for it', async (t) => {
  const compose = parse(fs.readFileSync(path.join(ROOT, 'deploy/docker-compose.yml'), 'utf8')) as { services: Record<string, Record<string, unknown>>, volumes: Record<string, unknown> }
  const proxy = compose.services['m2m-session-proxy'] as { read_only: boolean, volumes: string[], environment: Record<string, string>, build: string }
  t.equal(proxy.read_only, true)
  t.equal(proxy.build, '..')
  t.ok(proxy.volumes.some((volume) => volume.startsWith('m2m-state:/var/lib/m2m-session-proxy')))
  t.equal(proxy.environment.M2M_PROXY_CREDENTIALS_FILE, '/var/lib/m2m-session-proxy/credentials.json')
  t.ok('m2m-state' in compose.volumes)
  const client = compose.services['legacy-client'] as { depends_on: Record<string, { condition: string }>, environment: Record<string, string> }
  t.equal(client.depends_on['m2m-session-proxy']?.condition, 'service_healthy')
  t.equal(client.environment.THINGSPACE_BASE_URL, 'http://m2m-session-proxy:8080')
})

t.test('docker compose example: the proxy listener open to the client container only, not published on the host', async (t) => {
  const compose = parse(fs.readFileSync(path.join(ROOT, 'deploy/docker-compose.yml'), 'utf8')) as { services: Record<string, Record<string, unknown>> }
  const proxy = compose.services['m2m-session-proxy'] as { environment: Record<string, string>, ports?: string[] }
  const client = compose.services['legacy-client'] as { environment: Record<string, string> }
  t.equal(proxy.environment.M2M_PROXY_HOST, '0.0.0.0', 'the client is another container: the image\'s loopback default is overridden on purpose')
  const clientHost = new URL(client.environment.THINGSPACE_BASE_URL ?? '').hostname
  t.ok((proxy.environment.M2M_PROXY_ALLOWED_HOSTS ?? '').split(',').map((host) => host.trim()).includes(clientHost), `the Host header ${clientHost} is accepted`)
  const proxyPort = proxy.environment.M2M_PROXY_PORT ?? '8080'
  for (const mapping of proxy.ports ?? []) {
    t.not(String(mapping).split(':').at(-1)?.split('/')[0], proxyPort, `${mapping} does not publish the proxy port`)
    t.match(String(mapping), /^127\.0\.0\.1:/, `${mapping} is bound to the host's loopback`)
  }
})
