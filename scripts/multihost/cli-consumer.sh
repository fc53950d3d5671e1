#!/bin/sh
# A consumer of the two-host harness made of `spamtrapd queue pickup incoming --json`, one job per call with the
# consumers' lock protocol, as an operator would script it. Each answer that holds a job is kept as OUT_DIR/N.json;
# exits once STOP_FILE exists and the queue answers empty.
# Usage: cli-consumer.sh CLI_JS SPOOL_DIR OUT_DIR STOP_FILE
set -eu
cli=$1 spool=$2 out=$3 stop=$4
n=0
while :; do
  n=$((n + 1))
  node "$cli" queue pickup incoming --json --spool "$spool" >"$out/.$n.part"
  if grep -q '"job": null' "$out/.$n.part"; then
    rm -f "$out/.$n.part"
    [ -e "$stop" ] && exit 0
    sleep 0.1
  else
    mv "$out/.$n.part" "$out/$n.json"
  fi
done
