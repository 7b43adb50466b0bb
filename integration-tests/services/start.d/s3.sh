#!/usr/bin/env bash
# Makes an S3-compatible server (moto) available on 127.0.0.1:9000, idempotently: installs
# moto in a virtual environment under "$RUN_DIR/venv-moto" if missing, starts it in the
# background if nothing answers on the port yet (log in "$RUN_DIR/moto.log"), waits until
# it is ready and prints two lines on stdout: the server's URL, and the Python of the virtual
# environment, which has boto3 (moto depends on it; the interoperability tests write and
# read objects with it):
#
#   export CERTSTORE_TEST_S3_URL=http://127.0.0.1:9000
#   export CERTSTORE_TEST_PYTHON_S3=.../venv-moto/bin/python
#
# Moto honours conditional writes (If-None-Match: *, If-Match), but checks and writes in two
# steps on a threaded server; moto_server.py (beside this script) runs it with conditional
# writes one at a time, atomic as on Amazon S3, which the S3 lock implementation needs.
# Tests create their own buckets; this creates nothing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
run="${RUN_DIR:-$here/../.run}"
host=127.0.0.1
port="${CERTSTORE_S3_PORT:-9000}"
url="http://$host:$port"
venv="$run/venv-moto"

log() { printf '[s3] %s\n' "$*" >&2; }

answers() {
  # Any HTTP answer (moto replies 200 with a bucket listing on GET /) means a server is up.
  python3 - "$host" "$port" <<'PY' >/dev/null 2>&1
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(f"http://{sys.argv[1]}:{sys.argv[2]}/", timeout=2)
except urllib.error.HTTPError:
    pass
PY
}

mkdir -p "$run"

# Installed even when a server already answers: the fault tests start private instances
# from this install.
if [ ! -x "$venv/bin/moto_server" ]; then
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    log "installing python3-venv"
    if [ "$(id -u)" -eq 0 ]; then as_root=(); else as_root=(sudo); fi
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >&2 || {
      "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
      "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >&2
    }
  fi
  log "installing moto into $venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.2.5' >&2
fi
if ! "$venv/bin/python" -c 'import boto3' >/dev/null 2>&1; then
  log "installing boto3 into $venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'boto3==1.44.8' >&2
fi

if answers; then
  log "a server already answers on $url"
else
  log "starting moto on $url (log: $run/moto.log)"
  nohup "$venv/bin/python" "$here/moto_server.py" "$host" "$port" >>"$run/moto.log" 2>&1 </dev/null &
  echo $! >"$run/moto.pid"
  # The emulator stands in for a service that runs on machines of its own: a busy test
  # machine must not starve it (requests would time out).
  renice -n -5 -p "$(cat "$run/moto.pid")" >/dev/null 2>&1 || true
  ready=0
  for _ in $(seq 120); do
    if answers; then ready=1; break; fi
    sleep 0.5
  done
  if [ "$ready" -ne 1 ]; then
    log "moto did not become ready; see $run/moto.log"
    exit 1
  fi
  log "moto ready"
fi

echo "export CERTSTORE_TEST_S3_URL=$url"
echo "export CERTSTORE_TEST_PYTHON_S3=$venv/bin/python"
