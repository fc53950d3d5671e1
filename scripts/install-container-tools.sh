#!/usr/bin/env bash
# Installs what test/docker-image.test.ts and test/deploy-files.test.ts drive, from Debian's archive:
#   - podman, buildah, runc: build the project's Dockerfile for real (no Docker engine on these machines)
#   - mmdebstrap: builds the local stand-in for docker.io/library/node:20-slim (no registry is reachable)
#   - systemd-analyze (package systemd): verifies deploy/systemd/spamtrapd.service. Installing the package
#     starts no daemon inside a container/chroot (its postinst only sets things up), and it is small.
# Idempotent: with everything present it neither updates apt nor installs anything.
# Exit status is 0 only when every tool runs, so CI can tell "cannot install" from "installed".
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

need=()
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v buildah >/dev/null 2>&1 || need+=(buildah)
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# unshare runs the image in a private mount namespace (util-linux is essential on Debian; this covers slimmer hosts).
command -v unshare >/dev/null 2>&1 || need+=(util-linux)

if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-container-tools: need root to apt-get install ${need[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

podman --version >/dev/null
buildah --version >/dev/null
runc --version >/dev/null
mmdebstrap --version >/dev/null
systemd-analyze --version >/dev/null
echo "container tools ready: $(podman --version), $(buildah --version | head -1), $(mmdebstrap --version)"
