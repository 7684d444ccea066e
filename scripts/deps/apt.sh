# Apt for scripts/deps.sh (sourced): installs the packages it is given,
# never editing the sources. Nothing here needs deb-src, so the machine's
# sources (deb822 or one-line, deb-src on or not) stay as they are, however
# often this runs and whatever the cache holds.
#
# APT_CONFIG is honoured as by apt itself: the tests point it at a copy of
# the sources in a temporary directory.

# The one file deps.sh wrote before 2026-12-02 (a one-line deb-src list).
# Beside a deb822 file that already had deb-src it made apt refuse every
# source ("Conflicting values set for option Signed-By").
APT_OLD_DEPS_LIST=millrace-src.list

apt_log() { printf '[deps] %s\n' "$*" >&2; }

# Apt reads the sources without complaint (parsing only: no download).
apt_sources_readable() {
  apt-get -q update --print-uris >/dev/null 2>"${1:-/dev/null}"
}

# Fails, with apt's own words, when apt cannot read the sources; removes the
# list an older deps.sh wrote when that is what apt refuses.
apt_sources_check() {
  local etc err old
  etc=$(eval "$(apt-config shell D Dir::Etc/d)"; echo "${D%/}")
  err=$(mktemp)
  if ! apt_sources_readable "$err"; then
    old="$etc/sources.list.d/$APT_OLD_DEPS_LIST"
    if [ -e "$old" ] && grep -q 'Conflicting values' "$err"; then
      apt_log "apt refuses the sources because of $old (written by an older deps.sh): removing it"
      ${SUDO:-} rm -f "$old"
    fi
    if ! apt_sources_readable "$err"; then
      cat "$err" >&2; rm -f "$err"
      apt_log "apt cannot read its sources (above); deps.sh never edits them: fix them first"
      return 1
    fi
  fi
  rm -f "$err"
}

# Installs those of the given packages that are not installed yet, without
# starting their services.
apt_install_missing() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  apt_log "apt: installing ${missing[*]}"
  # Packaged daemons must not start system services: tests run their own.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | ${SUDO:-} tee /usr/sbin/policy-rc.d >/dev/null
    ${SUDO:-} chmod +x /usr/sbin/policy-rc.d
    trap '${SUDO:-} rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  ${SUDO:-} apt-get update -qq
  DEBIAN_FRONTEND=noninteractive ${SUDO:-} apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
