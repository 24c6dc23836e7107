#!/bin/sh
# test/e2e-lifecycle.ts: pools with pages in both backends, then umount of the
# data disk and swapoff, the host checking the daemon's pools after each; an
# ext4 remount first.
. "$(dirname "$0")/e2e-lib.sh"
# ext4 remounted read-only and back: the rw remount initialises the same
# superblock again (cleancache init_fs: a new pool), and data read after it
# must still be right (filereader checks every checksum)
e2e_pools pre-remount
mount -o remount,ro /mnt/data && mount -o remount,rw /mnt/data || mark "@@E2E-FAIL remount"
e2e_pools post-remount
e2e_fill_tmem 64 192
e2e_pools before
e2e_wait before
umount /mnt/data || mark "@@E2E-FAIL umount"
e2e_pools after-umount
e2e_wait after-umount
swapoff -a || mark "@@E2E-FAIL swapoff"
e2e_pools after-swapoff
e2e_wait after-swapoff
run_workload stats true
e2e_dmesg
