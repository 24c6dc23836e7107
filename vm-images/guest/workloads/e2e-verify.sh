#!/bin/sh
# test/e2e-stall.ts: verified anonymous memory through swap (SWAP_MIB, two
# passes), then a verified file set read twice, then the driver's dmesg lines.
#   e2e-verify.sh [SWAP_MIB] [FILE_MIB]
. "$(dirname "$0")/e2e-lib.sh"
run_workload swapstress "$BIN/swapstress" --mib "${1:-384}" --passes 2
run_workload filereader "$BIN/filereader" --dir /mnt/data/e2e-files --mib "${2:-128}" --files 4 --passes 2
e2e_dmesg
