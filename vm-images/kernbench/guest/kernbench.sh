#!/bin/sh
# kernbench guest workload: a parallel make of Linux 5.10 objects from the data disk.
#   kernbench.sh [--jobs N] [--swap-blk]
# --swap-blk: swap on the vhost-user-blk disk at PCI 00:10.0 (tmem-blk; mkswap,
# swapon --discard) instead of the swap disk (the configuration tmem-blk).
# The data disk (/mnt/data, built on the host by vm-images/kernbench/build-data.mjs) holds
# kb/src (the sources and headers the objects need), kb/build (generated headers and a
# Makefile whose recipes are the exact gcc commands of the kernel build). The objects
# are compiled from scratch; their outputs go to the same disk.
# Prints @@TMEM-RESULT (see vm-images/guest/workloads/lib.sh) with result
# {jobs, objects, built, make_rc, zswap, mem_kb}.
. /opt/tmem/workloads/lib.sh
JOBS=4 SWAP_BLK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --jobs) JOBS=$2; shift 2 ;;
    --swap-blk) SWAP_BLK=1; shift ;;
    *) echo "usage: $0 [--jobs N] [--swap-blk]" >&2; exit 2 ;;
  esac
done
if [ "$SWAP_BLK" = 1 ]; then
  BLKDEV=""
  for b in /sys/bus/pci/devices/0000:00:10.0/virtio*/block/vd*; do [ -d "$b" ] && BLKDEV=/dev/${b##*/}; done
  [ -n "$BLKDEV" ] || { echo "kernbench: --swap-blk: no vhost-user-blk disk at PCI 00:10.0" >&2; exit 1; }
  mkswap "$BLKDEV" > /dev/null && swapon --discard "$BLKDEV" || { echo "kernbench: swapon --discard $BLKDEV failed" >&2; exit 1; }
fi
KB=/mnt/data/kb
[ -f "$KB/build/Makefile.kernbench" ] || { echo "kernbench: no $KB/build/Makefile.kernbench (data disk missing?)" >&2; exit 1; }

kb_make() {
  cd "$KB/build" || return 1
  n=$(grep -c '^# obj ' Makefile.kernbench)
  # progress on the console ("  CC obj" lines), the full log in /tmp
  { make -f Makefile.kernbench -k -j"$JOBS" 2>&1; echo $? > /tmp/kernbench.rc; } | tee /tmp/kernbench.log | grep --line-buffered '^  CC ' > /dev/console
  rc=$(cat /tmp/kernbench.rc)
  built=$(find . -name '*.o' -newer Makefile.kernbench | wc -l)
  sync
  tail -5 /tmp/kernbench.log >&2
  z=$(cat /sys/module/zswap/parameters/enabled 2>/dev/null || echo none)
  zc=$(cat /sys/module/zswap/parameters/compressor 2>/dev/null || echo none)
  zp=""
  if [ -d /sys/kernel/debug/zswap ]; then
    zp=$(cd /sys/kernel/debug/zswap && for f in *; do printf ',"%s":%s' "$f" "$(cat "$f")"; done)
  fi
  printf '{"jobs":%d,"objects":%d,"built":%d,"make_rc":%d,"zswap":"%s","zswap_compressor":"%s","zswap_debugfs":{%s},"mem_kb":%d}\n' \
    "$JOBS" "$n" "$built" "$rc" "$z" "$zc" "${zp#,}" "$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
  return $rc
}
sync
run_workload kernbench kb_make
