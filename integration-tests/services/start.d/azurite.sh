#!/usr/bin/env bash
# Makes the Azurite Blob emulator available on 127.0.0.1:10000, idempotently: installs
# azurite@3.37.0 with npm into "$RUN_DIR/azurite" (once), starts azurite-blob in the
# background (in memory, no telemetry) unless something already answers on port 10000,
# waits until it is ready. Installs the Python SDK azure-storage-blob@12.31.1 into a virtual
# environment "$RUN_DIR/venv-azure" (once), the native client of the interoperability tests.
# Prints two lines on stdout:
#
#   export CERTSTORE_TEST_AZURE_URL=http://127.0.0.1:10000/devstoreaccount1
#   export CERTSTORE_TEST_PYTHON_AZURE=.../venv-azure/bin/python
#
# Progress goes to stderr; the server logs to "$RUN_DIR/azurite.log".
set -euo pipefail

log() { printf '[azurite] %s\n' "$*" >&2; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="${RUN_DIR:-$here/.run}"
mkdir -p "$RUN_DIR"
version=3.37.0
sdk_version=12.31.1
venv="$RUN_DIR/venv-azure"
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

# The Python SDK, for the tests that read and write blobs the way other programs do.
sdk_installed="$("$venv/bin/python" -c \
  'import importlib.metadata as m; print(m.version("azure-storage-blob"))' 2>/dev/null || true)"
if [ "$sdk_installed" != "$sdk_version" ]; then
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    log "installing python3-venv"
    if [ "$(id -u)" -eq 0 ]; then as_root=(); else as_root=(sudo); fi
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >&2 || {
      "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
      "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >&2
    }
  fi
  log "installing azure-storage-blob==$sdk_version into $venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "azure-storage-blob==$sdk_version" >&2
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
echo "export CERTSTORE_TEST_PYTHON_AZURE=$venv/bin/python"
