// The deployment examples say what the README promises: probes, secrets, a writable state volume, no root;
// and in fleet mode, replicas sharing one Redis and one fleet key from Secrets, each with its own state.

import t from 'tap'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { parseAllDocuments, parse } from 'yaml'
import { createConfig, KNOWN_ENV_NAMES } from '../../src/config/load.js'
import { ROOT } from '../helpers/root.js'

interface EnvEntry {
  name: string
  value?: string
  valueFrom?: { secretKeyRef?: { name: string; key: string }; configMapKeyRef?: unknown; fieldRef?: unknown }
}

interface Container {
  name: string
  restartPolicy?: string
  env?: EnvEntry[]
  ports?: Array<{ name?: string; containerPort: number }>
  livenessProbe?: { httpGet?: { path: string; port: string | number } }
  readinessProbe?: { httpGet?: { path: string; port: string | number } }
  securityContext?: { readOnlyRootFilesystem?: boolean }
  volumeMounts?: Array<{ name: string; mountPath: string; readOnly?: boolean }>
}

t.test('Kubernetes example: proxy sidecar with probes, Secrets, a writable per-pod state volume', async (t) => {
  const documents = parseAllDocuments(fs.readFileSync(path.join(ROOT, 'deploy/kubernetes.yaml'), 'utf8')).map(
    (document) => document.toJS() as Record<string, unknown>
  )
  const kinds = documents.map((document) => document.kind)
  // Credentials, admin token, Redis URL, fleet key, callback credentials; the callback inbox's Service and Ingress.
  // No PersistentVolumeClaim since fleet mode: see below.
  t.same(kinds.sort(), ['Deployment', 'Ingress', 'NetworkPolicy', 'Secret', 'Secret', 'Secret', 'Secret', 'Secret', 'Service'])
  const deployment = documents.find((document) => document.kind === 'Deployment') as {
    spec: { replicas?: number; template: { spec: Record<string, unknown> } }
  }
  const pod = deployment.spec.template.spec as {
    initContainers: Container[]
    containers: Container[]
    volumes: Array<Record<string, unknown>>
    securityContext: { runAsNonRoot: boolean }
    enableServiceLinks?: boolean
  }
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
  const stateMount = proxy?.volumeMounts?.find((mount) =>
    env.M2M_PROXY_CREDENTIALS_FILE?.startsWith(mount.mountPath + '/')
  )
  t.ok(stateMount !== undefined && stateMount.readOnly !== true, 'the credentials file is on a writable mount')
  const stateVolume = pod.volumes.find((volume) => volume.name === stateMount?.name)
  // The example runs several replicas in fleet mode. One claim for all of them would not do (they would share
  // one login-guard.json and one credentials file, and a ReadWriteOnce claim binds one node), so each pod has
  // its own emptyDir: the lockout count that must outlive a pod and the rotated password are kept in Redis.
  t.ok(
    (proxy?.env ?? []).some((entry) => entry.name === 'M2M_PROXY_REDIS_URL'),
    'the example is in fleet mode'
  )
  t.ok(stateVolume?.emptyDir, 'the state volume is per pod (an emptyDir): Redis keeps what must outlive the pod')
  t.notOk(stateVolume?.persistentVolumeClaim, 'not one claim shared by every replica')
  const tokenMount = proxy?.volumeMounts?.find((mount) =>
    env.M2M_PROXY_ADMIN_TOKEN_FILE?.startsWith(mount.mountPath + '/')
  )
  t.equal(tokenMount?.readOnly, true)
  t.ok(pod.volumes.find((volume) => volume.name === tokenMount?.name)?.secret, 'admin token from a Secret')
  const seed = pod.initContainers[0]
  t.equal(seed?.name, 'seed-credentials', 'credentials are seeded from the Secret before the proxy starts')
  const client = pod.containers[0]
  t.match(client?.env?.find((entry) => entry.name === 'THINGSPACE_BASE_URL')?.value, /^http:\/\/127\.0\.0\.1:8080$/)
})

interface NetworkPolicyPeer {
  podSelector?: unknown
  namespaceSelector?: unknown
  ipBlock?: unknown
}
interface NetworkPolicy {
  spec: {
    podSelector?: { matchLabels?: Record<string, string> }
    policyTypes?: string[]
    ingress?: Array<{
      from?: NetworkPolicyPeer[]
      ports?: Array<{ port?: string | number; protocol?: string; endPort?: number }>
    }>
  }
}

