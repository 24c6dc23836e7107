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
# apt is untouched) and are unpacked with dpkg-deb -x:
#   $CACHE/bookworm-<flavour>-pkgs-<h>/root/      the unpacked packages
#   $CACHE/bookworm-<flavour>-kernel-<h>/vmlinuz  Debian's kernel image, as shipped
#   $CACHE/bookworm-<flavour>-kernel-<h>/initrd.img  ours: busybox + modules + /init
#   $CACHE/bookworm-<flavour>-kernel-<h>/{version,config,packages,modules.load}
#   $CACHE/bookworm-<flavour>-kernel -> bookworm-<flavour>-kernel-<h>
# <h> is keyed by the package versions and this script. Prints the directory
# on stdout. Idempotent; FORCE=1 rebuilds the initramfs.
#
# The initramfs /init is the one of build-debian-kernel.sh (same contract: load
# the modules in modules.dep order, mount the disk whose virtio serial is
# tmemroot, copy the modules to the root, switch_root to init=).
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

A="$CACHE/apt-$SUITE"
APTOPTS=(-o Dir::Etc::sourcelist="$A/sources.list" -o Dir::Etc::sourceparts=- \
  -o Dir::State::Lists="$A/lists" -o Dir::Cache="$A" -o Dir::Cache::archives="$A/archives" \
  -o APT::Get::List-Cleanup=0 -o Debug::NoLocking=1 -o APT::Sandbox::User=root)

apt_state() {
  mkdir -p "$A/lists/partial" "$A/archives/partial" "$A/debs"
  echo "deb $(debian_mirror) $SUITE main" > "$A/sources.list"
  if [ "${TMEM_KVM_DEBIAN_UPDATE:-0}" = 1 ] || ! ls "$A"/lists/*_Packages* >/dev/null 2>&1; then
    log "apt-get update ($SUITE, private lists in $A)"
    apt-get "${APTOPTS[@]}" update -qq >&2
  fi
}

pkg_version() { apt-cache "${APTOPTS[@]}" show --no-all-versions "$1" 2>/dev/null | sed -n 's/^Version: //p' | head -1; }

deb_of() {
  local p=${1%%=*} v=${1#*=}
  ls "$A/debs/${p}_${v//:/%3a}_"*.deb 2>/dev/null | head -1 || true
}

download() {
  local pv want=()
  for pv in "$@"; do [ -n "$(deb_of "$pv")" ] || want+=("$pv"); done
  [ ${#want[@]} -eq 0 ] && return 0
  log "apt-get download ${want[*]}"
  (cd "$A/debs" && apt-get "${APTOPTS[@]}" download "${want[@]}" >&2) \
    || die "apt-get download ${want[*]} failed (pinned ABI $ABI gone from $SUITE? move ABI/KVERSION in $0)"
}

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
  H=$( { echo "pkgs=$PH modules=$BOOT_MODULES"; cat "$0" "$VM_IMAGES_DIR/build-debian-kernel.sh"; } | sha256sum | cut -c1-16)
  OUT="$CACHE/$NAME-kernel-$H"
  if [ -f "$OUT/.done" ] && [ "${FORCE:-0}" != 1 ]; then
    log "cached: $OUT ($(cat "$OUT/version"))"
    ln -sfn "$NAME-kernel-$H" "$CACHE/$NAME-kernel"
    echo "$OUT"; return 0
  fi

  if [ ! -f "$P/.done" ]; then
    local t0=$SECONDS pv
    # shellcheck disable=SC2086
    download $versions
    rm -rf "$P"; mkdir -p "$P/root"
    for pv in $versions; do dpkg-deb -x "$(deb_of "$pv")" "$P/root"; done
    echo "$versions" > "$P/packages"
    log "downloaded and unpacked in $((SECONDS - t0)) s ($(du -sh "$P/root" | cut -f1))"
    touch "$P/.done"
  fi
  local R="$P/root"
  [ -f "$R/boot/vmlinuz-$ver" ] || die "$R/boot/vmlinuz-$ver missing"
  [ -d "$R/lib/modules/$ver/kernel" ] || die "$R/lib/modules/$ver missing"

  local t2=$SECONDS
  rm -rf "$OUT"; mkdir -p "$OUT"
  depmod -b "$R" "$ver" || die "depmod failed"
  local I="$OUT/initramfs" m line deps order=()
  mkdir -p "$I"/{bin,dev,proc,sys,newroot,lib/modules/"$ver"}
  for m in $BOOT_MODULES; do
    deps=$(modprobe -d "$R" -S "$ver" --show-depends "$m" 2>&1) || die "modprobe --show-depends $m: $deps"
    while read -r line; do
      case "$line" in
        insmod\ *)
          local ko=${line#insmod }; ko=${ko%% *}
          local rel=${ko#"$R/lib/modules/$ver/"}
          case " ${order[*]} " in *" $rel "*) ;; *) order+=("$rel") ;; esac ;;
        builtin\ *) log "$m: built in" ;;
      esac
    done <<< "$deps"
  done
  for m in "${order[@]}"; do
    mkdir -p "$I/lib/modules/$ver/$(dirname "$m")"
    cp "$R/lib/modules/$ver/$m" "$I/lib/modules/$ver/$m"
  done
  cp "$R/lib/modules/$ver"/modules.{builtin,builtin.modinfo,order} "$I/lib/modules/$ver/"
  printf '%s\n' "${order[@]}" > "$I/lib/modules/$ver/boot.order"
  depmod -b "$I" "$ver" || die "depmod of the initramfs modules failed"
  cp "$R/bin/busybox" "$I/bin/busybox"
  # the same /init as for bullseye's kernel (one contract, one copy)
  sed -n "/^  cat > \"\$1\" <<'INIT'\$/,/^INIT\$/p" "$VM_IMAGES_DIR/build-debian-kernel.sh" | sed '1d;$d' > "$I/init"
  grep -q '^exec switch_root /newroot' "$I/init" || die "could not take /init from build-debian-kernel.sh"
  chmod 0755 "$I/init"
  (cd "$I" && find . -print0 | sort -z | cpio --null -o -H newc --quiet | gzip -6) > "$OUT/initrd.img"
  printf '%s\n' "${order[@]}" > "$OUT/modules.load"
  rm -rf "$I"

  cp "$R/boot/vmlinuz-$ver" "$OUT/vmlinuz"
  cp "$R/boot/config-$ver" "$OUT/config"
  ln -sfn "$R/lib/modules/$ver" "$OUT/modules"
  echo "$ver" > "$OUT/version"
  echo "$versions" > "$OUT/packages"
  log "initramfs: ${#order[@]} modules ($(du -k "$OUT/initrd.img" | cut -f1) KiB) in $((SECONDS - t2)) s: ${order[*]##*/}"
  log "zswap: $(grep -E '^(# )?CONFIG_ZSWAP[ =]' "$OUT/config")"
  touch "$OUT/.done"
  ln -sfn "$NAME-kernel-$H" "$CACHE/$NAME-kernel"
  # keep the newest two of each
  ls -dt "$CACHE/$NAME"-kernel-* 2>/dev/null | grep -E "/$NAME-kernel-[0-9a-f]{16}\$" | tail -n +3 | xargs -r rm -rf
  ls -dt "$CACHE/$NAME"-pkgs-* 2>/dev/null | grep -E "/$NAME-pkgs-[0-9a-f]{16}\$" | tail -n +3 | xargs -r rm -rf
  echo "$OUT"
}

with_lock "$NAME-kernel" build
