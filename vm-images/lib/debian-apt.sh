# shellcheck shell=bash
# A private apt state for one Debian suite, $CACHE/apt-$SUITE (its own
# sources.list, lists and .debs; the host's apt is untouched): what
# build-debian-kernel.sh, build-bookworm-kernel.sh and build-qsd.sh fetch
# Debian's packages with. Sourced after lib/common.sh, with SUITE set.

A="$CACHE/apt-$SUITE"
APTOPTS=(-o Dir::Etc::sourcelist="$A/sources.list" -o Dir::Etc::sourceparts=- \
  -o Dir::State::Lists="$A/lists" -o Dir::Cache="$A" -o Dir::Cache::archives="$A/archives" \
  -o APT::Get::List-Cleanup=0 -o Debug::NoLocking=1 -o APT::Sandbox::User=root)

# the private lists; apt-get update only when they are missing or TMEM_KVM_DEBIAN_UPDATE=1
apt_state() {
  mkdir -p "$A/lists/partial" "$A/archives/partial" "$A/debs"
  echo "deb $(debian_mirror) $SUITE main" > "$A/sources.list"
  if [ "${TMEM_KVM_DEBIAN_UPDATE:-0}" = 1 ] || ! ls "$A"/lists/*_Packages* >/dev/null 2>&1; then
    log "apt-get update ($SUITE, private lists in $A)"
    apt-get "${APTOPTS[@]}" update -qq >&2
  fi
}

pkg_version() { apt-cache "${APTOPTS[@]}" show --no-all-versions "$1" 2>/dev/null | sed -n 's/^Version: //p' | head -1; }

# deb_of PKG=VERSION -> its .deb in $A/debs, or nothing
deb_of() {
  local p=${1%%=*} v=${1#*=}
  ls "$A/debs/${p}_${v//:/%3a}_"*.deb 2>/dev/null | head -1 || true
}

# download PKG=VERSION...: the missing ones, in one apt-get call (kept in $A/debs:
# the key names exact versions); DOWNLOAD_HINT, if set, ends the error line
download() {
  local pv want=()
  for pv in "$@"; do [ -n "$(deb_of "$pv")" ] || want+=("$pv"); done
  [ ${#want[@]} -eq 0 ] && return 0
  log "apt-get download ${want[*]}"
  (cd "$A/debs" && apt-get "${APTOPTS[@]}" download "${want[@]}" >&2) \
    || die "apt-get download ${want[*]} failed${DOWNLOAD_HINT:+ ($DOWNLOAD_HINT)}"
}
