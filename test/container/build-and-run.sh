#!/usr/bin/env bash
# Builds the project's Dockerfile with podman and runs the image, on machines without a Docker engine or a
# reachable registry (how the image is tested: docs/deployment.md#container).
# test/docker-image.test.ts drives it; every step also works by hand:
#
#   test/container/build-and-run.sh base                 make the stand-in docker.io/library/node:20-slim (cached)
#   test/container/build-and-run.sh build [TAG]          base, then podman build of the unchanged Dockerfile
#   test/container/build-and-run.sh run TAG [VAR=VAL..]  run the image's ENTRYPOINT+CMD in the foreground
#   test/container/build-and-run.sh health TAG ROOTFS [VAR=VAL..]  run the image's HEALTHCHECK in a running root
#   test/container/build-and-run.sh port25 TAG           prove the image USER binds port 25 with the documented sysctl
#   test/container/build-and-run.sh rm CONTAINER         remove a container left by an interrupted run
#
# Why `run` is not `podman run`: the sandbox refuses the OCI runtime's rlimit and cgroup setup. The image is run
# from the writable root of `podman create` + `podman mount` instead, in a private mount namespace, chrooted as
# the image's USER, in its WORKDIR, with only the image's ENV plus the given variables - what a container engine
# would do, minus the namespaces the tests do not need.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# scripts/install-container-tools.sh puts the working podman, mmdebstrap and unshare in .tools/bin, which may
# differ from the first on PATH.
PATH="$ROOT/.tools/bin:$PATH"
BASE=docker.io/library/node:20-slim
DEFAULT_TAG=localhost/spamtrapd:test

log() { printf '[build-and-run] %s\n' "$*" >&2; }

# The stand-in reproduces what a Dockerfile can notice of the real node:20-slim: Debian bookworm, node and npm
# in /usr/local, user and group node 1000:1000 with /home/node, docker-entrypoint.sh as ENTRYPOINT, CMD node, no
# curl. The host's CA bundle rides along via NODE_EXTRA_CA_CERTS because npm reaches its registry through a TLS
# proxy here; the host's apt validity settings too, since the Debian mirror here serves a frozen snapshot.
base() {
  if podman image exists "$BASE"; then
    log "stand-in $BASE already built"
    return
  fi
  local node_bin npm_dir work
  node_bin=$(readlink -f "$(command -v node)")
  npm_dir=$(cd "$(dirname "$(readlink -f "$(command -v npm)")")/.." && pwd)
  work=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  cat >"$work/docker-entrypoint.sh" <<'ENTRY'
#!/bin/sh
set -e
# Same contract as the official image: a first argument that is an option or not a command goes to node.
if [ "${1#-}" != "${1}" ] || [ -z "$(command -v "${1}")" ] || { [ -f "${1}" ] && ! [ -x "${1}" ]; }; then
  set -- node "$@"
fi
exec "$@"
ENTRY
  chmod 755 "$work/docker-entrypoint.sh"
  log "building stand-in $BASE with mmdebstrap (node $("$node_bin" --version) from the host)"
  mmdebstrap --variant=minbase --include=ca-certificates --quiet \
    --aptopt='Acquire::Check-Valid-Until "false"' --aptopt='Acquire::Check-Date "false"' \
    --customize-hook="copy-in '$node_bin' /usr/local/bin" \
    --customize-hook="mkdir -p \"\$1/usr/local/lib/node_modules\"" \
    --customize-hook="cp -a '$npm_dir' \"\$1/usr/local/lib/node_modules/npm\"" \
    --customize-hook='ln -s ../lib/node_modules/npm/bin/npm-cli.js "$1/usr/local/bin/npm"' \
    --customize-hook='ln -s ../lib/node_modules/npm/bin/npx-cli.js "$1/usr/local/bin/npx"' \
    --customize-hook="cp '$work/docker-entrypoint.sh' \"\$1/usr/local/bin/docker-entrypoint.sh\"" \
    --customize-hook="cp /etc/ssl/certs/ca-certificates.crt \"\$1/usr/local/share/host-ca-bundle.crt\"" \
    --customize-hook='chroot "$1" groupadd --gid 1000 node' \
    --customize-hook='chroot "$1" useradd --uid 1000 --gid node --shell /bin/bash --create-home node' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    bookworm "$work/rootfs.tar" http://deb.debian.org/debian
  podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV NODE_VERSION=$("$node_bin" --version | sed 's/^v//')" \
    --change 'ENV NODE_EXTRA_CA_CERTS=/usr/local/share/host-ca-bundle.crt' \
    --change 'ENTRYPOINT ["docker-entrypoint.sh"]' \
    --change 'CMD ["node"]' \
    --quiet "$work/rootfs.tar" "$BASE" >/dev/null
  log "stand-in $BASE ready"
}

