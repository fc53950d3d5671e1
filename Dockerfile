# spamtrapd container image. Build: docker build -t spamtrapd .
# Run (docs/deployment.md explains every option):
#   docker run -d --name spamtrapd --restart=unless-stopped --cap-drop=ALL \
#     --sysctl net.ipv4.ip_unprivileged_port_start=25 --stop-timeout 20 \
#     -p 25:25 -p 127.0.0.1:9725:9725 \
#     -v spamtrapd-spool:/var/spool/spamtrapd -v "$PWD/config:/etc/spamtrapd:ro" \
#     -e ME=trap1.example.net spamtrapd
#
# Port 25 as a non-root USER: through the network namespace's net.ipv4.ip_unprivileged_port_start (Docker 20.10+
# already sets it to 0 in a container with its own network; the --sysctl above makes it explicit), not through a
# file capability on node. setcap would put a second copy of the ~100 MB node binary into a layer, make every node
# in the image (the HEALTHCHECK and `spamtrapd queue` too) a secure-exec binary that ignores NODE_OPTIONS and
# NODE_EXTRA_CA_CERTS, fail to exec at all under --cap-drop=ALL, and grant nothing under no-new-privileges
# (Kubernetes' allowPrivilegeEscalation: false). The sysctl needs no capability at all.

# --- build: dev dependencies and the TypeScript compiler -------------------------------------------------------
FROM node:20-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY workers ./workers
RUN npx tsc -p tsconfig.json

# --- deps: production dependencies only, resolved from the same lock file --------------------------------------
FROM node:20-slim AS deps
WORKDIR /src
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --omit=dev --no-audit --no-fund

# --- runtime ---------------------------------------------------------------------------------------------------
FROM node:20-slim
ENV NODE_ENV=production \
    SMTP_PORT=25 \
    METRICS_PORT=9725 \
    METRICS_HOST=0.0.0.0 \
    SPOOL_DIR=/var/spool/spamtrapd \
    CONFIG_DIR=/etc/spamtrapd
# METRICS_HOST=0.0.0.0: inside the container loopback is unreachable from a published port. Publish 9725 only to a
# trusted network (e.g. -p 127.0.0.1:9725:9725), never to the internet.
WORKDIR /app
COPY --from=deps /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY package.json ./
# The defaults ship inside the image; mounting a directory (or a ConfigMap) over /etc/spamtrapd replaces them.
COPY config/ /etc/spamtrapd/
# The spool exists before VOLUME so a new named volume is initialised with the USER's ownership.
RUN mkdir -p /var/spool/spamtrapd && chown node:node /var/spool/spamtrapd && chmod 750 /var/spool/spamtrapd
VOLUME ["/var/spool/spamtrapd"]
EXPOSE 25 9725
USER node
# No curl in node:20-slim. 127.0.0.1 reaches the metrics listener whether it is bound to 0.0.0.0 or ::.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "require('http').get({host:'127.0.0.1',port:Number(process.env.METRICS_PORT)||9725,path:'/healthz',timeout:4000},(r)=>process.exit(r.statusCode===200?0:1)).on('timeout',()=>process.exit(1)).on('error',()=>process.exit(1))"]
# Exec form: node is the process that receives `docker stop`'s SIGTERM and drains sessions (SHUTDOWN_GRACE_MS,
# default 10 s, so give docker stop more than that: --stop-timeout 20).
CMD ["node", "--max-semi-space-size=4", "dist/workers/cli.js", "start"]
