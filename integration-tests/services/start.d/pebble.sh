#!/usr/bin/env bash
# Makes the Pebble ACME test CA (and pebble-challtestsrv) available, idempotently, from the
# Debian package. The tests start their own Pebble processes; this only installs them and
# prints where the binary is, as one line on stdout:
#
#   export CERTSTORE_TEST_PEBBLE=/usr/bin/pebble
set -euo pipefail

log() { printf '[pebble] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

find_pebble() {
  command -v pebble 2>/dev/null || { [ -x /usr/bin/pebble ] && echo /usr/bin/pebble; } || true
}

# The tests make Pebble's listener certificate with the openssl command-line tool.
if ! command -v openssl >/dev/null 2>&1; then
  log "installing openssl (command-line tool)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssl >&2
fi

pebble_bin="$(find_pebble)"
if [ -z "$pebble_bin" ] || ! command -v pebble-challtestsrv >/dev/null 2>&1; then
  log "installing the pebble package"
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pebble >&2; then
    log "package not found: apt-get update, then install again"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pebble >&2
  fi
  pebble_bin="$(find_pebble)"
fi

if [ -z "$pebble_bin" ]; then
  log "pebble is not installed"
  exit 1
fi
if ! command -v pebble-challtestsrv >/dev/null 2>&1; then
  log "pebble-challtestsrv is not installed"
  exit 1
fi
log "using $pebble_bin"
echo "export CERTSTORE_TEST_PEBBLE=$pebble_bin"
