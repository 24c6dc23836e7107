#!/bin/sh
# Cleancache workload: a file set on ext4 (the data disk at /mnt/data if the VM
# has one, else /root), caches dropped, read twice with checksums and timings.
#   filereader.sh [--mib N] [--files F] [--passes K] [--dir D] [--no-drop] [--recreate]
. "$(dirname "$0")/lib.sh"
dir=/root/filereader
mountpoint -q /mnt/data && dir=/mnt/data/filereader
run_workload filereader "$BIN/filereader" --dir "$dir" "$@"
