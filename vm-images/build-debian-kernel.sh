#!/usr/bin/env bash
# Debian's own bullseye kernel for the test VM, unmodified: the newest
# linux-image-5.10.0-N-amd64 in the suite's lists, its headers
# (linux-headers-5.10.0-N-amd64 + -common + linux-kbuild-5.10, for building
# the module out of tree) and a small initramfs of ours, because Debian builds
# virtio_pci, virtio_blk, ext4 and qemu_fw_cfg as modules.
#
# Packages come through the private apt state build-kernel.sh already uses
# ($CACHE/apt-bullseye; the host's apt is untouched) and are unpacked with
# dpkg-deb -x (lib/debian-kernel.sh, shared with build-bookworm-kernel.sh):
#   $CACHE/debian-pkgs-<versions>/root/         the unpacked packages (the slow part)
#   $CACHE/debian-kernel-<h>/vmlinuz            Debian's kernel image, as shipped
#   $CACHE/debian-kernel-<h>/initrd.img         ours: busybox + the modules below + /init
#   $CACHE/debian-kernel-<h>/headers            -> the -amd64 headers tree (KDIR for make)
#   $CACHE/debian-kernel-<h>/{version,config,packages,modules.load}
#   $CACHE/debian-kernel -> debian-kernel-<h>
# <h> is keyed by the package versions, this script, lib/debian-apt.sh and
# lib/debian-kernel.sh.
# Prints the directory on stdout. Idempotent; FORCE=1 rebuilds the initramfs; TMEM_KVM_DEBIAN_UPDATE=1
# runs apt-get update first (otherwise only when the lists are missing).
#
# The initramfs /init loads, in dependency order (modprobe --show-depends on
# the host): virtio_pci, virtio_blk, virtio_console (the harness port),
# qemu_fw_cfg (the run command), ext4 with crc32c; mounts the disk whose
# virtio serial is tmemroot; copies those modules and their modules.dep to the
# root's /lib/modules/<version> (so modprobe works there too) and
# switch_roots to the init= of the command line (/sbin/tmem-init).
LOG_TAG=debian-kernel
source "$(dirname "$0")/lib/common.sh"

SUITE=bullseye
FLAVOUR=amd64
# the guest's boot modules; their dependencies are added by modprobe
BOOT_MODULES="virtio_pci virtio_blk virtio_console qemu_fw_cfg crc32c_generic ext4"
source "$VM_IMAGES_DIR/lib/debian-kernel.sh"

build() {
  apt_ensure kmod cpio xz-utils
  apt_state
  # the choice of packages, remembered per state of the lists (apt-cache takes
  # seconds per call; the lists change only with TMEM_KVM_DEBIAN_UPDATE=1)
  local memo versions="" p
  memo="$A/debian-kernel-pick-$(cat "$A"/lists/*_InRelease | sha256sum | cut -c1-16)-$FLAVOUR"
  if [ -s "$memo" ]; then
    versions=$(cat "$memo")
  else
    local img
    img=$(apt-cache "${APTOPTS[@]}" pkgnames "linux-image-5.10.0-" | grep -E "^linux-image-5\.10\.0-[0-9]+-$FLAVOUR\$" | sort -V | tail -1)
    [ -n "$img" ] || die "no linux-image-5.10.0-N-$FLAVOUR in the $SUITE lists"
    local abi=${img#linux-image-} # 5.10.0-N-amd64
    for p in "$img" "linux-headers-$abi" "linux-headers-${abi%-"$FLAVOUR"}-common" linux-kbuild-5.10 busybox-static; do
      versions+="$p=$(pkg_version "$p") "
    done
    echo "$versions" > "$memo"
  fi
  local pkgs=() pv
  for pv in $versions; do pkgs+=("${pv%%=*}"); done
  local img=${pkgs[0]}
  local abi=${img#linux-image-}
  log "Debian kernel: $img (${versions%% *})"
  local PH OUT H
  PH=$(echo "$versions" | sha256sum | cut -c1-16)
  local P="$CACHE/debian-pkgs-$PH"
  H=$( { echo "pkgs=$PH modules=$BOOT_MODULES"; cat "$0" "${DEBIAN_KERNEL_LIBS[@]}"; } | sha256sum | cut -c1-16)
  OUT="$CACHE/debian-kernel-$H"
  cached_kernel "$OUT" debian-kernel && return 0

  # --- 1. download and unpack
  if [ ! -f "$P/.done" ]; then
    unpack_debs "$P" "$versions"
    # the -amd64 headers' Makefile includes /usr/src/linux-headers-*-common/Makefile
    # by its absolute path: point it at the unpacked tree (nothing else there is absolute)
    sed -i "s|^include /usr/src/|include $P/root/usr/src/|" "$P/root/usr/src/linux-headers-$abi/Makefile"
    touch "$P/.done"
  fi
  local R="$P/root" ver="$abi"
  [ -f "$R/usr/src/linux-headers-$ver/Makefile" ] || die "headers $R/usr/src/linux-headers-$ver missing"

  # --- 2. the initramfs
  rm -rf "$OUT"; mkdir -p "$OUT"
  make_initramfs "$R" "$ver" "$OUT"
  install_kernel "$R" "$ver" "$OUT" "$versions"
  ln -sfn "$R/usr/src/linux-headers-$ver" "$OUT/headers"
  publish "$OUT" debian-kernel debian-pkgs
}

with_lock debian-kernel build
