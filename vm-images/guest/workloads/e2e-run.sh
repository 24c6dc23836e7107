#!/bin/sh
# e2e-run.sh CMD ARGS...: wait for the host ("start"), run CMD, dmesg lines,
# wait for the host again ("end"), so that it can read QEMU's block
# statistics exactly around CMD.
. "$(dirname "$0")/e2e-lib.sh"
e2e_counters before
e2e_wait start
"$@"
rc=$?
e2e_counters after
e2e_dmesg
e2e_wait end
exit $rc
