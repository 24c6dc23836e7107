#!/bin/sh
# Frontswap workload: swapstress over more anonymous memory than guest RAM.
#   swapstress.sh [--mib N | --ram-pct P] [--seed S] [--passes K]   (default --ram-pct 150)
. "$(dirname "$0")/lib.sh"
run_workload swapstress "$BIN/swapstress" "$@"
