// Container HEALTHCHECK: exit 0 when the admin listener answers /healthz, 1 otherwise. Used without a shell.

const port = process.env.M2M_PROXY_ADMIN_PORT ?? '9090'
const configuredHost = process.env.M2M_PROXY_ADMIN_HOST ?? '127.0.0.1'
// A wildcard listener is reached through loopback from inside the container.
const host = configuredHost === '0.0.0.0' || configuredHost === '::' ? '127.0.0.1' : configuredHost
const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}/healthz`

fetch(url, { signal: AbortSignal.timeout(3000) })
  .then((response) => process.exit(response.ok ? 0 : 1))
  .catch(() => process.exit(1))
