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
  livenessProbe?: { httpGet?: { path: string, port: string | number } }
  readinessProbe?: { httpGet?: { path: string, port: string | number } }
  securityContext?: { readOnlyRootFilesystem?: boolean }
  volumeMounts?: Array<{ name: string, mountPath: string, readOnly?: boolean }>
}

t.test('Kubernetes example: proxy sidecar with probes, Secrets, a writable persistent state volume', async (t) => {
  const documents = parseAllDocuments(fs.readFileSync(path.join(ROOT, 'deploy/kubernetes.yaml'), 'utf8')).map((document) => document.toJS() as Record<string, unknown>)
  const kinds = documents.map((document) => document.kind)
  t.same(kinds.sort(), ['Deployment', 'PersistentVolumeClaim', 'Secret', 'Secret'])
  const deployment = documents.find((document) => document.kind === 'Deployment') as { spec: { template: { spec: Record<string, unknown> } } }
  const pod = deployment.spec.template.spec as { initContainers: Container[], containers: Container[], volumes: Array<Record<string, unknown>>, securityContext: { runAsNonRoot: boolean } }
  t.equal(pod.securityContext.runAsNonRoot, true)
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
