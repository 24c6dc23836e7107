#!/usr/bin/env bash
# qemu-storage-daemon, the peer tmem-blk is compared with (test/bench/blk-bench.mjs):
# what a Debian 12 user runs for a vhost-user-blk export (bookworm's
# qemu-system-common, QEMU 7.2), unpacked into the cache, never installed:
# installing qemu-system-common on the host puts QEMU 7.2 modules into
# /usr/lib/x86_64-linux-gnu/qemu, which the QEMU 11.1 of vm-images/qemu.sh
# also loads (it then aborts at `-device help`).
#
#   $CACHE/qsd-<h>/root/              the unpacked package
#   $CACHE/qsd-<h>/bin/qemu-storage-daemon   a wrapper (QEMU_MODULE_DIR into root/)
#   $CACHE/qsd -> qsd-<h>
# The package's shared-library dependencies are installed on the host with
# apt_ensure (plain Debian libraries). Prints the wrapper's path on stdout.
LOG_TAG=qsd
source "$(dirname "$0")/lib/common.sh"

SUITE=bookworm
# the private apt state of build-bookworm-kernel.sh ($CACHE/apt-bookworm)
source "$VM_IMAGES_DIR/lib/debian-apt.sh"

build() {
  apt_state
  local memo v
  memo="$A/qsd-pick-$(cat "$A"/lists/*_InRelease | sha256sum | cut -c1-16)"
  if [ -s "$memo" ]; then v=$(cat "$memo"); else
    v=$(pkg_version qemu-system-common)
    [ -n "$v" ] || die "qemu-system-common not in the $SUITE lists"
    echo "$v" > "$memo"
  fi
  local H OUT deb
  H=$( { echo "qemu-system-common=$v"; cat "$0"; } | sha256sum | cut -c1-16)
  OUT="$CACHE/qsd-$H"
  if [ -f "$OUT/.done" ] && [ "${FORCE:-0}" != 1 ] && "$OUT/bin/qemu-storage-daemon" --version >/dev/null 2>&1; then
    log "cached: $OUT ($(head -1 "$OUT/version"))"
    ln -sfn "qsd-$H" "$CACHE/qsd"; echo "$OUT/bin/qemu-storage-daemon"; return 0
  fi
  download "qemu-system-common=$v"
  deb=$(deb_of "qemu-system-common=$v")
  [ -n "$deb" ] || die "qemu-system-common=$v: no .deb in $A/debs after apt-get download"
  # its shared libraries, from the host's own bookworm (the package's Depends: lib*)
  local libs
  libs=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/[ (].*//; s/^ *//' | grep '^lib' | tr '\n' ' ')
  # shellcheck disable=SC2086
  apt_ensure $libs
  rm -rf "$OUT"; mkdir -p "$OUT/root" "$OUT/bin"
  dpkg-deb -x "$deb" "$OUT/root"
  cat > "$OUT/bin/qemu-storage-daemon" <<WRAPPER
#!/bin/sh
# bookworm's qemu-storage-daemon, unpacked by vm-images/build-qsd.sh (not installed on the host)
export QEMU_MODULE_DIR='$OUT/root/usr/lib/x86_64-linux-gnu/qemu'
exec '$OUT/root/usr/bin/qemu-storage-daemon' "\$@"
WRAPPER
  chmod +x "$OUT/bin/qemu-storage-daemon"
  "$OUT/bin/qemu-storage-daemon" --version > "$OUT/version" || die "$OUT/bin/qemu-storage-daemon --version failed"
  log "$(head -1 "$OUT/version")"
  touch "$OUT/.done"
  ln -sfn "qsd-$H" "$CACHE/qsd"
  ls -dt "$CACHE"/qsd-* 2>/dev/null | grep -E '/qsd-[0-9a-f]{16}$' | tail -n +3 | xargs -r rm -rf
  echo "$OUT/bin/qemu-storage-daemon"
}

with_lock qsd build
