#!/usr/bin/env bash
# Build the tmem-kvm guest kernel: Linux 5.10 from Debian's linux-source-5.10
# (suite bullseye), defconfig + kvm_guest.config + kernel/config.fragment.
# Output: $CACHE/kernel-<hash>/{bzImage,build/,src/} and the symlink $CACHE/kernel.
# Prints the kernel directory on stdout. Idempotent; rebuilds only when the
# fragment or RECIPE change (FORCE=1 rebuilds anyway).
LOG_TAG=kernel
source "$(dirname "$0")/lib/common.sh"

FRAG="$VM_IMAGES_DIR/kernel/config.fragment"
SUITE="${TMEM_KVM_KERNEL_SUITE:-bullseye}"
# Bump RECIPE when a change to this script changes the kernel it builds.
RECIPE=1
HASH=$( { echo "recipe=$RECIPE suite=$SUITE"; cat "$FRAG"; } | sha256sum | cut -c1-16)
OUT="$CACHE/kernel-$HASH"

build() {
  if [ -f "$OUT/.done" ] && [ "${FORCE:-0}" != 1 ]; then
    log "cached: $OUT ($(cat "$OUT/version" 2>/dev/null))"
    ln -sfn "kernel-$HASH" "$CACHE/kernel"
    echo "$OUT"; return 0
  fi
  local t0=$SECONDS
  apt_ensure build-essential flex bison bc libelf-dev libssl-dev xz-utils dwarves cpio kmod

  # --- 1. linux-source-5.10 from bullseye, through a private apt state (host untouched)
  local A="$CACHE/apt-$SUITE" mirror
  mirror=$(debian_mirror)
  mkdir -p "$A/lists/partial" "$A/archives/partial" "$A/debs"
  echo "deb $mirror $SUITE main" > "$A/sources.list"
  local aptopts=(-o Dir::Etc::sourcelist="$A/sources.list" -o Dir::Etc::sourceparts=- \
    -o Dir::State::Lists="$A/lists" -o Dir::Cache="$A" -o Dir::Cache::archives="$A/archives" \
    -o APT::Get::List-Cleanup=0 -o Debug::NoLocking=1)
  local deb
  deb=$(ls "$A"/debs/linux-source-5.10_*.deb 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$deb" ]; then
    log "apt-get update ($SUITE, private lists in $A)"
    apt-get "${aptopts[@]}" update -qq >&2
    log "apt-get download linux-source-5.10 ($SUITE)"
    (cd "$A/debs" && apt-get "${aptopts[@]}" download linux-source-5.10 >&2)
    deb=$(ls "$A"/debs/linux-source-5.10_*.deb | sort -V | tail -1)
  fi
  log "source package: $(basename "$deb")"

  rm -rf "$OUT"; mkdir -p "$OUT"
  local x="$OUT/pkg"
  dpkg-deb -x "$deb" "$x"
  local tarball
  tarball=$(ls "$x"/usr/src/linux-source-5.10*.tar.xz | head -1)
  log "extracting $(basename "$tarball")"
  mkdir -p "$OUT/src"
  tar -xJf "$tarball" -C "$OUT/src" --strip-components=1
  rm -rf "$x"

  # --- 2. config
  local B="$OUT/build" S="$OUT/src" j
  j=$(nproc)
  mkdir -p "$B"
  log "configure: defconfig + kvm_guest.config + $(basename "$FRAG")"
  make -C "$S" O="$B" -s defconfig >&2
  make -C "$S" O="$B" -s kvm_guest.config >&2
  (cd "$S" && scripts/kconfig/merge_config.sh -m -O "$B" "$B/.config" "$FRAG" >"$B/merge_config.log" 2>&1)
  make -C "$S" O="$B" -s olddefconfig >&2
  # every line of the fragment must have survived olddefconfig
  local bad=0 line sym
  while IFS= read -r line; do
    case "$line" in
      CONFIG_*=*) grep -qxF "$line" "$B/.config" || { log "config mismatch: want '$line', got '$(grep -E "^(# )?${line%%=*}[= ]" "$B/.config" || echo unset)'"; bad=1; } ;;
      "# CONFIG_"*" is not set") sym=${line#\# }; sym=${sym%% *}; grep -q "^$sym=" "$B/.config" && { log "config mismatch: want '$line', got '$(grep "^$sym=" "$B/.config")'"; bad=1; } ;;
    esac
  done < "$FRAG"
  grep -qx 'CONFIG_CLEANCACHE=y' "$B/.config" || die "CONFIG_CLEANCACHE=y missing from $B/.config"
  grep -qx 'CONFIG_FRONTSWAP=y' "$B/.config" || die "CONFIG_FRONTSWAP=y missing from $B/.config"
  [ "$bad" = 0 ] || log "WARNING: some fragment lines were overridden by Kconfig dependencies (see above)"

  # --- 3. build: vmlinux + bzImage + modules (Module.symvers) + modules_prepare
  log "make -j$j all (bzImage, modules) ... log: $OUT/build.log"
  local t1=$SECONDS
  if ! make -C "$S" O="$B" -j"$j" all >"$OUT/build.log" 2>&1; then
    tail -40 "$OUT/build.log" >&2; die "kernel build failed (full log $OUT/build.log)"
  fi
  make -C "$S" O="$B" -j"$j" modules_prepare >>"$OUT/build.log" 2>&1 || die "modules_prepare failed"
  cp "$B/arch/x86/boot/bzImage" "$OUT/bzImage"
  cp "$B/.config" "$OUT/config"
  make -C "$S" O="$B" -s kernelrelease > "$OUT/version"
  echo "$(basename "$deb")" > "$OUT/source-package"
  log "built $(cat "$OUT/version") in $((SECONDS - t1)) s (total $((SECONDS - t0)) s)"
  touch "$OUT/.done"
  ln -sfn "kernel-$HASH" "$CACHE/kernel"
  echo "$OUT"
}

with_lock kernel build
