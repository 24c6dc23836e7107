#!/bin/sh
# test/e2e-suspend.ts: suspend to RAM (ACPI S3) while frontswap holds pages.
#   e2e-suspend.sh MIB
# swapstress fills MIB and holds; gate "suspend" (the host reads tmemd's
# counters), `echo mem > /sys/power/state` (the host sees QEMU's run state
# "suspended" and sends system_wakeup over QMP); gate "resumed"; swapstress
# verifies every page; gate "again", a second swapstress (tmem in use after
# the resume); gate "end".
. "$(dirname "$0")/e2e-lib.sh"
MIB=${1:-256}
# "deep" is S3 (QEMU's system_wakeup wakes it); s2idle would need another wakeup source
mark "@@E2E-SLEEP state=[$(cat /sys/power/state 2>&1)] mem_sleep=[$(cat /sys/power/mem_sleep 2>&1)]"
grep -qw deep /sys/power/mem_sleep 2>/dev/null && echo deep > /sys/power/mem_sleep ||
  mark "@@E2E-FAIL no S3: /sys/power/mem_sleep has no deep"
e2e_kv start
e2e_hold_start --mib "$MIB" --passes 1
e2e_kv suspend
e2e_pools suspend
e2e_wait suspend
mark "@@E2E-SUSPENDING"
echo mem > /sys/power/state
rc=$?
mark "@@E2E-RESUMED rc=$rc"
e2e_kv resumed
e2e_pools resumed
e2e_wait resumed
run_workload swapstress e2e_hold_verify
e2e_kv verified
e2e_wait again
run_workload swapstress-again "$BIN/swapstress" --mib "$MIB" --passes 1 --seed 7
e2e_kv again
e2e_dmesg
e2e_wait end
