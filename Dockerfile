# m2m-session-proxy as a sidecar image: built with dev dependencies, run as one bundle with no node_modules.

FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY src ./src
# prepare runs as part of npm ci: esbuild (`npm run build`; the type check is npm test's) bundles the proxy with its
# dependencies into dist/main.js (and dist/chunks/: the Redis client that fleet mode loads, OpenTelemetry that
# OTEL_EXPORTER_OTLP_ENDPOINT loads). The image ships that bundle and the healthcheck only: no node_modules (a third of
# the start-up was resolving and reading them), no simulator, no demo. With NODE_OPTIONS=--enable-source-maps, stack
# traces name the source files (main.js.map).
RUN npm ci --no-audit --no-fund && chmod +x dist/cli.js && mkdir /image && \
    cp -r dist/main.js dist/main.js.map dist/chunks dist/healthcheck.js dist/cli.js /image/

FROM node:24-bookworm-slim
# The proxy listener attaches the account's tokens to whatever reaches it, so it listens on loopback:
# as a sidecar, the client shares the network namespace and calls 127.0.0.1:8080. Where the client is
# another container (docker compose, docker run -p), set M2M_PROXY_HOST=0.0.0.0 and restrict who can
# reach it. The admin listener stays on 0.0.0.0 for probes by pod IP and for scraping; its /admin/
# routes need the admin token. The HEALTHCHECK calls the admin listener through 127.0.0.1.
# MALLOC_MMAP_THRESHOLD_: glibc raises its mmap threshold each time a large block is freed; later
# large blocks then come from the malloc arenas of Node's threads, which keep the pages once freed
# (at start-up a V8 thread's arena kept 10 MiB in most starts: 73 instead of 63 MiB at rest). Fixed at
# its initial 128 KiB, large blocks are mapped and given back: idle RSS 63.5 MiB against 73.5, and
# peaks under load as low as MALLOC_ARENA_MAX=2 made them, which it replaces (npm run bench's start-up
# and memory sections; no CPU cost measured).
ENV NODE_ENV=production \
    MALLOC_MMAP_THRESHOLD_=131072 \
    M2M_PROXY_HOST=127.0.0.1 \
    M2M_PROXY_PORT=8080 \
    M2M_PROXY_ADMIN_HOST=0.0.0.0 \
    M2M_PROXY_ADMIN_PORT=9090 \
    M2M_PROXY_CREDENTIALS_FILE=/var/lib/m2m-session-proxy/credentials.json
WORKDIR /app
COPY --from=build /image ./dist
# "type": "module": dist/*.js are ES modules.
COPY package.json ./
# Credentials and state live on a writable volume (the lockout count must survive restarts;
# password rotation rewrites the credentials file); the image itself can be read-only.
# The operator's CLI on the PATH: `docker exec <container> m2m-session-proxy status`.
RUN mkdir -p /var/lib/m2m-session-proxy && chown node:node /var/lib/m2m-session-proxy && \
    ln -s /app/dist/cli.js /usr/local/bin/m2m-session-proxy
VOLUME ["/var/lib/m2m-session-proxy"]
USER node
# Only the admin port: `docker run -P` must not publish the proxy listener.
EXPOSE 9090
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 CMD ["node", "dist/healthcheck.js"]
# exec form: node is PID 1 and receives SIGTERM itself
CMD ["node", "dist/main.js"]
