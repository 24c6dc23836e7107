#!/bin/sh
# test/e2e-unbind.ts: unbind and bind virtio_tmem through sysfs while
# frontswap holds pages.
#   e2e-unbind.sh MIB
# swapstress fills MIB and holds; gate "unbind" (the host reads tmemd's
# counters); unbind; gate "unbound"; bind; gate "rebound"; swapstress
# verifies every page; gate "again", a second swapstress (tmem in use after
# the rebind); gate "end".
. "$(dirname "$0")/e2e-lib.sh"
MIB=${1:-256}
DRV=/sys/bus/virtio/drivers/virtio_tmem
DEV=""
for l in "$DRV"/virtio*; do [ -e "$l" ] && DEV=${l##*/}; done
[ -n "$DEV" ] || mark "@@E2E-FAIL no device bound to virtio_tmem"
mark "@@E2E-DEV $DEV"
e2e_kv start
e2e_hold_start --mib "$MIB" --passes 1
e2e_kv held
e2e_pools held
e2e_wait unbind
echo "$DEV" > "$DRV/unbind" || mark "@@E2E-FAIL unbind"
e2e_kv unbound
e2e_pools unbound
e2e_wait unbound
echo "$DEV" > "$DRV/bind" || mark "@@E2E-FAIL bind"
e2e_kv rebound
e2e_pools rebound
e2e_wait rebound
run_workload swapstress e2e_hold_verify
e2e_kv verified
e2e_wait again
run_workload swapstress-again "$BIN/swapstress" --mib "$MIB" --passes 1 --seed 7
e2e_kv again
e2e_dmesg
e2e_wait end
