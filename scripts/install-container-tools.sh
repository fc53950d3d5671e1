#!/usr/bin/env bash
# Makes .tools/bin/NAME a working copy of what test/docker-image.test.ts and test/deploy-files.test.ts drive
# (resolution order and --plan: scripts/lib/tools.sh), apt-get installed from Debian's archive when missing:
#   - podman, buildah, runc: build the project's Dockerfile for real (no Docker engine on these machines)
#   - mmdebstrap: builds the local stand-in for docker.io/library/node:20-slim (no registry is reachable)
#   - unshare (util-linux): runs the image in a private mount namespace (essential on Debian; covers slimmer hosts)
#   - systemd-analyze (package systemd): verifies deploy/systemd/spamtrapd.service
# Service starts are denied while apt-get runs, so no package starts a daemon.
# Usage: bash scripts/install-container-tools.sh [--plan] [TOOL...]
# Idempotent: with everything present it neither updates apt nor installs anything. Exit status is 0 only when
# every tool runs, so CI can tell "cannot install" from "installed"; the message names each one that does not.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/tools.sh
source scripts/lib/tools.sh

define_tool podman apt podman --version podman
define_tool buildah apt buildah --version buildah
define_tool runc apt runc --version runc
define_tool mmdebstrap apt mmdebstrap --version mmdebstrap
define_tool unshare apt util-linux --version unshare
# systemd-analyze --version prints "systemd 252 (...)".
define_tool systemd-analyze apt systemd --version systemd

resolve_and_install_tools "$@"
