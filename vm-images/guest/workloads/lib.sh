# shellcheck shell=sh
# Helpers for the guest workload scripts: JSON snapshots of /proc/vmstat, swap,
# and the driver's debugfs files, and the @@TMEM-RESULT line for the host.
WL_DIR=$(cd "$(dirname "$0")" && pwd)
BIN="$WL_DIR/bin"
VMSTAT_KEYS="pswpin pswpout pgmajfault pgpgin pgpgout pgfault pgsteal_kswapd pgsteal_direct pgscan_kswapd pgscan_direct workingset_refault_file workingset_refault_anon nr_free_pages"

# mark LINE: a line for the host harness, on stdout (the console, for people)
# and on the harness port when init opened it as fd 9 (see init.sh: on the
# console a kernel message can land inside the line, on the port it cannot).
mark() {
  printf '%s\n' "$*"
  [ "${TMEM_HARNESS:-0}" = 1 ] && printf '%s\n' "$*" >&9
  return 0
}

# mark_lines: mark() each line of stdin.
mark_lines() {
  while IFS= read -r line; do mark "$line"; done
}

json_str() { # escape stdin as the inside of a JSON string
  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/\t/\\t/g' | tr -d '\r' | awk 'BEGIN { ORS = "" } NR > 1 { print "\\n" } { print }'
}

vmstat_json() {
  awk -v keys="$VMSTAT_KEYS" 'BEGIN { n = split(keys, k, " "); for (i = 1; i <= n; i++) want[k[i]] = 1; printf "{"; sep = "" }
    ($1 in want) { printf "%s\"%s\":%s", sep, $1, $2; sep = "," } END { printf "}" }' /proc/vmstat
}

vmstat_delta_json() { # vmstat_delta_json FILE_BEFORE FILE_AFTER (files of "key value" lines)
  awk 'NR == FNR { a[$1] = $2; next } { printf "%s\"%s\":%d", sep, $1, $2 - a[$1]; sep = "," } BEGIN { printf "{" } END { printf "}" }' "$1" "$2"
}

vmstat_raw() { awk -v keys="$VMSTAT_KEYS" 'BEGIN { n = split(keys, k, " "); for (i = 1; i <= n; i++) want[k[i]] = 1 } ($1 in want)' /proc/vmstat; }

debugfs_json() { # every readable file under the driver's debugfs directory, as strings
  d=/sys/kernel/debug/virtio_tmem
  printf '{'
  if [ -d "$d" ]; then
    sep=""
    for f in $(cd "$d" && find . -type f | sort); do
      v=$(timeout 5 cat "$d/$f" 2>/dev/null | head -c 65536 | json_str) || continue
      printf '%s"%s":"%s"' "$sep" "${f#./}" "$v"; sep=","
    done
  fi
  printf '}'
}

swap_json() {
  awk 'NR > 1 { printf "%s{\"dev\":\"%s\",\"size_kb\":%s,\"used_kb\":%s}", sep, $1, $3, $4; sep = "," } BEGIN { printf "[" } END { printf "]" }' /proc/swaps
}

module_json() {
  if [ -d /sys/module/virtio_tmem ]; then
    printf '{"loaded":true,"params":{'
    sep=""
    for p in /sys/module/virtio_tmem/parameters/*; do
      [ -r "$p" ] || continue
      printf '%s"%s":"%s"' "$sep" "${p##*/}" "$(cat "$p" 2>/dev/null | json_str)"; sep=","
    done
    printf '}}'
  else
    printf '{"loaded":false}'
  fi
}

# run_workload NAME CMD ARGS... : run CMD (which prints one JSON object as its
# last stdout line), then print @@TMEM-RESULT with the result and the counters.
run_workload() {
  name=$1; shift
  b=$(mktemp) a=$(mktemp) out=$(mktemp)
  vmstat_raw > "$b"
  t0=$(date +%s.%N)
  "$@" > "$out"
  rc=$?
  t1=$(date +%s.%N)
  vmstat_raw > "$a"
  cat "$out" >&2
  res=$(grep '^{' "$out" | tail -1)
  [ -n "$res" ] || res='null'
  mark "$(printf '@@TMEM-RESULT {"workload":"%s","rc":%d,"wall_s":%s,"result":%s,"vmstat_delta":%s,"vmstat":%s,"swaps":%s,"module":%s,"tmem_debugfs":%s}' \
    "$name" "$rc" "$(echo "$t1 - $t0" | awk '{ printf "%.3f", $1 - $3 }')" "$res" "$(vmstat_delta_json "$b" "$a")" "$(vmstat_json)" "$(swap_json)" "$(module_json)" "$(debugfs_json)")"
  rm -f "$a" "$b" "$out"
  return $rc
}