t.test(
  'Kubernetes example: the proxy listener on loopback; only the admin port (scraper) and the callback port (ingress)',
  async (t) => {
    const documents = parseAllDocuments(fs.readFileSync(path.join(ROOT, 'deploy/kubernetes.yaml'), 'utf8')).map(
      (document) => document.toJS() as Record<string, unknown>
    )
    const deployment = documents.find((document) => document.kind === 'Deployment') as {
      spec: { template: { metadata: { labels: Record<string, string> }; spec: { initContainers: Container[] } } }
    }
    const proxy = deployment.spec.template.spec.initContainers.find(
      (container) => container.name === 'm2m-session-proxy'
    )
    const env = Object.fromEntries((proxy?.env ?? []).map((entry) => [entry.name, entry.value]))
    // Set in the manifest itself: an image built before the loopback default would otherwise bind 0.0.0.0.
    t.equal(env.M2M_PROXY_HOST, '127.0.0.1', 'the proxy listener binds to 127.0.0.1 (the client shares the pod)')
    t.equal(env.M2M_PROXY_ADMIN_HOST, '0.0.0.0', 'the admin listener is reachable by pod IP, for probes')
    const adminPort = Number(env.M2M_PROXY_ADMIN_PORT ?? 9090)
    const callbackPort = Number(env.M2M_PROXY_CALLBACK_PORT)
    t.equal(env.M2M_PROXY_CALLBACK_HOST, '0.0.0.0', 'the callback listener is reachable by pod IP, for the ingress')
    const declared = proxy?.ports ?? []
    t.same(
      declared.map((port) => port.containerPort),
      [adminPort, callbackPort],
      'only the admin and callback ports are declared'
    )
    const named = new Map(
      declared.filter((port) => port.name !== undefined).map((port) => [port.name, port.containerPort])
    )
    for (const probe of ['livenessProbe', 'readinessProbe', 'startupProbe'] as const) {
      const port = (proxy as Record<string, { httpGet?: { port: string | number } } | undefined> | undefined)?.[probe]
        ?.httpGet?.port
      t.equal(typeof port === 'string' ? named.get(port) : port, adminPort, `${probe} on the admin port`)
    }

    const policies = documents.filter((document) => document.kind === 'NetworkPolicy') as unknown as NetworkPolicy[]
    t.equal(policies.length, 1, 'a NetworkPolicy ships with the example')
    const policy = policies[0]
    const selector = policy?.spec.podSelector?.matchLabels ?? {}
    const podLabels = deployment.spec.template.metadata.labels
    t.ok(Object.keys(selector).length > 0, 'it selects particular pods, not the whole namespace')
    t.ok(
      Object.entries(selector).every(([key, value]) => podLabels[key] === value),
      'it selects the proxy pod'
    )
    t.ok(policy?.spec.policyTypes?.includes('Ingress'), 'it isolates the pod for ingress')
    const rules = policy?.spec.ingress ?? []
    t.equal(rules.length, 2, 'it admits the scraper to the admin port, the ingress controller to the callback port')
    const admitted = new Map<number, unknown>()
    for (const rule of rules) {
      // A rule without ports admits every port, a rule without peers every source.
      t.ok((rule.ports ?? []).length > 0, 'each rule names its ports')
      for (const port of rule.ports ?? []) {
        const number = typeof port.port === 'string' ? named.get(port.port) : port.port
        t.ok(number === adminPort || number === callbackPort, `admits port ${String(port.port)}: admin or callbacks only`)
        t.equal(port.endPort, undefined, 'no port range')
        admitted.set(Number(number), rule.from)
      }
      t.ok((rule.from ?? []).length > 0, 'each rule names who may connect')
    }
    t.match(admitted.get(adminPort), [{ podSelector: { matchLabels: { 'app.kubernetes.io/name': 'prometheus' } } }])
    const fromIngressNamespace = { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'ingress-nginx' } } }
    t.same(admitted.get(callbackPort), [fromIngressNamespace], 'the callback port from the ingress controller only')

    // From outside: the Ingress (TLS) to the Service to the callback port, and nothing else of the pod.
    const service = documents.find((document) => document.kind === 'Service') as {
      metadata: { name: string }
      spec: { selector: Record<string, string>; ports: Array<{ port: number; targetPort: string | number }> }
    }
    t.same(service.spec.selector, podLabels, 'the Service selects every replica')
    t.same(service.spec.ports.map((port) => named.get(String(port.targetPort)) ?? port.targetPort), [callbackPort])
    const ingress = documents.find((document) => document.kind === 'Ingress') as {
      spec: {
        tls: Array<{ hosts: string[] }>
        rules: Array<{ host: string; http: { paths: Array<{ backend: { service: { name: string } } }> } }>
      }
    }
    const backends = ingress.spec.rules.flatMap((rule) => rule.http.paths.map((entry) => entry.backend.service))
    t.same(backends.map((backend) => backend.name), [service.metadata.name], 'the Ingress reaches only that Service')
    const publicUrl = new URL(env.M2M_PROXY_CALLBACK_PUBLIC_URL ?? '')
    t.equal(publicUrl.protocol, 'https:', 'ThingSpace calls over TLS')
    t.same(ingress.spec.tls.flatMap((entry) => entry.hosts), [publicUrl.hostname], 'TLS for the public name')
    t.same(ingress.spec.rules.map((rule) => rule.host), [publicUrl.hostname])
  }
)

