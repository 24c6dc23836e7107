#!/bin/sh
# test/e2e-debian-thp.ts: transparent huge pages through swap and frontswap.
#   e2e-thp.sh MIB
# 2 MiB-aligned anonymous memory with MADV_HUGEPAGE, filled 2 MiB at a time,
# then every byte verified. A huge page is swapped out whole (thp_swpout,
# one 2 MiB page handed to swap_writepage and so to frontswap) only on a swap
# device with swap clusters, which 5.10 sets up only for a non-rotational
# device; virtio-blk says rotational, so the swap disk is re-enabled as
# non-rotational first (as a virtio-scsi disk on an SSD or an NVMe disk is).
. "$(dirname "$0")/e2e-lib.sh"
MIB=${1:-384}
T=/sys/kernel/mm/transparent_hugepage
# Debian's config says always (CONFIG_TRANSPARENT_HUGEPAGE_ALWAYS), but 5.10
# sets never at boot in a guest under 512 MiB of RAM (hugepage_init); the
# admin's way back is sysfs, as here (with defrag back at the config's
# default, madvise): the test guest stays small for TCG
BOOT=$(cat $T/enabled 2>&1)
grep -q '\[always\]' $T/enabled 2>/dev/null || echo always > $T/enabled || mark "@@E2E-FAIL THP always"
grep -q '\[never\]' $T/defrag 2>/dev/null && { echo madvise > $T/defrag || mark "@@E2E-FAIL THP defrag"; }
mark "@@E2E-THP enabled=[$(cat $T/enabled 2>&1)] at_boot=[$BOOT] defrag=[$(cat $T/defrag 2>&1)] kernel=$(uname -r)"
SWAPDEV=$(awk 'NR == 2 { print $1 }' /proc/swaps)
if [ -n "$SWAPDEV" ]; then
  swapoff "$SWAPDEV" || mark "@@E2E-FAIL swapoff $SWAPDEV"
  echo 0 > "/sys/block/${SWAPDEV##*/}/queue/rotational" || mark "@@E2E-FAIL rotational"
  swapon "$SWAPDEV" || mark "@@E2E-FAIL swapon $SWAPDEV"
  mark "@@E2E-SWAP $SWAPDEV rotational=$(cat "/sys/block/${SWAPDEV##*/}/queue/rotational")"
else
  mark "@@E2E-FAIL no swap device"
fi
e2e_kv before
run_workload swapstress "$BIN/swapstress" --huge --mib "$MIB" --passes 1
e2e_kv after
e2e_dmesg
