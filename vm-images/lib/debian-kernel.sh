# shellcheck shell=bash
# What build-debian-kernel.sh (bullseye's 5.10) and build-bookworm-kernel.sh
# (bookworm's 6.1) share: Debian's own kernel packages, fetched through the
# private apt state of lib/debian-apt.sh and unpacked with dpkg-deb -x, and
# the small initramfs of ours that boots them. Sourced after lib/common.sh,
# with SUITE and BOOT_MODULES set. Both files are part of the two scripts'
# cache keys ($DEBIAN_KERNEL_LIBS).

# shellcheck disable=SC2034 # in the scripts' cache keys
DEBIAN_KERNEL_LIBS=("$VM_IMAGES_DIR/lib/debian-apt.sh" "$VM_IMAGES_DIR/lib/debian-kernel.sh")
source "$VM_IMAGES_DIR/lib/debian-apt.sh"

# unpack_debs DIR "PKG=VERSION ...": downloads what is missing and unpacks every
# package into DIR/root (one root, so that the -amd64 headers find -common and
# linux-kbuild at the relative paths their symlinks use); DIR/packages names them.
# The caller marks DIR done.
unpack_debs() {
  local dir=$1 versions=$2 t0=$SECONDS t1 pv
  # shellcheck disable=SC2086
  download $versions
  t1=$SECONDS
  rm -rf "$dir"; mkdir -p "$dir/root"
  for pv in $versions; do dpkg-deb -x "$(deb_of "$pv")" "$dir/root"; done
  echo "$versions" > "$dir/packages"
  log "downloaded in $((t1 - t0)) s, unpacked in $((SECONDS - t1)) s ($(du -sh "$dir/root" | cut -f1))"
}

# cached_kernel OUT LINK: if OUT is complete (and FORCE is not 1), points
# $CACHE/LINK at it and prints it; false otherwise
cached_kernel() {
  local out=$1 link=$2
  [ -f "$out/.done" ] && [ "${FORCE:-0}" != 1 ] || return 1
  log "cached: $out ($(cat "$out/version"))"
  ln -sfn "${out##*/}" "$CACHE/$link"
  echo "$out"
}

# make_initramfs ROOT VERSION OUT: OUT/initrd.img (busybox, BOOT_MODULES and
# what they depend on in load order, our /init) and OUT/modules.load
make_initramfs() {
  local R=$1 ver=$2 OUT=$3 t0=$SECONDS
  [ -f "$R/boot/vmlinuz-$ver" ] || die "$R/boot/vmlinuz-$ver missing"
  [ -d "$R/lib/modules/$ver/kernel" ] || die "$R/lib/modules/$ver missing"
  depmod -b "$R" "$ver" || die "depmod failed"
  local I="$OUT/initramfs" m line deps ko rel order=()
  mkdir -p "$I"/{bin,dev,proc,sys,newroot,lib/modules/"$ver"}
  for m in $BOOT_MODULES; do
    # "insmod /path/x.ko" lines in load order; "builtin x" for built-in ones
    deps=$(modprobe -d "$R" -S "$ver" --show-depends "$m" 2>&1) || die "modprobe --show-depends $m: $deps"
    while read -r line; do
      case "$line" in
        insmod\ *)
          ko=${line#insmod }; ko=${ko%% *}
          rel=${ko#"$R/lib/modules/$ver/"}
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
  write_init "$I/init"
  (cd "$I" && find . -print0 | sort -z | cpio --null -o -H newc --quiet | gzip -6) > "$OUT/initrd.img"
  printf '%s\n' "${order[@]}" > "$OUT/modules.load"
  rm -rf "$I"
  log "initramfs: ${#order[@]} modules ($(du -k "$OUT/initrd.img" | cut -f1) KiB) in $((SECONDS - t0)) s: ${order[*]##*/}"
}

# install_kernel ROOT VERSION OUT PACKAGES: Debian's image and config as
# shipped, the modules, the version and the packages it came from
install_kernel() {
  local R=$1 ver=$2 OUT=$3
  cp "$R/boot/vmlinuz-$ver" "$OUT/vmlinuz"
  cp "$R/boot/config-$ver" "$OUT/config"
  ln -sfn "$R/lib/modules/$ver" "$OUT/modules"
  echo "$ver" > "$OUT/version"
  echo "$4" > "$OUT/packages"
}

# publish OUT LINK PKGS: marks OUT done, points $CACHE/LINK at it, keeps the
# newest two LINK-<h> and PKGS-<h> directories and prints OUT
publish() {
  local out=$1 link=$2 pkgs=$3
  touch "$out/.done"
  ln -sfn "${out##*/}" "$CACHE/$link"
  ls -dt "$CACHE/$link"-* 2>/dev/null | grep -E "/$link-[0-9a-f]{16}\$" | tail -n +3 | xargs -r rm -rf
  ls -dt "$CACHE/$pkgs"-* 2>/dev/null | grep -E "/$pkgs-[0-9a-f]{16}\$" | tail -n +3 | xargs -r rm -rf
  echo "$out"
}

# write_init FILE: the initramfs's /init (busybox sh), one for both kernels:
# load the modules of boot.order, mount the disk whose virtio serial is
# tmemroot, copy the modules to the root, switch_root to init=
write_init() {
  cat > "$1" <<'INIT'
#!/bin/busybox sh
# initramfs init of the tmem-kvm test VM on Debian's kernel (written by
# vm-images/lib/debian-kernel.sh): load the boot modules, mount the root
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