t.test('docker compose example: read-only proxy with a state volume, a legacy client waiting for it', async (t) => {
  const compose = parse(fs.readFileSync(path.join(ROOT, 'deploy/docker-compose.yml'), 'utf8')) as {
    services: Record<string, Record<string, unknown>>
    volumes: Record<string, unknown>
  }
  const proxy = compose.services['m2m-session-proxy'] as {
    read_only: boolean
    volumes: string[]
    environment: Record<string, string>
    build: string
  }
  t.equal(proxy.read_only, true)
  t.equal(proxy.build, '..')
  t.ok(proxy.volumes.some((volume) => volume.startsWith('m2m-state:/var/lib/m2m-session-proxy')))
  t.equal(proxy.environment.M2M_PROXY_CREDENTIALS_FILE, '/var/lib/m2m-session-proxy/credentials.json')
  t.ok('m2m-state' in compose.volumes)
  const client = compose.services['legacy-client'] as {
    depends_on: Record<string, { condition: string }>
    environment: Record<string, string>
  }
  t.equal(client.depends_on['m2m-session-proxy']?.condition, 'service_healthy')
  t.equal(client.environment.THINGSPACE_BASE_URL, 'http://m2m-session-proxy:8080')
})

t.test(
  'docker compose example: the proxy listener open to the client container only, not published on the host',
  async (t) => {
    const compose = parse(fs.readFileSync(path.join(ROOT, 'deploy/docker-compose.yml'), 'utf8')) as {
      services: Record<string, Record<string, unknown>>
    }
    const proxy = compose.services['m2m-session-proxy'] as { environment: Record<string, string>; ports?: string[] }
    const client = compose.services['legacy-client'] as { environment: Record<string, string> }
    t.equal(
      proxy.environment.M2M_PROXY_HOST,
      '0.0.0.0',
      "the client is another container: the image's loopback default is overridden on purpose"
    )
    const clientHost = new URL(client.environment.THINGSPACE_BASE_URL ?? '').hostname
    t.ok(
      (proxy.environment.M2M_PROXY_ALLOWED_HOSTS ?? '')
        .split(',')
        .map((host) => host.trim())
        .includes(clientHost),
      `the Host header ${clientHost} is accepted`
    )
    const proxyPort = proxy.environment.M2M_PROXY_PORT ?? '8080'
    for (const mapping of proxy.ports ?? []) {
      t.not(String(mapping).split(':').at(-1)?.split('/')[0], proxyPort, `${mapping} does not publish the proxy port`)
      t.match(String(mapping), /^127\.0\.0\.1:/, `${mapping} is bound to the host's loopback`)
    }
  }
)

// Fleet mode (issue 13): several replicas share one session, one lockout budget and one password through Redis.

interface SecretDocument {
  kind: 'Secret'
  metadata: { name: string }
  stringData?: Record<string, string>
  data?: Record<string, string>
}
interface Volume {
  name: string
  secret?: { secretName: string; defaultMode?: number; items?: Array<{ key: string; path: string; mode?: number }> }
  emptyDir?: unknown
  persistentVolumeClaim?: unknown
}
interface PodSpec {
  initContainers?: Container[]
  containers: Container[]
  volumes: Volume[]
}
interface DeploymentDocument {
  kind: 'Deployment'
  spec: { replicas?: number; template: { spec: PodSpec } }
}

