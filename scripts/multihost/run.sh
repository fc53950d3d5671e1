#!/bin/sh
# The two-host run by hand (docs/scale-out.md, "What was tested"): two trap hosts in their own namespaces on one
# shared queue behind HAProxy, one killed mid-flood. Builds, runs, prints the report (sent, acked, consumed, lost,
# duplicated, failover time) and one line per check; exit 0 when every check holds, 1 when one fails, 2 when the
# run could not be carried out. Needs root, haproxy and unshare (scripts/install-test-deps.sh,
# scripts/install-container-tools.sh). MULTIHOST_KEEP=1 keeps the run's directory; IPC_DIRQUEUE_LIB and DQ_VERIFY
# point at the Perl module and dq-verify when they are not where ../shared/tools/dirqueue/README.md puts them.
set -eu
cd "$(dirname "$0")/../.."
npx tsc -p .
exec node dist/test/helpers/multihost/run.js
