#!/usr/bin/env bash
# Makes the Azurite Blob emulator available on 127.0.0.1:10000, idempotently: installs
# azurite@3.37.0 with npm into "$RUN_DIR/azurite" (once), starts azurite-blob in the
# background (in memory, no telemetry) unless something already answers on port 10000,
# waits until it is ready, and prints one line on stdout:
#
#   export CERTSTORE_TEST_AZURE_URL=http://127.0.0.1:10000/devstoreaccount1
#
# Progress goes to stderr; the server logs to "$RUN_DIR/azurite.log".
set -euo pipefail

log() { printf '[azurite] %s\n' "$*" >&2; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="${RUN_DIR:-$here/.run}"
mkdir -p "$RUN_DIR"
version=3.37.0
host=127.0.0.1
port=10000
prefix="$RUN_DIR/azurite"
bin="$prefix/node_modules/.bin/azurite-blob"

answers() { # something accepts connections on $host:$port
  (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

# Installed even when a server already answers: the fault tests start private instances
# from this install.
if ! command -v npm >/dev/null 2>&1; then
  log "npm is missing: install Node.js (apt-get install -y nodejs npm)"
  exit 1
fi
installed="$(cat "$prefix/node_modules/azurite/package.json" 2>/dev/null \
  | sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' | head -n 1 || true)"
if [ ! -x "$bin" ] || [ "$installed" != "$version" ]; then
  log "installing azurite@$version into $prefix"
  mkdir -p "$prefix"
  npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "azurite@$version" >&2
fi

if answers; then
  log "something already answers on $host:$port; using it"
else
  log "starting azurite-blob on $host:$port (log: $RUN_DIR/azurite.log)"
  # --silent: no access log. Node writes it to the file synchronously, and a busy disk
  # (a build running beside the tests) then stalls the whole emulator.
  nohup "$bin" --blobHost "$host" --blobPort "$port" --inMemoryPersistence \
    --disableTelemetry --skipApiVersionCheck --loose --silent \
    >>"$RUN_DIR/azurite.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/azurite.pid"
  # The emulator stands in for a service that runs on machines of its own: one Node
  # thread that a busy test machine must not starve (requests would time out).
  renice -n -5 -p "$(cat "$RUN_DIR/azurite.pid")" >/dev/null 2>&1 || true
  for _ in $(seq 120); do
    if answers; then break; fi
    sleep 0.25
  done
  if ! answers; then
    log "azurite did not become ready; see $RUN_DIR/azurite.log"
    exit 1
  fi
  log "ready"
fi
echo "export CERTSTORE_TEST_AZURE_URL=http://$host:$port/devstoreaccount1"
