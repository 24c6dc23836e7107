#!/bin/sh
# test/e2e-lifecycle.ts: pages in both backends, then wait for the host (which
# kills QEMU instead of answering).
. "$(dirname "$0")/e2e-lib.sh"
e2e_fill_tmem 64 192
e2e_pools hold
e2e_wait hold
