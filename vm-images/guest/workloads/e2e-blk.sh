#!/bin/sh
# test/e2e-blk.ts: swap on a vhost-user-blk disk (tmem-blk, or
# qemu-storage-daemon's export) on a 6.1 guest with no module of ours.
#   e2e-blk.sh MIB [PASSES]
# The disk is QEMU's stock vhost-user-blk-pci at PCI 00:10.0 (vm-images/lib/vm.ts
# puts it there; its serial comes from the backend). Steps, each marked for the
# host:
#   mkswap + swapon --discard on it (the only swap)      @@E2E-BLK ... / @@E2E-SWAPON
#   swapstress --hold MIB: fill more than guest RAM      @@E2E-HELD filled N
#   gate "held" (the host reads the daemon's counters)
#   verify every page (PASSES passes)                    @@TMEM-RESULT
#   swapoff, gate "swapoff"; blkdiscard, gate "discarded"
. "$(dirname "$0")/e2e-lib.sh"
MIB=${1:-384}
PASSES=${2:-2}
fail() { mark "@@E2E-FAIL $*"; }

DEV=""
for b in /sys/bus/pci/devices/0000:00:10.0/virtio*/block/vd*; do
  [ -d "$b" ] && DEV=/dev/${b##*/}
done
if [ -z "$DEV" ] || [ ! -b "$DEV" ]; then
  fail "no vhost-user-blk disk at PCI 00:10.0"
  e2e_dmesg
  exit 1
fi
Q=/sys/block/${DEV##*/}/queue
mark "@@E2E-BLK dev=$DEV serial=$(cat "/sys/block/${DEV##*/}/serial" 2>/dev/null | tr -c -d '[:alnum:]_.-') size_sectors=$(cat "/sys/block/${DEV##*/}/size") lbs=$(cat $Q/logical_block_size) pbs=$(cat $Q/physical_block_size) discard_max=$(cat $Q/discard_max_bytes) discard_gran=$(cat $Q/discard_granularity) wz_max=$(cat $Q/write_zeroes_max_bytes) hw_queues=$(ls -d /sys/block/${DEV##*/}/mq/* 2>/dev/null | wc -l) kernel=$(uname -r)"
mkswap -L tmemblk "$DEV" > /dev/null || fail "mkswap $DEV"
swapon --discard "$DEV" || fail "swapon --discard $DEV"
mark "@@E2E-SWAPON $(awk 'NR > 1 { printf "%s size_kb=%s; ", $1, $3 }' /proc/swaps)"
e2e_counters before
e2e_hold_start --mib "$MIB" --passes "$PASSES" || { e2e_dmesg; exit 1; }
e2e_counters held
e2e_wait held
run_workload swapstress e2e_hold_verify
e2e_counters after
swapoff "$DEV" && mark "@@E2E-SWAPOFF ok" || fail "swapoff $DEV"
e2e_wait swapoff
# swapoff frees the slots with the device already closed for writing: the
# kernel issues no discard for them; blkdiscard gives the rest back
blkdiscard -f "$DEV" && mark "@@E2E-DISCARD ok" || fail "blkdiscard $DEV"
e2e_wait discarded
e2e_dmesg
