# shellcheck shell=sh
# Helpers of the end-to-end tests' guest scripts (test/e2e-*.ts): lib.sh plus
# a handshake with the host over the serial console.
. "$(dirname "$0")/lib.sh"

# e2e_wait NAME: print "@@E2E-WAIT NAME" and wait (at most 600 s) for one line
# on the console from the host (it reads its counters meanwhile).
e2e_wait() {
  mark "@@E2E-WAIT $1"
  timeout --foreground 600 head -n 1 > /dev/null || mark "@@E2E-NOGO $1"
  mark "@@E2E-GO $1"
}

# e2e_pools TAG: the driver's pool table, one "@@E2E-POOLS TAG line" per pool.
e2e_pools() {
  mark "@@E2E-POOLS $1 begin"
  sed "s/^/@@E2E-POOLS $1 /" /sys/kernel/debug/virtio_tmem/pools 2>/dev/null | mark_lines
  mark "@@E2E-POOLS $1 end"
}

# e2e_dmesg: the kernel's lines about the driver and anything alarming.
e2e_dmesg() {
  dmesg | grep -i -E 'virtio_tmem|virtio-tmem|BUG|WARNING|Oops|sleeping function|soft lockup|hung task|blocked for more' |
    sed 's/^/@@E2E-DMESG /' | mark_lines
}

# e2e_fill_tmem TMPFS_MIB SWAP_MIB: put pages into both kinds of pools and keep
# some there: a small file set on /mnt/data read twice (clean pages dropped ->
# cleancache), a tmpfs file of TMPFS_MIB random MiB that stays (pushed to swap
# -> frontswap, and held there), then SWAP_MIB of anonymous memory.
e2e_fill_tmem() {
  "$BIN/filereader" --dir /mnt/data/e2e-small --mib 48 --files 4 --passes 2 > /dev/null || mark "@@E2E-FAIL filereader"
  mkdir -p /mnt/e2e-tmpfs
  mount -t tmpfs -o size=$(($1 + 16))m tmpfs /mnt/e2e-tmpfs || mark "@@E2E-FAIL tmpfs"
  dd if=/dev/urandom of=/mnt/e2e-tmpfs/held bs=1M count="$1" 2> /dev/null || mark "@@E2E-FAIL dd"
  "$BIN/swapstress" --mib "$2" --passes 1 > /dev/null || mark "@@E2E-FAIL swapstress"
  # cleancache gets are exclusive: what pass 2 read back is in the page cache
  # again; drop it (page cache only) so the pools hold it when we look
  "$BIN/filereader" --dir /mnt/data/e2e-small --mib 48 --files 4 --passes 1 > /dev/null || mark "@@E2E-FAIL filereader"
  sync
  echo 1 > /proc/sys/vm/drop_caches
}

# e2e_counters TAG: the kernel's own frontswap and cleancache counters and
# /proc/vmstat's swap and paging counters, one "@@E2E-KV TAG name value" each.
e2e_counters() {
  for f in /sys/kernel/debug/frontswap/* /sys/kernel/debug/cleancache/*; do
    [ -r "$f" ] || continue
    d=${f%/*}
    mark "@@E2E-KV $1 ${d##*/}_${f##*/} $(cat "$f")"
  done
  grep -E '^(pswpin|pswpout|pgpgin|pgpgout|pgmajfault) ' /proc/vmstat | sed "s/^/@@E2E-KV $1 vmstat_/" | mark_lines
}
