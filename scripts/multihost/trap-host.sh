#!/bin/sh
# One trap "host" for the two-host harness (docs/scale-out.md, layout B), run as pid 1 of fresh UTS, mount and pid
# namespaces by:
#   unshare --uts --mount --pid --fork --mount-proc --propagation private --kill-child scripts/multihost/trap-host.sh
# It takes the host name, binds this host's own spool onto SPOOL_DIR and the one shared queue onto
# SPOOL_DIR/incoming (the same path on every host and consumer, as QDFN is absolute), then becomes the trap's
# primary, so that killing this namespace's pid 1 kills the whole host at once.
# Environment: TRAP_HOSTNAME, HOST_SPOOL (this host's own spool), SHARED_QUEUE (the queue every host shares),
# SPOOL_DIR (where the trap sees its spool), SPAMTRAPD_CLI (dist/workers/cli.js), and the trap's own settings.
set -eu
: "${TRAP_HOSTNAME:?}" "${HOST_SPOOL:?}" "${SHARED_QUEUE:?}" "${SPOOL_DIR:?}" "${SPAMTRAPD_CLI:?}"
[ "$$" = 1 ] || { echo "trap-host.sh: must be pid 1 of a new pid namespace (unshare --pid --fork)" >&2; exit 2; }
hostname "$TRAP_HOSTNAME"
# Private, so these binds never reach the namespace that started us (unshare's default, made explicit).
mount --make-rprivate /
mount --bind "$HOST_SPOOL" "$SPOOL_DIR"
mkdir -p "$SPOOL_DIR/incoming"
mount --bind "$SHARED_QUEUE" "$SPOOL_DIR/incoming"
exec node "$SPAMTRAPD_CLI" start