build() {
  local tag=${1:-$DEFAULT_TAG}
  base
  log "podman build $tag from $ROOT"
  # --format docker: the OCI format has no HEALTHCHECK and buildah would drop it.
  podman build --pull=never --isolation=chroot --network=host --format docker -t "$tag" -f "$ROOT/Dockerfile" "$ROOT" >&2
  log "built $tag"
}

inspect() { podman image inspect --format "$2" "$1"; }

# Resolves the image's USER (name or id, with optional group) to numeric ids from the image's own passwd/group.
resolve_user() {
  local rootfs=$1 spec=$2 user group uid gid
  user=${spec%%:*}
  group=
  [[ $spec == *:* ]] && group=${spec#*:}
  [ -z "$user" ] && user=0
  if [[ $user =~ ^[0-9]+$ ]]; then
    uid=$user
    gid=$(awk -F: -v u="$uid" '$3 == u { print $4; exit }' "$rootfs/etc/passwd")
  else
    uid=$(awk -F: -v u="$user" '$1 == u { print $3; exit }' "$rootfs/etc/passwd")
    gid=$(awk -F: -v u="$user" '$1 == u { print $4; exit }' "$rootfs/etc/passwd")
  fi
  if [ -n "$group" ]; then
    if [[ $group =~ ^[0-9]+$ ]]; then gid=$group; else gid=$(awk -F: -v g="$group" '$1 == g { print $3; exit }' "$rootfs/etc/group"); fi
  fi
  [ -n "$uid" ] && [ -n "$gid" ] || { log "cannot resolve USER $spec in the image"; exit 1; }
  echo "$uid:$gid"
}

# Prints one NUL-terminated argument per element of the image's ENTRYPOINT followed by CMD.
argv_of() {
  podman image inspect "$1" | node -e '
    const c = JSON.parse(require("fs").readFileSync(0, "utf8"))[0].Config;
    process.stdout.write([...(c.Entrypoint || []), ...(c.Cmd || [])].map((a) => a + "\0").join(""));'
}

# Mounts what a container would see inside the chroot; called inside `unshare -m`, so nothing leaks to the host.
prepare_root() {
  local rootfs=$1
  mkdir -p "$rootfs/proc" "$rootfs/sys" "$rootfs/dev/shm" "$rootfs/etc"
  mount -t proc proc "$rootfs/proc"
  mount --rbind /sys "$rootfs/sys"
  mount -o remount,bind,ro "$rootfs/sys" 2>/dev/null || true
  # /dev: the engine's minimal one is enough; bind the host's for /dev/null, /dev/urandom.
  mount --rbind /dev "$rootfs/dev"
  mount -t tmpfs -o mode=1777 shm "$rootfs/dev/shm"
  cp /etc/hosts "$rootfs/etc/hosts"
}

CONTAINER=
MOUNTED=
cleanup_container() {
  if [ -n "$CONTAINER" ]; then
    [ -n "$MOUNTED" ] && podman umount "$CONTAINER" >/dev/null 2>&1 || true
    # -v: the image declares a VOLUME; without it every run leaks an anonymous volume.
    podman rm -f -v "$CONTAINER" >/dev/null 2>&1 || true
    CONTAINER=
  fi
}

# Creates a container of the image and mounts its writable root; sets CONTAINER, MOUNTED and prints the root.
create_and_mount() {
  local tag=$1 name=$2
  CONTAINER=$(podman create --name "$name" "$tag")
  MOUNTED=$(podman mount "$CONTAINER")
}

run() {
  local tag=${1:?run TAG [VAR=VALUE ...]}
  shift
  local name="spamtrapd-test-$$-$RANDOM" user workdir rootfs
  trap cleanup_container EXIT
  create_and_mount "$tag" "$name"
  rootfs=$MOUNTED
  user=$(resolve_user "$rootfs" "$(inspect "$tag" '{{.Config.User}}')")
  workdir=$(inspect "$tag" '{{.Config.WorkingDir}}')
  [ -n "$workdir" ] || workdir=/
  local -a env argv
  mapfile -t env < <(inspect "$tag" '{{range .Config.Env}}{{println .}}{{end}}' | sed '/^$/d')
  env+=("$@")
  mapfile -d '' -t argv < <(argv_of "$tag")
  # The test reads these two lines to find the container's files and to clean up if it is interrupted.
  echo "container: $name"
  echo "rootfs: $rootfs"
  echo "user: $user workdir: $workdir"
  # Like `docker stop`, SIGTERM goes to the image's main process only; the trap's primary takes care of the rest.
  local pid
  unshare -m --propagation private bash -c "$(declare -f prepare_root); prepare_root \"\$1\"; shift;
      exec chroot --userspec=\"\$1\" --groups=\"\${1#*:}\" \"\$2\" /usr/bin/env -i -C \"\$3\" \"\${@:4}\"" \
    _ "$rootfs" "$user" "$rootfs" "$workdir" "${env[@]}" "${argv[@]}" &
  pid=$!
  trap 'kill -TERM $pid 2>/dev/null || true' TERM INT
  local rc=0
  wait "$pid" || rc=$?
  # A signal to this script interrupts the first wait (status > 128); the second one collects the trap's real exit
  # status. 127 means the first wait had it already (the child itself died of a signal).
  if [ "$rc" -gt 128 ]; then
    local rc2=0
    wait "$pid" || rc2=$?
    [ "$rc2" = 127 ] || rc=$rc2
  fi
  echo "exit: $rc"
  return "$rc"
}

# Prints the HEALTHCHECK's argv, NUL-terminated; CMD-SHELL becomes /bin/sh -c as an engine runs it.
healthcheck_argv_of() {
  podman image inspect "$1" | node -e '
    // podman reports the Docker-format HEALTHCHECK beside Config, not inside it.
    const i = JSON.parse(require("fs").readFileSync(0, "utf8"))[0];
    const t = ((i.Healthcheck || i.Config.Healthcheck || {}).Test) || [];
    const argv = t[0] === "CMD" ? t.slice(1) : t[0] === "CMD-SHELL" ? ["/bin/sh", "-c", t[1]] : [];
    if (!argv.length) { console.error("image has no HEALTHCHECK command"); process.exit(1); }
    process.stdout.write(argv.map((a) => a + "\0").join(""));'
}

# Runs the HEALTHCHECK the way an engine does (as USER, in WORKDIR, with the image ENV plus the container's
# variables) inside the root of a container that `run` started; its exit status is the health verdict.
health() {
  local tag=${1:?health TAG ROOTFS [VAR=VALUE ...]} rootfs=${2:?health TAG ROOTFS} user workdir
  shift 2
  user=$(resolve_user "$rootfs" "$(inspect "$tag" '{{.Config.User}}')")
  workdir=$(inspect "$tag" '{{.Config.WorkingDir}}')
  local -a env argv
  mapfile -t env < <(inspect "$tag" '{{range .Config.Env}}{{println .}}{{end}}' | sed '/^$/d')
  env+=("$@")
  mapfile -d '' -t argv < <(healthcheck_argv_of "$tag")
  unshare -m --propagation private bash -c "$(declare -f prepare_root); prepare_root \"\$1\"; shift;
      exec chroot --userspec=\"\$1\" --groups=\"\${1#*:}\" \"\$2\" /usr/bin/env -i -C \"\$3\" \"\${@:4}\"" \
    _ "$rootfs" "$user" "$rootfs" "${workdir:-/}" "${env[@]}" "${argv[@]}"
}

port25() {
  local tag=${1:-$DEFAULT_TAG} name="spamtrapd-port25-$$-$RANDOM" user rootfs
  trap cleanup_container EXIT
  create_and_mount "$tag" "$name"
  rootfs=$MOUNTED
  user=$(resolve_user "$rootfs" "$(inspect "$tag" '{{.Config.User}}')")
  # A fresh network namespace starts with ip_unprivileged_port_start=1024, like a container without the setting;
  # the documented `--sysctl net.ipv4.ip_unprivileged_port_start=25` is what makes port 25 bindable for USER.
  unshare -m -n --propagation private bash -c "$(declare -f prepare_root); prepare_root \"\$1\";
      ip link set lo up 2>/dev/null || true
      probe='require(\"net\").createServer().once(\"error\", (e) => { console.log(\"bind 25: \" + e.code); process.exit(1) })
        .listen(25, \"0.0.0.0\", () => { console.log(\"bind 25: ok\"); process.exit(0) })'
      echo \"uid \$(chroot --userspec=\"\$2\" \"\$1\" /usr/bin/id -u)\"
      if chroot --userspec=\"\$2\" --groups=\"\${2#*:}\" \"\$1\" /usr/local/bin/node -e \"\$probe\"; then
        echo 'without sysctl: unexpectedly bound'; exit 1
      fi
      sysctl -qw net.ipv4.ip_unprivileged_port_start=25
      chroot --userspec=\"\$2\" --groups=\"\${2#*:}\" \"\$1\" /usr/local/bin/node -e \"\$probe\"" _ "$rootfs" "$user"
}

cmd=${1:-}
shift || true
case "$cmd" in
  base) base ;;
  build) build "$@" ;;
  run) run "$@" ;;
  health) health "$@" ;;
  port25) port25 "$@" ;;
  rm)
    CONTAINER=${1:?rm CONTAINER}
    MOUNTED=1
    cleanup_container
    ;;
  *)
    sed -n '2,15p' "$0" >&2
    exit 2
    ;;
esac