/** Read as Kubernetes reads YAML (1.1): `defaultMode: 0400` is octal there, 400 decimal in YAML 1.2. */
function kubernetesFleet (): {
  deployment: DeploymentDocument
  pod: PodSpec
  proxy: Container | undefined
  secrets: Map<string, SecretDocument>
} {
  const documents = parseAllDocuments(fs.readFileSync(path.join(ROOT, 'deploy/kubernetes.yaml'), 'utf8'), {
    version: '1.1'
  }).map((document) => document.toJS() as { kind?: string })
  const deployment = documents.find((document) => document.kind === 'Deployment') as DeploymentDocument
  const pod = deployment.spec.template.spec
  const proxy = pod.initContainers?.find((container) => container.name === 'm2m-session-proxy')
  const secrets = new Map(
    (documents.filter((document) => document.kind === 'Secret') as SecretDocument[]).map((secret) => [
      secret.metadata.name,
      secret
    ])
  )
  return { deployment, pod, proxy, secrets }
}

function secretValue (secret: SecretDocument | undefined, key: string): string | undefined {
  const plain = secret?.stringData?.[key]
  if (plain !== undefined) return plain
  const encoded = secret?.data?.[key]
  return encoded === undefined ? undefined : Buffer.from(encoded, 'base64').toString('utf8')
}

/** The files a Secret volume mounted at `mountPath` shows, by absolute path. */
function secretFiles (
  volume: Volume,
  mountPath: string,
  secrets: Map<string, SecretDocument>
): Map<string, { text: string | undefined; mode: number }> {
  const files = new Map<string, { text: string | undefined; mode: number }>()
  if (volume.secret === undefined) return files
  const secret = secrets.get(volume.secret.secretName)
  const defaultMode = volume.secret.defaultMode ?? 0o644
  const items =
    volume.secret.items ??
    Object.keys({ ...secret?.data, ...secret?.stringData }).map((key) => ({ key, path: key, mode: undefined }))
  for (const item of items) {
    files.set(path.posix.join(mountPath, item.path), {
      text: secretValue(secret, item.key),
      mode: item.mode ?? defaultMode
    })
  }
  return files
}

const REDIS_URL_WITH_USER_INFO = /rediss?:\/\/[^/\s]*@/i

t.test('Kubernetes example: a fleet of replicas, the Redis URL and the fleet key from Secrets', async (t) => {
  const { deployment, pod, proxy, secrets } = kubernetesFleet()
  t.ok(
    (deployment.spec.replicas ?? 1) > 1,
    `several replicas of the client, each with its proxy (replicas: ${deployment.spec.replicas})`
  )
  const env = proxy?.env ?? []
  const entry = (name: string): EnvEntry | undefined => env.find((candidate) => candidate.name === name)

  // The Redis URL may carry user:password: from a Secret, never written in the Deployment.
  const redis = entry('M2M_PROXY_REDIS_URL')
  t.ok(redis, 'M2M_PROXY_REDIS_URL is set: fleet mode')
  t.equal(redis?.value, undefined, 'the Redis URL is not a literal in the Deployment')
  const reference = redis?.valueFrom?.secretKeyRef
  t.ok(reference, 'it comes from a secretKeyRef')
  const url = reference === undefined ? undefined : secretValue(secrets.get(reference.name), reference.key)
  t.type(url, 'string', `the Secret ${reference?.name} in the example has the key ${reference?.key}`)
  t.match(url === undefined ? '' : new URL(url).protocol, /^rediss?:$/, 'a redis:// or rediss:// URL')
  const literals = [...(pod.initContainers ?? []), ...pod.containers].flatMap((container) =>
    (container.env ?? [])
      .filter((candidate) => REDIS_URL_WITH_USER_INFO.test(candidate.value ?? ''))
      .map((candidate) => `${container.name}: ${candidate.name}`)
  )
  t.same(literals, [], 'no container has a literal Redis URL with user info')

  // The fleet key as a file from a read-only Secret mount, not a literal.
  t.equal(entry('M2M_PROXY_FLEET_KEY'), undefined, 'the fleet key is not in the environment')
  const keyFile = entry('M2M_PROXY_FLEET_KEY_FILE')?.value
  t.type(keyFile, 'string', 'M2M_PROXY_FLEET_KEY_FILE is set')
  const mount = proxy?.volumeMounts?.find((candidate) => keyFile?.startsWith(candidate.mountPath + '/'))
  t.ok(mount, "the fleet key file is under one of the proxy's mounts")
  t.equal(mount?.readOnly, true, 'mounted read-only')
  const volume = pod.volumes.find((candidate) => candidate.name === mount?.name)
  t.ok(volume?.secret, 'from a Secret volume')
  const file =
    volume === undefined || mount === undefined
      ? undefined
      : secretFiles(volume, mount.mountPath, secrets).get(keyFile ?? '')
  t.type(file?.text, 'string', `the Secret ${volume?.secret?.secretName} in the example holds ${keyFile}`)
  t.match(
    file?.text ?? '',
    /^(REPLACE-with-output-of-openssl-rand-hex-32|[0-9a-f]{64})$/,
    'a placeholder saying how to make the key'
  )
  const mode = file?.mode ?? 0o644
  t.equal(mode & 0o222, 0, `no write bit (mode 0${mode.toString(8)})`)
  t.equal(mode & 0o007, 0, `not readable by others (mode 0${mode.toString(8)})`)
  t.notSame(
    secrets.get(volume?.secret?.secretName ?? ''),
    secrets.get(reference?.name ?? ''),
    'the key and the Redis URL are in Secrets of their own'
  )
})

