#!/usr/bin/env bash
# Build the small project-files disk mounted by the guest at /opt/tmem (read-only):
#   /opt/tmem/virtio_tmem.ko       the guest module, if one is given or found
#   /opt/tmem/workloads/*.sh       guest/workloads scripts
#   /opt/tmem/workloads/bin/*      guest/workloads/*.c compiled here with gcc -static -O2
#   /opt/tmem/extra/               an optional directory of your own (--extra DIR)
# Keyed by the hash of the staged content: $CACHE/tmemfiles/tmemfiles-<hash>.img
# (mkfs.ext4 -d, about a second). Prints the image path on stdout.
#
#   build-tmemfiles.sh [--module PATH | --no-module] [--extra DIR]
# Default module: $TMEM_KVM_MODULE, else the newest virtio_tmem.ko under guest-driver/.
LOG_TAG=tmemfiles
source "$(dirname "$0")/lib/common.sh"

MODULE="${TMEM_KVM_MODULE:-auto}" EXTRA=""
while [ $# -gt 0 ]; do
  case "$1" in
    --module) MODULE=$2; shift 2 ;;
    --no-module) MODULE=none; shift ;;
    --extra) EXTRA=$2; shift 2 ;;
    *) die "usage: $0 [--module PATH | --no-module] [--extra DIR]" ;;
  esac
done
if [ "$MODULE" = auto ]; then
  MODULE=$(find "$VM_IMAGES_DIR/../guest-driver" -name virtio_tmem.ko -type f -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -1 | cut -d' ' -f2-)
  [ -n "$MODULE" ] || MODULE=none
fi
[ "$MODULE" = none ] || [ -f "$MODULE" ] || die "module $MODULE not found"

D="$CACHE/tmemfiles"
mkdir -p "$D/bin"
WL="$VM_IMAGES_DIR/guest/workloads"

# static workload binaries, cached by source hash
compile() {
  local src=$1 name h out
  name=$(basename "$src" .c)
  h=$(hash_inputs "$src")
  out="$D/bin/$name-$h"
  if [ ! -x "$out" ]; then
    apt_ensure gcc libc6-dev
    log "gcc -static -O2 $name.c"
    gcc -static -O2 -Wall -o "$out.tmp" "$src" && mv "$out.tmp" "$out" || die "compiling $src failed"
  fi
  echo "$out"
}

build() {
  st=$(mktemp -d "$D/stage.XXXXXX")
  trap 'rm -rf "$st"' EXIT
  mkdir -p "$st/workloads/bin"
  cp "$WL"/*.sh "$st/workloads/"
  chmod 0755 "$st"/workloads/*.sh
  local c
  for c in "$WL"/*.c; do cp "$(compile "$c")" "$st/workloads/bin/$(basename "$c" .c)"; done
  if [ "$MODULE" != none ]; then
    cp "$MODULE" "$st/virtio_tmem.ko"
    log "module: $MODULE"
  else
    log "no module (boots without virtio_tmem.ko)"
  fi
  [ -z "$EXTRA" ] || cp -a "$EXTRA" "$st/extra"
  local h img
  h=$(cd "$st" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
  img="$D/tmemfiles-$h.img"
  if [ -f "$img" ]; then log "cached: $img"; echo "$img"; return 0; fi
  local kb size
  kb=$(du -sk "$st" | cut -f1)
  size=$(( (kb * 2 + 32768) / 1024 ))M
  apt_ensure e2fsprogs
  truncate -s "$size" "$img.tmp"
  mkfs.ext4 -q -F -L tmemfiles -d "$st" "$img.tmp" >&2 || die "mkfs.ext4 -d failed"
  mv "$img.tmp" "$img"
  # keep the 8 newest images
  ls -t "$D"/tmemfiles-*.img 2>/dev/null | tail -n +9 | xargs -r rm -f
  log "built $img ($size)"
  echo "$img"
}

with_lock tmemfiles build
