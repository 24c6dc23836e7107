#!/usr/bin/env bash
# Build the guest root image: Debian bookworm minbase (mmdebstrap, no loop mounts)
# + our init (guest/init.sh -> /sbin/tmem-init), as an ext4 image made by mkfs.ext4 -d.
#   $CACHE/rootfs-base-<h>/{rootfs.tar,tree/}  the slow part (mmdebstrap, ~1-3 min), keyed by the package list
#   $CACHE/rootfs-<h2>/rootfs.img              fast part (mkfs.ext4 -d, ~5 s), keyed by base + init.sh
#   $CACHE/rootfs -> rootfs-<h2>
# Prints the image path on stdout. Project files (module, workloads) are NOT in
# this image: they go on the small tmemfiles disk (build-tmemfiles.sh).
LOG_TAG=rootfs
source "$(dirname "$0")/lib/common.sh"

SUITE=bookworm
PKGS="build-essential,kmod,procps,util-linux,e2fsprogs,busybox,psmisc,less,strace"
ROOT_SIZE="${TMEM_KVM_ROOT_SIZE:-2G}"
RECIPE=1
INIT="$VM_IMAGES_DIR/guest/init.sh"
BHASH=$(echo "recipe=$RECIPE suite=$SUITE pkgs=$PKGS" | sha256sum | cut -c1-16)
BASE="$CACHE/rootfs-base-$BHASH"
HASH=$( { echo "base=$BHASH size=$ROOT_SIZE"; cat "$INIT"; } | sha256sum | cut -c1-16)
OUT="$CACHE/rootfs-$HASH"

build_base() {
  [ -f "$BASE/.done" ] && { log "cached base: $BASE"; return 0; }
  local t0=$SECONDS mirror
  apt_ensure mmdebstrap e2fsprogs
  mirror=$(debian_mirror)
  rm -rf "$BASE"; mkdir -p "$BASE"
  log "mmdebstrap --variant=minbase $SUITE (+ $PKGS) from $mirror ... log $BASE/mmdebstrap.log"
  mmdebstrap --variant=minbase --aptopt='APT::Install-Recommends "false"' \
    --include="$PKGS" --customize-hook='chroot "$1" apt-get clean' \
    "$SUITE" "$BASE/rootfs.tar" "deb $mirror $SUITE main" >"$BASE/mmdebstrap.log" 2>&1 \
    || { tail -30 "$BASE/mmdebstrap.log" >&2; die "mmdebstrap failed (log $BASE/mmdebstrap.log)"; }
  log "extracting tree"
  mkdir -p "$BASE/tree"
  tar -xpf "$BASE/rootfs.tar" -C "$BASE/tree" --numeric-owner
  log "base built in $((SECONDS - t0)) s ($(du -sh "$BASE/tree" | cut -f1))"
  touch "$BASE/.done"
}

build_image() {
  if [ -f "$OUT/.done" ] && [ "${FORCE:-0}" != 1 ]; then
    log "cached: $OUT/rootfs.img"; ln -sfn "rootfs-$HASH" "$CACHE/rootfs"; echo "$OUT/rootfs.img"; return 0
  fi
  build_base
  local t0=$SECONDS T="$BASE/tree"
  # our additions to the tree (idempotent overwrites)
  install -m 0755 "$INIT" "$T/sbin/tmem-init"
  mkdir -p "$T/opt/tmem" "$T/mnt/data" "$T/root"
  echo tmem-guest > "$T/etc/hostname"
  printf '/dev/vda / ext4 rw 0 1\n' > "$T/etc/fstab"
  # no root password: console login is never used (init gives a root shell), but keep it sane
  sed -i 's/^root:[^:]*:/root::/' "$T/etc/shadow" 2>/dev/null || true
  rm -rf "$OUT"; mkdir -p "$OUT"
  log "mkfs.ext4 -d ($ROOT_SIZE)"
  truncate -s "$ROOT_SIZE" "$OUT/rootfs.img.tmp"
  mkfs.ext4 -q -F -L tmemroot -E lazy_itable_init=0,lazy_journal_init=0 -d "$T" "$OUT/rootfs.img.tmp" >&2 \
    || die "mkfs.ext4 -d failed"
  mv "$OUT/rootfs.img.tmp" "$OUT/rootfs.img"
  log "image built in $((SECONDS - t0)) s"
  touch "$OUT/.done"
  ln -sfn "rootfs-$HASH" "$CACHE/rootfs"
  # keep the 3 newest images (running VMs keep theirs open)
  ls -dt "$CACHE"/rootfs-* 2>/dev/null | grep -E "/rootfs-[0-9a-f]{16}$" | tail -n +4 | xargs -r rm -rf
  echo "$OUT/rootfs.img"
}

with_lock rootfs build_image
