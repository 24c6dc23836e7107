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

# e2e_dmesg: the kernel's lines about the driver and anything alarming
# (the host decides which are trouble: test/e2e/harness.ts dmesgLines).
e2e_dmesg() {
  dmesg | grep -i -E 'virtio_tmem|virtio-tmem|BUG|WARNING|Oops|sleeping function|lockup|stall|hung task|blocked for more|Call Trace|panic|cut here|PM: ' |
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

# e2e_kv TAG: e2e_counters, plus the driver's debugfs stats (drv_NAME), the
# transparent huge page counters of /proc/vmstat (vmstat_thp_*), AnonHugePages
# of /proc/meminfo (in kB) and the driver's timeout_ms parameter.
e2e_kv() {
  e2e_counters "$1"
  sed -n "s/^\([a-z_0-9]*\) \(-\{0,1\}[0-9][0-9]*\)\$/@@E2E-KV $1 drv_\1 \2/p" /sys/kernel/debug/virtio_tmem/stats 2>/dev/null | mark_lines
  grep -E '^thp_' /proc/vmstat | sed "s/^/@@E2E-KV $1 vmstat_/" | mark_lines
  mark "@@E2E-KV $1 meminfo_AnonHugePages $(awk '/^AnonHugePages:/ { print $2 }' /proc/meminfo)"
  [ -r /sys/module/virtio_tmem/parameters/timeout_ms ] &&
    mark "@@E2E-KV $1 param_timeout_ms $(cat /sys/module/virtio_tmem/parameters/timeout_ms)"
  return 0
}

# e2e_hold_start SWAPSTRESS_ARGS...: swapstress --hold in the background;
# returns once it has filled its memory (what did not fit in RAM is in swap
# now, and stays there while nothing touches it). e2e_hold_verify lets it
# verify: run it as `run_workload NAME e2e_hold_verify`.
HOLD_FIFO=/tmp/e2e-hold.fifo
e2e_hold_start() {
  rm -f "$HOLD_FIFO"
  mkfifo "$HOLD_FIFO" || { mark "@@E2E-FAIL mkfifo"; return 1; }
  HOLD_OUT=$(mktemp)
  "$BIN/swapstress" "$@" --hold "$HOLD_FIFO" > "$HOLD_OUT" &
  HOLD_PID=$!
  # swapstress writes "filled PAGES" (a swapstress that failed before never
  # opens the FIFO: give up after 20 minutes rather than wait for ever)
  if ! HOLD_LINE=$(timeout 1200 head -n 1 "$HOLD_FIFO"); then
    mark "@@E2E-FAIL swapstress --hold did not fill: $(cat "$HOLD_OUT")"
    return 1
  fi
  mark "@@E2E-HELD $HOLD_LINE"
}

# e2e_hold_verify: let the swapstress of e2e_hold_start verify; its output
# and exit status.
e2e_hold_verify() {
  # (a swapstress that is gone opens no reader: do not wait for one for ever)
  timeout 60 sh -c 'echo go > "$1"' sh "$HOLD_FIFO" || mark "@@E2E-FAIL swapstress --hold took no go"
  wait "$HOLD_PID"
  rc=$?
  cat "$HOLD_OUT"
  rm -f "$HOLD_OUT" "$HOLD_FIFO"
  return $rc
}