t.test('Kubernetes example: the proxy accepts the fleet settings as written, Secrets resolved', async (t) => {
  const { pod, proxy, secrets } = kubernetesFleet()
  const env: NodeJS.ProcessEnv = {}
  for (const entry of proxy?.env ?? []) {
    const reference = entry.valueFrom?.secretKeyRef
    env[entry.name] =
      entry.value ?? (reference === undefined ? undefined : secretValue(secrets.get(reference.name), reference.key))
  }
  const files = new Map<string, string | undefined>()
  for (const mount of proxy?.volumeMounts ?? []) {
    const volume = pod.volumes.find((candidate) => candidate.name === mount.name)
    if (volume !== undefined) {
      for (const [file, { text }] of secretFiles(volume, mount.mountPath, secrets)) files.set(file, text)
    }
  }
  // The example's placeholder is not a key; an operator puts the output of `openssl rand -hex 32` there.
  const keyFile = env.M2M_PROXY_FLEET_KEY_FILE ?? ''
  if (files.get(keyFile)?.startsWith('REPLACE') === true) files.set(keyFile, randomBytes(32).toString('hex') + '\n')
  const config = createConfig({
    env,
    cwd: '/',
    readTextFile: (file) => {
      const text = files.get(file)
      if (text === undefined) throw Object.assign(new Error(`ENOENT: ${file}`), { code: 'ENOENT' })
      return text
    }
  })
  t.ok(config.fleet, 'fleet mode')
  t.match(config.callbacks, { port: 9001, credentials: { username: 'thingspace-callbacks' }, publicUrl: 'https://callbacks.example.com' },
    'the callback inbox on, its credentials from the Secret (required in fleet mode)')
  t.equal(config.fleet?.fleetKey.length, 32)
  t.equal(config.fleet?.redisUrl, env.M2M_PROXY_REDIS_URL)
  t.equal(config.host, '127.0.0.1')
})

interface ComposeService {
  build?: unknown
  image?: string
  read_only?: boolean
  environment?: Record<string, string | number | boolean | null> | string[]
  volumes?: Array<string | { type?: string; source?: string; target: string; read_only?: boolean }>
  secrets?: Array<string | { source: string; target?: string }>
  ports?: Array<string | number | { published?: string | number; target?: number; host_ip?: string }>
  depends_on?: Record<string, { condition?: string }> | string[]
  networks?: string[] | Record<string, unknown>
  network_mode?: string
  command?: string | string[]
}
interface ComposeFile {
  services: Record<string, ComposeService>
  volumes?: Record<string, unknown>
  secrets?: Record<string, { file?: string }>
  networks?: Record<string, { internal?: boolean } | null>
}

/** Compose reads YAML merge keys (`<<: *proxy`); so must the test. */
function readCompose (file: string): { text: string; compose: ComposeFile } {
  const text = fs.readFileSync(path.join(ROOT, file), 'utf8')
  return { text, compose: parse(text, { merge: true }) as ComposeFile }
}

