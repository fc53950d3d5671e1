#!/usr/bin/env bash
# A quick A/B of one setting: msgs/s and CPU per message of the whole trap (2 acceptors, tmpfs spool, rDNS off)
# under a 3000-message warm-up and then MESSAGES messages from smtp-source -s 50 -l 4096, with the settings given.
#
#   bash bench/trap-cpu.sh LABEL MESSAGES PER_CONNECTION [SETTING=VALUE ...]
#   e.g. for i in 1 2; do bash bench/trap-cpu.sh inline 10000 1 SPOOL_WRITER=inline
#                        bash bench/trap-cpu.sh thread 10000 1 SPOOL_WRITER=thread; done
#
# CPU is utime + stime of the started process and all its descendants from /proc, read before and after the
# measured flood, as smtp-bench reads it; no floors, no probe, one turn: alternate the variants and repeat them,
# and keep smtp-bench for figures that go into a report of their own. TRAP=path/to/workers/cli.js picks a build;
# WITH_TAIL=1 keeps a `spamtrapd tail --json` reader attached through the measured flood (what a live tail costs).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
label=$1 messages=$2 per_conn=$3
shift 3
src="$here/.tools/bin/smtp-source"
[ -x "$src" ] || bash "$here/scripts/install-test-deps.sh" smtp-source smtp-sink
work=$(mktemp -d /dev/shm/trap-cpu-XXXXXX)
tail_pid=''
trap 'kill -TERM "$pid" ${tail_pid:+"$tail_pid"} 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/config"
port=$((20000 + RANDOM % 20000)) metrics_port=$((port + 1))
trap_cli=${TRAP:-$here/dist/workers/cli.js}
# The primary's V8 flags, as the build's package.json start passes them (src/primary/node-flags.ts; none before it).
read -r -a node_flags < <(node -p "try { require('$(dirname "$trap_cli")/../src/primary/node-flags.js').NODE_FLAGS.join(' ') } catch { '' }")
env "$@" SMTP_HOST=127.0.0.1 SMTP_PORT=$port METRICS_HOST=127.0.0.1 METRICS_PORT=$metrics_port WORKERS=2 RDNS_TIMEOUT_MS=0 SPOOL_DIR="$work/spool" \
  CONFIG_DIR="$work/config" node "${node_flags[@]}" "$trap_cli" start >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do [ "$(grep -c 'listening proc=acceptor' "$work/log")" -ge 2 ] && break; sleep 0.1; done

flood() { # flood COUNT: in runs of 50 x PER_CONNECTION, so each connection carries about PER_CONNECTION messages
  local flags=() left=$1 run=$((50 * per_conn))
  [ "$per_conn" -gt 1 ] && flags=(-d)
  while [ "$left" -gt 0 ]; do
    local n=$((left < run ? left : run))
    "$src" "${flags[@]}" -s 50 -l 4096 -m "$n" -f flood@spam.example -t trap@bait.example "127.0.0.1:$port"
    left=$((left - n))
  done
}
tree() { echo "$1"; local c; for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do tree "$c"; done; }
ticks() {
  local t=0 p f
  for p in $(tree "$pid"); do
    read -r -a f < <(sed 's/.*) //' /proc/"$p"/stat 2>/dev/null || true)
    t=$((t + ${f[11]:-0} + ${f[12]:-0}))
  done
  echo "$t"
}
flood 3000
before=$(find "$work/spool/incoming/queue" -type f | wc -l)
if [ -n "${WITH_TAIL:-}" ]; then
  METRICS_HOST=127.0.0.1 METRICS_PORT=$metrics_port node "${TRAP:-$here/dist/workers/cli.js}" tail --json >"$work/tail" 2>&1 &
  tail_pid=$!
  sleep 1
fi
c0=$(ticks) t0=$(date +%s.%N)
flood "$messages"
t1=$(date +%s.%N) c1=$(ticks)
tailed=''
if [ -n "$tail_pid" ]; then sleep 0.5; kill -INT "$tail_pid"; wait "$tail_pid" || true; tailed=", tail lines $(wc -l <"$work/tail")"; fi
stored=$(( $(find "$work/spool/incoming/queue" -type f | wc -l) - before ))
hz=$(getconf CLK_TCK)
echo "$label ($per_conn per connection): $(echo "$messages / ($t1 - $t0)" | bc) msgs/s," \
  "$(echo "scale=3; ($c1 - $c0) * 1000 / $hz / $stored" | bc) ms CPU/msg, stored $stored of $messages$tailed"
