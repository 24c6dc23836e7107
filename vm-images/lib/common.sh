# shellcheck shell=bash
# Shared helpers for the vm-images build scripts (sourced, not executed).
set -euo pipefail

CACHE="${TMEM_KVM_CACHE:-/var/cache/tmem-kvm}"
VM_IMAGES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$CACHE"

log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S)" "${LOG_TAG:-vm-images}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# hash_inputs FILE... -> short sha256 over the names and contents of the files
hash_inputs() {
  local f
  for f in "$@"; do printf '%s\n' "$(basename "$f")"; cat "$f"; done | sha256sum | cut -c1-16
}

# The Debian mirror this machine uses (deb822 or one-line sources), default deb.debian.org.
debian_mirror() {
  local m=""
  if [ -n "${TMEM_KVM_MIRROR:-}" ]; then echo "$TMEM_KVM_MIRROR"; return; fi
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    m=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
    m=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' /etc/apt/sources.list)
  fi
  echo "${m:-http://deb.debian.org/debian}"
}

# apt_ensure PKG... : install missing Debian packages on the host (apt-get update once if needed)
APT_UPDATED=0
apt_ensure() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "need root to apt-get install ${missing[*]}"
  log "apt-get install ${missing[*]}"
  if [ "$APT_UPDATED" = 0 ]; then
    # update only when a package is not installable as the lists stand
    if ! apt-get install -y --no-install-recommends --dry-run "${missing[@]}" >/dev/null 2>&1; then
      apt-get update -qq; APT_UPDATED=1
    fi
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { apt-get update -qq; APT_UPDATED=1; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
}

# with_lock NAME CMD... : serialise builds of one artefact across processes
with_lock() {
  local name=$1; shift
  exec {lockfd}>"$CACHE/.$name.lock"
  if ! flock -n "$lockfd"; then
    log "waiting for another build of $name (lock $CACHE/.$name.lock)"
    flock "$lockfd"
  fi
  "$@"
}