function environmentOf (service: ComposeService): Record<string, string | undefined> {
  const environment = service.environment ?? {}
  if (Array.isArray(environment)) {
    return Object.fromEntries(
      environment.map((item) => {
        const at = item.indexOf('=')
        return at < 0 ? [item, undefined] : [item.slice(0, at), item.slice(at + 1)]
      })
    )
  }
  return Object.fromEntries(
    Object.entries(environment).map(([name, value]) => [name, value === null ? undefined : String(value)])
  )
}

function mountsOf (service: ComposeService): Array<{ source: string; target: string; readOnly: boolean }> {
  return (service.volumes ?? []).map((volume) => {
    if (typeof volume !== 'string') {
      return { source: volume.source ?? '', target: volume.target, readOnly: volume.read_only === true }
    }
    const [source = '', target = '', options = ''] = volume.split(':')
    return { source, target, readOnly: options.split(',').includes('ro') }
  })
}

/** Compose secret targets (absolute paths in the container) and the top-level secret each is. */
function secretTargetsOf (service: ComposeService): Map<string, string> {
  return new Map(
    (service.secrets ?? []).map((secret) => {
      const { source, target } = typeof secret === 'string' ? { source: secret, target: undefined } : secret
      const where = target ?? source
      return [where.startsWith('/') ? where : `/run/secrets/${where}`, source]
    })
  )
}

function networksOf (service: ComposeService): string[] {
  if (service.network_mode !== undefined) return []
  if (service.networks === undefined) return ['default']
  return Array.isArray(service.networks) ? service.networks : Object.keys(service.networks)
}

function dependenciesOf (service: ComposeService): Record<string, string | undefined> {
  const dependsOn = service.depends_on ?? {}
  if (Array.isArray(dependsOn)) return Object.fromEntries(dependsOn.map((name) => [name, 'service_started']))
  return Object.fromEntries(
    Object.entries(dependsOn).map(([name, { condition }]) => [name, condition ?? 'service_started'])
  )
}

