#!/usr/bin/env bash
# The project's test command: starts every server the tests need (start.sh), exports their
# URLs and runs the whole workspace's tests, then the doc tests.
set -euo pipefail

top="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$top"

bash integration-tests/services/start.sh >/dev/null
# shellcheck disable=SC1091
source integration-tests/services/.run/env

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "[test] installing cargo-nextest" >&2
  cargo install --locked cargo-nextest >&2
fi

# CERTSTORE_STRESS=N keeps N CPU workers busy beside the tests (stress-ng, installed when
# missing), to prove that they pass on a loaded machine, as they must in production.
if [ -n "${CERTSTORE_STRESS:-}" ]; then
  if ! command -v stress-ng >/dev/null 2>&1; then
    echo "[test] installing stress-ng" >&2
    (apt-get update -qq && apt-get install -y -qq --no-install-recommends stress-ng) >&2
  fi
  stress-ng --cpu "$CERTSTORE_STRESS" --timeout 3h --quiet &
  stress_pid=$!
  trap 'kill "$stress_pid" 2>/dev/null || true' EXIT
  echo "[test] stress-ng --cpu $CERTSTORE_STRESS running beside the tests (pid $stress_pid)" >&2
fi

cargo nextest run --workspace --no-fail-fast "$@"
cargo test --workspace --doc
