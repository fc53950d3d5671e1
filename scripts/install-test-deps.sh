#!/usr/bin/env bash
# Makes .tools/bin/NAME a working copy of each external program the test suite and benchmarks drive, without
# starting any daemon (resolution order and --plan: scripts/lib/tools.sh):
#   - smtp-source / smtp-sink: Postfix's real SMTP flood client and reference sink
#   - promtool: lints a live metrics exposition
#   - swaks: a real SMTP test client
#   - haproxy, rbldnsd, dig: a PROXY-protocol front, a DNSBL server and a DNS client for later tests
# Usage: bash scripts/install-test-deps.sh [--plan] [TOOL...]
# Idempotent: with everything present it neither updates apt nor installs anything. Exit status is 0 only when
# every tool runs; otherwise the message names each one that does not.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/tools.sh
source scripts/lib/tools.sh

# How each is installed when no working copy is found:
# - Postfix and Prometheus are unpacked with dpkg -x: installing them would start an MTA or a Prometheus server.
#   smtp-source/smtp-sink need Postfix's private libraries (usr/lib/postfix), hence a wrapper; promtool is static.
# - rbldnsd is unpacked too: it links only libc, zlib and libsystemd, which dpkg and apt themselves need, so they
#   are on every bookworm that can run this script; unpacking runs no maintainer script, so no rbldns user, no
#   enabled unit and no daemon to stop.
# - haproxy is apt-get installed with service starts denied: it links liblua5.3, libopentracing-c-wrapper and
#   libssl3, which a minimal bookworm lacks (ldd on the unpacked binary), and apt resolves them.
# - dig (bind9-dnsutils) needs a dozen libraries a minimal bookworm lacks (bind9-libs, libuv, libjemalloc, ...);
#   the package has no daemon. swaks is a Perl script with Perl module dependencies, also no daemon.
define_tool smtp-source unpack postfix '' usage usr/sbin/smtp-source usr/lib/postfix
define_tool smtp-sink unpack postfix '' usage usr/sbin/smtp-sink usr/lib/postfix
define_tool promtool unpack prometheus --version promtool usr/bin/promtool
define_tool swaks apt swaks --version swaks
define_tool haproxy apt haproxy -v haproxy
define_tool rbldnsd unpack rbldnsd -h rbldnsd usr/sbin/rbldnsd
define_tool dig apt bind9-dnsutils -v dig
DAEMON_NAMES=(haproxy rbldnsd)

resolve_and_install_tools "$@"
