#!/bin/sh
# Runs a command that sees the shared queue where every trap host sees it (SPOOL_DIR/incoming), for the consumers
# and dq-verify of the two-host harness: QDFN in control files is absolute, so a consumer must mount the queue at
# the writers' path. Run inside a private mount namespace, so the bind never reaches the caller's:
#   unshare --mount --propagation private scripts/multihost/queue-view.sh COMMAND [ARG...]
# Environment: SHARED_QUEUE (the queue's real directory), SPOOL_DIR (the path the traps use for their spool; its
# incoming/ must exist as the mount point).
set -eu
: "${SHARED_QUEUE:?}" "${SPOOL_DIR:?}"
mount --make-rprivate /
mount --bind "$SHARED_QUEUE" "$SPOOL_DIR/incoming"
exec "$@"
