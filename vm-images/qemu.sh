#!/usr/bin/env bash
# Ensure a QEMU >= 10.2 (the first with a user-creatable vhost-user-test-device-pci).
# Uses qemu-system-x86_64 from PATH when it is new enough (TMEM_KVM_QEMU=path forces one);
# otherwise builds a private Debian trixie root with QEMU from trixie-backports
# (mmdebstrap, host packages untouched) and installs a wrapper that runs it through
# the root's own loader. Prints the path of the binary/wrapper to use on stdout.
LOG_TAG=qemu
source "$(dirname "$0")/lib/common.sh"

MIN_MAJOR=10 MIN_MINOR=2

qemu_ok() { # qemu_ok BIN -> 0 if version >= 10.2 and the device exists
  local bin=$1 v maj min
  v=$("$bin" --version 2>/dev/null | sed -n 's/^QEMU emulator version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p') || return 1
  [ -n "$v" ] || return 1
  read -r maj min <<<"$v"
  if [ "$maj" -lt "$MIN_MAJOR" ] || { [ "$maj" -eq "$MIN_MAJOR" ] && [ "$min" -lt "$MIN_MINOR" ]; }; then
    log "$bin is QEMU $maj.$min (< $MIN_MAJOR.$MIN_MINOR)"; return 1
  fi
  "$bin" -machine none -device help 2>/dev/null | grep -q '"vhost-user-test-device-pci"' \
    || { log "$bin ($maj.$min) lacks vhost-user-test-device-pci"; return 1; }
  return 0
}

if [ -n "${TMEM_KVM_QEMU:-}" ]; then
  qemu_ok "$TMEM_KVM_QEMU" || die "TMEM_KVM_QEMU=$TMEM_KVM_QEMU is not a usable QEMU >= 10.2"
  echo "$TMEM_KVM_QEMU"; exit 0
fi
if sys=$(command -v qemu-system-x86_64 2>/dev/null) && qemu_ok "$sys"; then
  log "using $sys from PATH"; echo "$sys"; exit 0
fi

PKGS="qemu-system-x86/trixie-backports,qemu-system-common/trixie-backports,qemu-system-data/trixie-backports,seabios/trixie-backports"
RECIPE=1   # bump when a change here changes the root it builds
HASH=$(echo "recipe=$RECIPE pkgs=$PKGS" | sha256sum | cut -c1-16)
OUT="$CACHE/qemu-$HASH"
WRAP="$OUT/bin/qemu-system-x86_64"

write_wrappers() { # (re)write the wrappers for $OUT/root, atomically
  local root="$OUT/root" w
  mkdir -p "$OUT/bin"
  for w in qemu-system-x86_64 qemu-img; do
    [ -x "$root/usr/bin/$w" ] || continue
    local flags=""
    [ "$w" = qemu-system-x86_64 ] && flags=' -L "$R/usr/share/qemu" -L "$R/usr/share/seabios"'
    cat > "$OUT/bin/$w.tmp" <<WRAPPER
#!/bin/sh
# $w from a private Debian trixie root, run through the root's own loader
# (written by vm-images/qemu.sh; the host keeps its own libc).
R='$root'
export QEMU_MODULE_DIR="\$R/usr/lib/x86_64-linux-gnu/qemu"
exec "\$R/lib64/ld-linux-x86-64.so.2" --library-path "\$R/lib/x86_64-linux-gnu:\$R/usr/lib/x86_64-linux-gnu" \\
  "\$R/usr/bin/$w"$flags "\$@"
WRAPPER
    chmod +x "$OUT/bin/$w.tmp"
    mv "$OUT/bin/$w.tmp" "$OUT/bin/$w"
  done
}

build() {
  if [ -f "$OUT/.done" ] && [ "${FORCE:-0}" != 1 ]; then
    write_wrappers
    if qemu_ok "$WRAP"; then
      log "cached: $WRAP ($(head -1 "$OUT/version"))"
      ln -sfn "qemu-$HASH" "$CACHE/qemu"; echo "$WRAP"; return 0
    fi
    log "cached root $OUT is not usable; rebuilding"
  fi
  local t0=$SECONDS mirror root="$OUT/root"
  apt_ensure mmdebstrap
  mirror=$(debian_mirror)
  rm -rf "$OUT"; mkdir -p "$OUT/bin"
  log "mmdebstrap trixie + qemu-system-x86 from trixie-backports into $root (mirror $mirror; ~1-3 min)"
  mmdebstrap --variant=apt --aptopt='APT::Install-Recommends "false"' --include="$PKGS" \
    trixie "$root" "deb $mirror trixie main" "deb $mirror trixie-backports main" >"$OUT/mmdebstrap.log" 2>&1 \
    || { tail -30 "$OUT/mmdebstrap.log" >&2; die "mmdebstrap failed (log $OUT/mmdebstrap.log)"; }
  write_wrappers
  "$WRAP" --version > "$OUT/version" || die "$WRAP --version failed"
  qemu_ok "$WRAP" || die "$WRAP is not usable"
  log "$(head -1 "$OUT/version"); vhost-user-test-device-pci present; built in $((SECONDS - t0)) s"
  touch "$OUT/.done"
  ln -sfn "qemu-$HASH" "$CACHE/qemu"
  echo "$WRAP"
}

with_lock qemu build
