#!/usr/bin/env bash
# Build virtio_tmem.ko from guest-driver/ against the headers of Debian's kernel
# (build-debian-kernel.sh), out of the working tree, so that it never
# overwrites guest-driver/virtio_tmem.ko (the module of the project's kernel).
#   $CACHE/debian-module/<h>/virtio_tmem.ko    <h>: the sources + the kernel version
# Prints the path of the .ko on stdout (cached: a second call costs a hash).
#
#   build-debian-module.sh [KERNEL_DIR]   default: the output of build-debian-kernel.sh
#
# Compiler: Debian built 5.10.0-N with gcc-10 (its headers say CC = gcc-10);
# the host has gcc 12, and the module is built with it (CC=gcc, set on the
# command line, which wins over the headers' assignment). 5.10's vermagic
# does not name the compiler and the module loads and runs (e2e tests); set
# TMEM_KVM_DEBIAN_CC=gcc-10 to use another one.
LOG_TAG=debian-module
source "$(dirname "$0")/lib/common.sh"

KD=${1:-}
[ -n "$KD" ] || KD=$(bash "$VM_IMAGES_DIR/build-debian-kernel.sh")
[ -f "$KD/.done" ] || die "$KD is not a built Debian kernel directory"
CC_CMD=${TMEM_KVM_DEBIAN_CC:-gcc}
SRC="$VM_IMAGES_DIR/../guest-driver"
SHARED="$VM_IMAGES_DIR/../shared"

build() {
  local files h out
  # what make reads: the module's sources and build files, and the ABI header of shared/
  files=$(cd "$SRC" && ls ./*.c ./*.h Makefile Kbuild 2>/dev/null)
  h=$( { echo "kernel=$(cat "$KD/version") packages=$(cat "$KD/packages") cc=$CC_CMD"; \
         (cd "$SRC" && for f in $files; do echo "$f"; cat "$f"; done); cat "$SHARED"/*.h; } | sha256sum | cut -c1-16)
  out="$CACHE/debian-module/$h"
  if [ -f "$out/virtio_tmem.ko" ]; then log "cached: $out/virtio_tmem.ko"; echo "$out/virtio_tmem.ko"; return 0; fi
  local t0=$SECONDS
  mkdir -p "$CACHE/debian-module"
  ST=$(mktemp -d "$CACHE/debian-module/build.XXXXXX")
  trap 'rm -rf "$ST"' EXIT
  # the same layout as the repository: Kbuild adds -I$(src)/../shared
  mkdir -p "$ST/guest-driver" "$ST/shared"
  (cd "$SRC" && cp $files "$ST/guest-driver/")
  cp "$SHARED"/*.h "$ST/shared/"
  log "make -C guest-driver KDIR=$(readlink -f "$KD/headers") CC=$CC_CMD"
  if ! make -C "$ST/guest-driver" KDIR="$(readlink -f "$KD/headers")" CC="$CC_CMD" >"$ST/build.log" 2>&1; then
    cat "$ST/build.log" >&2; die "building the module against Debian's headers failed"
  fi
  grep -i 'warning' "$ST/build.log" >&2 || true
  mkdir -p "$out"
  cp "$ST/guest-driver/virtio_tmem.ko" "$out/virtio_tmem.ko.tmp"
  cp "$ST/build.log" "$out/build.log"
  mv "$out/virtio_tmem.ko.tmp" "$out/virtio_tmem.ko"
  # keep the 6 newest
  ls -dt "$CACHE"/debian-module/*/ 2>/dev/null | grep -E '/[0-9a-f]{16}/$' | tail -n +7 | xargs -r rm -rf
  log "built $out/virtio_tmem.ko ($(modinfo -F vermagic "$out/virtio_tmem.ko")) in $((SECONDS - t0)) s"
  echo "$out/virtio_tmem.ko"
}

with_lock debian-module build
