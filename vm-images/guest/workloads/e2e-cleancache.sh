#!/bin/sh
# test/e2e-cleancache.ts: a file set (MIB MiB on /mnt/data) created and read
# (pass 1), then read again (pass 2), caches dropped before each pass, the
# host reading QEMU's block statistics between the steps.
#   e2e-cleancache.sh [MIB]
. "$(dirname "$0")/e2e-lib.sh"
MIB=${1:-384}
DIR=/mnt/data/e2e-files
e2e_wait start
run_workload filereader "$BIN/filereader" --dir "$DIR" --mib "$MIB" --files 8 --passes 1
e2e_wait pass1
run_workload filereader "$BIN/filereader" --dir "$DIR" --mib "$MIB" --files 8 --passes 1
e2e_wait pass2
e2e_dmesg
