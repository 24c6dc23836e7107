#!/bin/sh
# test/e2e-reboot.ts: pages in both backends, then a guest reboot in the same
# QEMU (the same vhost-user connection: the daemon keeps the pools, as it
# must for a pause). The second boot's driver sends RESET at probe, so the
# first boot's pools must be gone from the daemon. The data disk survives the
# reboot and tells the two boots apart.
. "$(dirname "$0")/e2e-lib.sh"
if [ -f /mnt/data/.e2e-rebooted ]; then
  e2e_pools second
  e2e_wait second
  run_workload stats true
  e2e_dmesg
else
  e2e_fill_tmem 64 192
  e2e_pools first
  e2e_wait first
  touch /mnt/data/.e2e-rebooted
  sync
  mark "@@E2E-REBOOT"
  busybox reboot -f
fi
