#!/bin/sh
# test/e2e-stall.ts: anonymous memory through swap while the host stops tmemd
# (SIGSTOP) twice, then more of it once tmemd runs again.
#   e2e-stall.sh MIB
# 1. swapstress fills MIB (the host stops tmemd once meanwhile: stores wait
#    for it, or are refused and go to the swap disk), then holds;
# 2. gate "verify": the host stops tmemd again and lets the guest verify
#    every page (the loads of pages tmemd holds must wait for it);
# 3. gate "again": a second swapstress shows frontswap stores and loads
#    served by tmemd after the stalls; gate "end": the host reads tmemd's
#    counters after it.
. "$(dirname "$0")/e2e-lib.sh"
MIB=${1:-256}
e2e_kv start
e2e_hold_start --mib "$MIB" --passes 1
e2e_kv filled
e2e_wait verify
run_workload swapstress e2e_hold_verify
e2e_kv verified
e2e_wait again
run_workload swapstress-again "$BIN/swapstress" --mib "$MIB" --passes 1 --seed 7
e2e_kv again
e2e_dmesg
e2e_wait end
