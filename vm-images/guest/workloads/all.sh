#!/bin/sh
# Both workloads in a row (the end-to-end smoke test). Exit status: worst of both.
d=$(dirname "$0")
"$d/swapstress.sh" "$@"; r1=$?
"$d/filereader.sh"; r2=$?
[ $r1 = 0 ] && [ $r2 = 0 ]
