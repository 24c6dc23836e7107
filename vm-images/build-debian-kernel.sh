#!/usr/bin/env bash
# Debian's own bullseye kernel for the test VM, unmodified: the newest
# linux-image-5.10.0-N-amd64 in the suite's lists, its headers
# (linux-headers-5.10.0-N-amd64 + -common + linux-kbuild-5.10, for building
# the module out of tree) and a small initramfs of ours, because Debian builds
# virtio_pci, virtio_blk, ext4 and qemu_fw_cfg as modules.
#
# Packages come through the private apt state build-kernel.sh already uses
# ($CACHE/apt-bullseye; the host's apt is untouched) and are unpacked with
# dpkg-deb -x:
#   $CACHE/debian-pkgs-<versions>/root/         the unpacked packages (the slow part)
#   $CACHE/debian-kernel-<h>/vmlinuz            Debian's kernel image, as shipped
#   $CACHE/debian-kernel-<h>/initrd.img         ours: busybox + the modules below + /init
#   $CACHE/debian-kernel-<h>/headers            -> the -amd64 headers tree (KDIR for make)
#   $CACHE/debian-kernel-<h>/{version,config,packages,modules.load}
#   $CACHE/debian-kernel -> debian-kernel-<h>
# <h> is keyed by the package versions and this script. Prints the directory on
# stdout. Idempotent; FORCE=1 rebuilds the initramfs; TMEM_KVM_DEBIAN_UPDATE=1
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

