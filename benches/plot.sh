#!/usr/bin/env bash
# Draws benches/results/{cache,warm}.png from the suites' JSON results. Installs
# matplotlib into a private virtual environment (benches/.venv, not committed) on first
# use.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "matplotlib>=3.8,<4"
fi
exec "$venv/bin/python" "$here/plot.py"
