#!/usr/bin/env bash
# Where one acceptor's CPU goes per message: a 1-acceptor trap under `node --cpu-prof`, a warm-up flood, a measured
# flood, then bench/cpu-profile-summary on the acceptor's profile (the biggest one; the primary's is the other).
#
#   bash bench/profile-acceptor.sh [MESSAGES] [PER_CONNECTION] [BUILD_DIR]
#
# MESSAGES (default 20000) measured after a 3000-message warm-up, 4 KB each, smtp-source -s 50; PER_CONNECTION 1
# (default) or N > 1 for smtp-source -d (connections kept for several messages). BUILD_DIR (default this checkout's
# dist/) is the compiled trap to profile, e.g. an older commit's for a before/after. Spool on /dev/shm, rDNS off.
# The profiler itself costs CPU: read the shares, not the absolute microseconds. Run it alone, like every benchmark.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
messages=${1:-20000}
per_conn=${2:-1}
build=${3:-$here/dist}
src="$here/.tools/bin/smtp-source"
[ -x "$src" ] || bash "$here/scripts/install-test-deps.sh" smtp-source smtp-sink
[ -f "$build/workers/cli.js" ] || { echo "no compiled trap at $build (npm run build)" >&2; exit 2; }

work=$(mktemp -d /dev/shm/profile-acceptor-XXXXXX)
trap 'kill -TERM "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/config" "$work/prof"
port=$((20000 + RANDOM % 20000))
SMTP_HOST=127.0.0.1 SMTP_PORT=$port METRICS_PORT=0 WORKERS=1 RDNS_TIMEOUT_MS=0 SPOOL_DIR="$work/spool" \
  CONFIG_DIR="$work/config" node --cpu-prof --cpu-prof-dir="$work/prof" "$build/workers/cli.js" start >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do grep -q 'listening proc=acceptor0' "$work/log" && break; sleep 0.1; done
grep -q 'listening proc=acceptor0' "$work/log" || { cat "$work/log" >&2; exit 2; }

flood() { # flood COUNT: COUNT messages, PER_CONNECTION per connection
  local flags=()
  [ "$per_conn" -gt 1 ] && flags=(-d)
  local left=$1 run=$((50 * per_conn))
  while [ "$left" -gt 0 ]; do
    local n=$((left < run ? left : run))
    "$src" "${flags[@]}" -s 50 -l 4096 -m "$n" -f flood@spam.example -t trap@bait.example "127.0.0.1:$port"
    left=$((left - n))
  done
}
flood 3000
before=$(find "$work/spool/incoming/queue" -type f | wc -l)
flood "$messages"
after=$(find "$work/spool/incoming/queue" -type f | wc -l)
kill -TERM "$pid"; wait "$pid" || true
stored=$((after - before))
echo "profiled build: $build; $stored messages measured ($per_conn per connection) after a 3000-message warm-up"
# One profile per thread: the primary's, the acceptor's main thread (the busiest) and, with SPOOL_WRITER=thread or
# an older build, the acceptor's writer thread. Each one's busy time first, then the acceptor's main thread in full.
# The profiles cover the warm-up too: divide by everything the acceptor filed.
busiest='' most=0
for f in "$work"/prof/*.cpuprofile; do
  line=$(node "$here/dist/bench/cpu-profile-summary.js" "$f" --messages "$after" --top 0 | sed -n 1p)
  echo "$(basename "$f"): $line"
  us=$(echo "$line" | awk '{ print int($2) }')
  if [ "$us" -gt "$most" ]; then most=$us busiest=$f; fi
done
node "$here/dist/bench/cpu-profile-summary.js" "$busiest" --messages "$after" --top 30
