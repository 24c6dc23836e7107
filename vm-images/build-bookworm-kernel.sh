#!/usr/bin/env bash
# Debian 12 (bookworm)'s own 6.1 kernel for the test VM, unmodified, with a
# small initramfs of ours (Debian builds virtio_pci, virtio_blk,
# virtio_console and qemu_fw_cfg as modules, and in the generic flavour ext4).
# No frontswap in 6.1 and no module of ours: this guest swaps on a block
# device (tmem-blk through QEMU's vhost-user-blk-pci, or a plain disk).
#
#   build-bookworm-kernel.sh [cloud|generic]
#     cloud    linux-image-6.1.0-N-cloud-amd64 (the default): what cloud images
#              run; no zswap (# CONFIG_ZSWAP is not set), ext4 built in
#     generic  linux-image-6.1.0-N-amd64: the same source and version with
#              zswap built in (off by default: zswap.enabled=1 turns it on;
#              zbud + lzo built in), for comparing with zswap on one kernel
#
# N is pinned below (the newest the mirror had when this was written): a
# test names the kernel it ran. When Debian drops that ABI from the suite the
# download fails with a one-line error: move the pin (and run with
# TMEM_KVM_DEBIAN_UPDATE=1 to refresh the lists).
#
# Packages come through a private apt state ($CACHE/apt-bookworm; the host's
# apt is untouched) and are unpacked with dpkg-deb -x (lib/debian-kernel.sh,
# shared with build-debian-kernel.sh):
#   $CACHE/bookworm-<flavour>-pkgs-<h>/root/      the unpacked packages
#   $CACHE/bookworm-<flavour>-kernel-<h>/vmlinuz  Debian's kernel image, as shipped
#   $CACHE/bookworm-<flavour>-kernel-<h>/initrd.img  ours: busybox + modules + /init
#   $CACHE/bookworm-<flavour>-kernel-<h>/{version,config,packages,modules.load}
#   $CACHE/bookworm-<flavour>-kernel -> bookworm-<flavour>-kernel-<h>
# <h> is keyed by the package versions, this script, lib/debian-apt.sh and
# lib/debian-kernel.sh.
# Prints the directory on stdout. Idempotent; FORCE=1 rebuilds the initramfs.
#
# The initramfs and its /init are those of build-debian-kernel.sh
# (lib/debian-kernel.sh: load the modules in modules.dep order, mount the disk
# whose virtio serial is tmemroot, copy the modules to the root, switch_root
# to init=).
LOG_TAG=bookworm-kernel
source "$(dirname "$0")/lib/common.sh"

SUITE=bookworm
ABI=6.1.0-50         # pinned: linux-image-6.1.0-50-{cloud-,}amd64 6.1.176-1 (deb.debian.org, 2026-12)
KVERSION=6.1.176-1
FLAVOUR_ARG=${1:-cloud}
case "$FLAVOUR_ARG" in
  cloud) FLAVOUR=cloud-amd64 ;;
  generic) FLAVOUR=amd64 ;;
  *) die "unknown flavour '$FLAVOUR_ARG' (use cloud or generic)" ;;
esac
NAME=bookworm-$FLAVOUR_ARG
# the guest's boot modules; their dependencies are added by modprobe (built-in ones are skipped)
BOOT_MODULES="virtio_pci virtio_blk virtio_console qemu_fw_cfg crc32c_generic ext4"
DOWNLOAD_HINT="pinned ABI $ABI gone from $SUITE? move ABI/KVERSION in $0"
source "$VM_IMAGES_DIR/lib/debian-kernel.sh"

build() {
  apt_ensure kmod cpio
  apt_state
  local img="linux-image-$ABI-$FLAVOUR" ver="$ABI-$FLAVOUR" memo versions
  # busybox-static's version, remembered per state of the lists (apt-cache takes seconds)
  memo="$A/bookworm-pick-$(cat "$A"/lists/*_InRelease | sha256sum | cut -c1-16)"
  if [ -s "$memo" ]; then
    versions="$img=$KVERSION $(cat "$memo")"
  else
    local bb
    bb=$(pkg_version busybox-static)
    [ -n "$bb" ] || die "busybox-static not in the $SUITE lists"
    echo "busybox-static=$bb" > "$memo"
    versions="$img=$KVERSION busybox-static=$bb"
  fi
  log "Debian kernel: $img=$KVERSION"
  local PH H OUT P
  PH=$(echo "$versions" | sha256sum | cut -c1-16)
  P="$CACHE/$NAME-pkgs-$PH"
  H=$( { echo "pkgs=$PH modules=$BOOT_MODULES"; cat "$0" "${DEBIAN_KERNEL_LIBS[@]}"; } | sha256sum | cut -c1-16)
  OUT="$CACHE/$NAME-kernel-$H"
  cached_kernel "$OUT" "$NAME-kernel" && return 0

  if [ ! -f "$P/.done" ]; then
    unpack_debs "$P" "$versions"
    touch "$P/.done"
  fi
  local R="$P/root"
  rm -rf "$OUT"; mkdir -p "$OUT"
  make_initramfs "$R" "$ver" "$OUT"
  install_kernel "$R" "$ver" "$OUT" "$versions"
  log "zswap: $(grep -E '^(# )?CONFIG_ZSWAP[ =]' "$OUT/config")"
  publish "$OUT" "$NAME-kernel" "$NAME-pkgs"
}

with_lock "$NAME-kernel" build