# deb PKG=VERSION -> its .deb in $A/debs, or nothing
deb_of() {
  local p=${1%%=*} v=${1#*=}
  ls "$A/debs/${p}_${v//:/%3a}_"*.deb 2>/dev/null | head -1 || true
}

# download PKG=VERSION...: the missing ones, in one apt-get call (kept in $A/debs: the key names exact versions)
download() {
  local pv want=()
  for pv in "$@"; do [ -n "$(deb_of "$pv")" ] || want+=("$pv"); done
  [ ${#want[@]} -eq 0 ] && return 0
  log "apt-get download ${want[*]}"
  (cd "$A/debs" && apt-get "${APTOPTS[@]}" download "${want[@]}" >&2) || die "apt-get download failed"
}

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
  H=$( { echo "pkgs=$PH modules=$BOOT_MODULES"; cat "$0"; } | sha256sum | cut -c1-16)
  OUT="$CACHE/debian-kernel-$H"
  if [ -f "$OUT/.done" ] && [ "${FORCE:-0}" != 1 ]; then
    log "cached: $OUT ($(cat "$OUT/version"))"
    ln -sfn "debian-kernel-$H" "$CACHE/debian-kernel"
    echo "$OUT"; return 0
  fi

  # --- 1. download and unpack (one root, so that the -amd64 headers find
  # -common and linux-kbuild at the relative paths their symlinks use)
  if [ ! -f "$P/.done" ]; then
    local t0=$SECONDS
    # shellcheck disable=SC2086
    download $versions
    local t1=$SECONDS
    rm -rf "$P"; mkdir -p "$P/root"
    for pv in $versions; do dpkg-deb -x "$(deb_of "$pv")" "$P/root"; done
    # the -amd64 headers' Makefile includes /usr/src/linux-headers-*-common/Makefile
    # by its absolute path: point it at the unpacked tree (nothing else there is absolute)
    sed -i "s|^include /usr/src/|include $P/root/usr/src/|" "$P/root/usr/src/linux-headers-$abi/Makefile"
    echo "$versions" > "$P/packages"
    log "downloaded in $((t1 - t0)) s, unpacked in $((SECONDS - t1)) s ($(du -sh "$P/root" | cut -f1))"
    touch "$P/.done"
  fi
  local R="$P/root" ver="$abi"
  [ -f "$R/boot/vmlinuz-$ver" ] || die "$R/boot/vmlinuz-$ver missing"
  [ -d "$R/lib/modules/$ver/kernel" ] || die "$R/lib/modules/$ver missing"
  [ -f "$R/usr/src/linux-headers-$ver/Makefile" ] || die "headers $R/usr/src/linux-headers-$ver missing"

  # --- 2. the initramfs
  local t2=$SECONDS
  rm -rf "$OUT"; mkdir -p "$OUT"
  depmod -b "$R" "$ver" || die "depmod failed"
  local I="$OUT/initramfs" m line order=()
  mkdir -p "$I"/{bin,dev,proc,sys,newroot,lib/modules/"$ver"}
  local deps
  for m in $BOOT_MODULES; do
    # "insmod /path/x.ko" lines in load order; "builtin x" for built-in ones
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
  write_init "$I/init" "$ver"
  (cd "$I" && find . -print0 | sort -z | cpio --null -o -H newc --quiet | gzip -6) > "$OUT/initrd.img"
  printf '%s\n' "${order[@]}" > "$OUT/modules.load"
  rm -rf "$I"

  cp "$R/boot/vmlinuz-$ver" "$OUT/vmlinuz"
  cp "$R/boot/config-$ver" "$OUT/config"
  ln -sfn "$R/usr/src/linux-headers-$ver" "$OUT/headers"
  ln -sfn "$R/lib/modules/$ver" "$OUT/modules"
  echo "$ver" > "$OUT/version"
  echo "$versions" > "$OUT/packages"
  log "initramfs: ${#order[@]} modules ($(du -k "$OUT/initrd.img" | cut -f1) KiB) in $((SECONDS - t2)) s: ${order[*]##*/}"
  touch "$OUT/.done"
  ln -sfn "debian-kernel-$H" "$CACHE/debian-kernel"
  # keep the newest two of each
  ls -dt "$CACHE"/debian-kernel-* 2>/dev/null | grep -E '/debian-kernel-[0-9a-f]{16}$' | tail -n +3 | xargs -r rm -rf
  ls -dt "$CACHE"/debian-pkgs-* 2>/dev/null | grep -E '/debian-pkgs-[0-9a-f]{16}$' | tail -n +3 | xargs -r rm -rf
  echo "$OUT"
}

# write_init FILE VERSION: the initramfs's /init (busybox sh)
write_init() {
  cat > "$1" <<'INIT'
#!/bin/busybox sh
# initramfs init of the tmem-kvm test VM on Debian's kernel (written by
# vm-images/build-debian-kernel.sh): load the boot modules, mount the root
# disk, hand over to the init= of the command line.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
VER=$(uname -r)
fail() { echo "initramfs: $*" > /dev/console; sleep 1; echo o > /proc/sysrq-trigger; sleep 5; }
# a module that does not load is said, not fatal: some need CPU features
# (crc32c-intel: SSE4.2, absent under TCG's default CPU, crc32c_generic serves
# then); a missing disk driver or file system fails the mount below
while read -r m; do
  insmod "/lib/modules/$VER/$m" 2>/dev/null || echo "initramfs: insmod ${m##*/} failed (not needed if what it provides is there: see below)" > /dev/console
done < "/lib/modules/$VER/boot.order"
INIT_CMD=/sbin/init ROOT=""
for w in $(cat /proc/cmdline); do
  case "$w" in init=*) INIT_CMD=${w#init=} ;; root=*) ROOT=${w#root=} ;; esac
done
# the root disk by its virtio serial (QEMU -device virtio-blk-pci,serial=tmemroot),
# else root=; the disks appear as virtio_blk probes them
i=0
while :; do
  for s in /sys/block/vd*/serial; do
    [ -r "$s" ] && [ "$(cat "$s")" = tmemroot ] && { d=${s%/serial}; ROOTDEV=/dev/${d##*/}; break; }
  done
  [ -n "$ROOTDEV" ] && [ -b "$ROOTDEV" ] && break
  [ -z "$ROOTDEV" ] && [ -n "$ROOT" ] && [ $i -ge 20 ] && [ -b "$ROOT" ] && { ROOTDEV=$ROOT; break; }
  i=$((i + 1))
  [ $i -lt 100 ] || fail "no root disk (serial tmemroot or root=$ROOT) after 10 s"
  sleep 0.1
done
mount -t ext4 -o rw "$ROOTDEV" /newroot || fail "mount $ROOTDEV failed"
# the modules loaded here, for modprobe/modinfo in the guest (the root image is a per-VM snapshot)
mkdir -p "/newroot/lib/modules/$VER"
cp -a "/lib/modules/$VER/." "/newroot/lib/modules/$VER/"
umount /proc /sys /dev
exec switch_root /newroot "$INIT_CMD"
INIT
  chmod 0755 "$1"
}

with_lock debian-kernel build
