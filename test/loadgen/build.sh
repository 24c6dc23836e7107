#!/bin/sh
# Builds test/loadgen/build/tmem-loadgen with the machine's gcc (make does nothing when it is up to date).
set -e
cd "$(dirname "$0")"
exec make -s all "$@"
