#!/bin/sh
# Print the counters alone (vmstat, swaps, module, debugfs) as a @@TMEM-RESULT.
. "$(dirname "$0")/lib.sh"
run_workload stats true
