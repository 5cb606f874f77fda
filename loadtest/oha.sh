#!/usr/bin/env bash
# oha, the open-loop HTTP load generator of the harness (a fixed request
# rate, each request's latency counted from when it fell due). Not packaged
# for Debian: built once from crates.io at a pinned version into a cache
# folder that every checkout on the machine shares. native-tls (the system
# OpenSSL) rather than oha's default rustls, whose crypto backend needs
# cmake; only plain HTTP on loopback is ever sent.
#
#   loadtest/oha.sh        builds it if missing and prints its path
#   source loadtest/oha.sh defines ensure_oha, which sets OHA
#
# An `oha` of the pinned version on the PATH, or OHA set to a binary, is
# used as it is.

OHA_VERSION=1.16.0
ensure_oha() {
  local root=${XDG_CACHE_HOME:-$HOME/.cache}/courtside/oha-$OHA_VERSION log
  if [ -n "${OHA:-}" ]; then
    [ -x "$OHA" ] || { echo "OHA=$OHA is not an executable" >&2; return 1; }
    return 0
  fi
  if command -v oha >/dev/null && [ "$(oha --version 2>/dev/null | awk '{print $2}')" = "$OHA_VERSION" ]; then
    OHA=$(command -v oha)
    return 0
  fi
  OHA=$root/bin/oha
  [ -x "$OHA" ] && return 0
  echo "building oha $OHA_VERSION into $root (once, a few minutes)" >&2
  log=$(mktemp)
  if ! cargo install oha --version "$OHA_VERSION" --locked --no-default-features --features native-tls \
    --root "$root" >"$log" 2>&1; then
    tail -30 "$log" >&2; rm -f "$log"
    echo "could not build oha (needs libssl-dev and pkg-config)" >&2
    return 1
  fi
  rm -f "$log"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  ensure_oha
  echo "$OHA"
fi
