#!/bin/sh
# test/e2e-harness-port.ts: COUNT numbered marker lines of known content, sent
# in one burst while the host has stopped reading and while the kernel prints
# warnings to the console (the way a driver's message lands inside a line).
#   e2e-flood.sh [COUNT]
. "$(dirname "$0")/e2e-lib.sh"
COUNT=${1:-4000}
KMSGS=200
e2e_wait start
# userspace writes to /dev/kmsg are rate limited by default
echo on > /proc/sys/kernel/printk_devkmsg
(
  j=0
  while [ "$j" -lt "$KMSGS" ]; do
    echo "<4>e2e-flood: a kernel warning in the middle of the burst, $j" > /dev/kmsg
    j=$((j + 1))
  done
) &
i=0
while [ "$i" -lt "$COUNT" ]; do
  mark "@@E2E-FLOOD $i 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
  i=$((i + 1))
done
wait
mark "@@E2E-FLOOD-END $COUNT"