t.test(
  'docker compose fleet example: three proxies sharing one Redis and one fleet key, each with its own state',
  async (t) => {
    const { text, compose } = readCompose('deploy/docker-compose.fleet.yml')
    t.match(text, /openssl rand -hex 32 > deploy\/secrets\/fleet-key/, 'the instructions say how to make the fleet key')
    const services = Object.entries(compose.services)
    const proxies = services.filter(
      ([, service]) => service.build === '..' || /^m2m-session-proxy(:|$)/.test(service.image ?? '')
    )
    t.equal(proxies.length, 3, `three proxy replicas (${proxies.map(([name]) => name).join(', ')})`)

    const shared = (name: string): Set<string | undefined> =>
      new Set(proxies.map(([, service]) => environmentOf(service)[name]))
    for (const name of [
      'M2M_PROXY_REDIS_URL',
      'M2M_PROXY_FLEET_KEY_FILE',
      'M2M_PROXY_REDIS_KEY_PREFIX',
      'M2M_PROXY_CREDENTIALS_FILE'
    ]) {
      t.equal(shared(name).size, 1, `${name} is the same on every replica`)
    }
    const [[, first] = ['', {}]] = proxies
    const env = environmentOf(first)

    // One Redis, persistent, reached by the proxies only.
    const redisUrl = new URL(env.M2M_PROXY_REDIS_URL ?? 'missing:')
    t.match(redisUrl.protocol, /^rediss?:$/, 'the proxies have a Redis URL')
    t.equal(redisUrl.password, '', 'no password written in the compose file')
    const redis = compose.services[redisUrl.hostname]
    t.match(redis?.image ?? '', /^redis(:|$)/, `the URL names the compose service ${redisUrl.hostname}, a Redis`)
    const command = Array.isArray(redis?.command) ? redis.command.join(' ') : String(redis?.command ?? '')
    t.match(command, /--appendonly yes/, "Redis persists its data (the fleet's failure count and password generation)")
    const data = mountsOf(redis ?? {}).find((mount) => mount.target === '/data')
    t.ok(data !== undefined && compose.volumes !== undefined && data.source in compose.volumes, 'on a named volume')
    t.same(redis?.ports ?? [], [], 'Redis is not published on the host')
    for (const [name, service] of proxies) {
      t.ok(
        networksOf(service).some((network) => networksOf(redis ?? {}).includes(network)),
        `${name} reaches Redis`
      )
      t.equal(dependenciesOf(service)[redisUrl.hostname], 'service_healthy', `${name} starts once Redis answers`)
    }

    // One fleet key, a compose secret from ./secrets/fleet-key, not in the environment.
    const keyFile = env.M2M_PROXY_FLEET_KEY_FILE ?? ''
    t.match(keyFile, /^\//, 'M2M_PROXY_FLEET_KEY_FILE is set')
    t.equal(
      shared('M2M_PROXY_FLEET_KEY').has(undefined) && shared('M2M_PROXY_FLEET_KEY').size === 1,
      true,
      'no literal fleet key'
    )
    const keySecrets = new Set(proxies.map(([, service]) => secretTargetsOf(service).get(keyFile)))
    t.equal(keySecrets.size, 1, 'every replica mounts the same secret there')
    const [keySecret] = keySecrets
    t.ok(keySecret !== undefined, `the fleet key file ${keyFile} is a compose secret`)
    t.equal(compose.secrets?.[keySecret ?? '']?.file, './secrets/fleet-key', 'read from ./secrets/fleet-key')

    // Each replica its own writable, named, seeded state volume.
    const stateDir = path.posix.dirname(env.M2M_PROXY_CREDENTIALS_FILE ?? '/missing/credentials.json')
    const stateVolumes: string[] = []
    for (const [name, service] of proxies) {
      t.equal(service.read_only, true, `${name} has a read-only root filesystem`)
      const state = mountsOf(service).find((mount) => mount.target === stateDir)
      t.ok(state !== undefined && !state.readOnly, `${name} has a writable volume at ${stateDir}`)
      t.ok(
        state !== undefined && compose.volumes !== undefined && state.source in compose.volumes,
        `${name}'s state is a named volume (${state?.source})`
      )
      const seeded = Object.entries(dependenciesOf(service)).some(
        ([dependency, condition]) =>
          condition === 'service_completed_successfully' &&
          mountsOf(compose.services[dependency] ?? {}).some((mount) => mount.source === state?.source)
      )
      t.ok(seeded, `${name}'s credentials are seeded into its volume before it starts`)
      stateVolumes.push(state?.source ?? '')
    }
    t.equal(new Set(stateVolumes).size, proxies.length, `a state volume per replica (${stateVolumes.join(', ')})`)

    // The client: reaches each proxy by name, not Redis; only admin ports published, on loopback.
    const client = compose.services['legacy-client'] ?? {}
    const clientHosts = (environmentOf(client).THINGSPACE_BASE_URLS ?? '')
      .split(/\s+/)
      .filter((base) => base !== '')
      .map((base) => new URL(base).hostname)
    t.same([...clientHosts].sort(), proxies.map(([name]) => name).sort(), 'the client calls each replica')
    t.notOk(
      networksOf(client).some((network) => networksOf(redis ?? {}).includes(network)),
      'the client is on no network with Redis'
    )
    for (const [name, service] of proxies) {
      const environment = environmentOf(service)
      t.equal(dependenciesOf(client)[name], 'service_healthy', `the client waits for ${name}`)
      t.ok(
        (environment.M2M_PROXY_ALLOWED_HOSTS ?? '')
          .split(',')
          .map((host) => host.trim())
          .includes(name),
        `${name} accepts the Host header ${name}`
      )
      const proxyPort = environment.M2M_PROXY_PORT ?? '8080'
      for (const mapping of service.ports ?? []) {
        t.not(
          String(mapping).split(':').at(-1)?.split('/')[0],
          proxyPort,
          `${name}: ${String(mapping)} does not publish the proxy port`
        )
        t.match(String(mapping), /^127\.0\.0\.1:/, `${name}: ${String(mapping)} is bound to the host's loopback`)
      }
    }
  }
)

t.test('deploy examples: every M2M_PROXY_* variable they set is one the proxy knows', async (t) => {
  const { pod } = kubernetesFleet()
  const names: Array<{ where: string; name: string }> = []
  for (const container of [...(pod.initContainers ?? []), ...pod.containers]) {
    for (const entry of container.env ?? []) {
      names.push({ where: `deploy/kubernetes.yaml ${container.name}`, name: entry.name })
    }
  }
  for (const file of ['deploy/docker-compose.yml', 'deploy/docker-compose.fleet.yml']) {
    for (const [service, definition] of Object.entries(readCompose(file).compose.services)) {
      for (const name of Object.keys(environmentOf(definition))) names.push({ where: `${file} ${service}`, name })
    }
  }
  // The proxy refuses an unknown M2M_PROXY_* name in any case at start-up.
  const proxyNames = names.filter(({ name }) => name.toUpperCase().startsWith('M2M_PROXY_'))
  t.ok(
    proxyNames.some(({ name }) => name === 'M2M_PROXY_REDIS_URL'),
    'the fleet settings are among them'
  )
  const unknown = proxyNames
    .filter(({ name }) => !KNOWN_ENV_NAMES.includes(name))
    .map(({ where, name }) => `${where}: ${name}`)
  t.same(unknown, [], 'no name the proxy would refuse')
})

t.test('docker compose profile "simulator": the same image against the simulator, no account, no secret', async (t) => {
  const compose = parse(fs.readFileSync(path.join(ROOT, 'deploy/docker-compose.yml'), 'utf8')) as {
    services: Record<string, Record<string, unknown> & { profiles?: string[]; depends_on?: Record<string, unknown> }>
  }
  const simulated = ['simulator', 'seed-simulated-credentials', 'simulated-proxy', 'simulated-client']
  for (const name of simulated) t.same(compose.services[name]?.profiles, ['simulator'], `${name} is in the profile`)
  for (const [name, service] of Object.entries(compose.services)) {
    if (simulated.includes(name)) continue
    t.notOk(service.profiles, `${name} runs without the profile`)
    t.notOk(
      Object.keys(service.depends_on ?? {}).some((dependency) => simulated.includes(dependency)),
      `${name} needs nothing of the profile`
    )
  }
  const simulator = compose.services.simulator as { build: { context: string; target: string }; command: string[] }
  const dockerfile = fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8')
  t.match(dockerfile, new RegExp(`^FROM \\S+ AS ${simulator.build.target}$`, 'm'), 'the build stage it names exists')
  t.same(simulator.command, ['node', 'dist/simulator/main.js'])
  t.ok(fs.existsSync(path.join(ROOT, 'src/simulator/main.ts')), 'the simulator the build stage compiles')

  const seeded = JSON.parse(fs.readFileSync(path.join(ROOT, 'deploy/demo-credentials.json'), 'utf8')) as unknown
  const { DEMO_CREDENTIALS } = await import('../../src/simulator/app.js')
  t.same(seeded, DEMO_CREDENTIALS, "the seeded credentials are the simulator's demo account")

  const proxy = compose.services['simulated-proxy'] as { environment: Record<string, string>; secrets?: unknown }
  t.notOk(proxy.secrets, 'no secret to prepare')
  const config = createConfig({ env: proxy.environment, readTextFile: () => '', cwd: '/' })
  t.equal(config.upstream, 'http://simulator:8443', 'plain http to the simulator service, accepted as meant')
  t.equal(config.logFormat, 'pretty')
  const client = compose.services['simulated-client'] as { environment: Record<string, string> }
  t.ok(
    config.allowedHosts.includes(new URL(client.environment.THINGSPACE_BASE_URL ?? '').hostname),
    "the client's Host header is accepted"
  )
  delete proxy.environment.M2M_PROXY_ALLOW_INSECURE_UPSTREAM
  t.throws(() => createConfig({ env: proxy.environment, readTextFile: () => '', cwd: '/' }), {
    message: /M2M_PROXY_UPSTREAM: is http:\/\/ to simulator, another machine/
  }, 'without the explicit setting the same file would be refused')
})

t.test('the README builds the image the Kubernetes example runs, and its docker run has what production needs', async (t) => {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8')
  const tag = /docker build -t (\S+) \./.exec(readme)?.[1]
  const kubernetes = fs.readFileSync(path.join(ROOT, 'deploy/kubernetes.yaml'), 'utf8')
  t.ok(tag, 'the README builds a tagged image')
  t.match(kubernetes, new RegExp(`image: ${(tag ?? '').replace(/[.]/g, '\\.')}$`, 'm'), 'the tag the example runs')
  const run = /docker run [\s\S]*?\n\s+\S+:\S+\n/.exec(readme)?.[0] ?? ''
  t.match(run, /M2M_PROXY_ADMIN_TOKEN_FILE=/, 'an admin token')
  t.match(run, /--network container:\S+/, "in the client's network namespace")
  t.notMatch(run, /\s(-p|--publish)\s/, 'no port of its own: Docker refuses -p with --network container:')
  t.match(run, /-v m2m-state:\/var\/lib\/m2m-session-proxy/, 'state on a volume')
})
