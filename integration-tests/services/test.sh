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

cargo nextest run --workspace --no-fail-fast "$@"
cargo test --workspace --doc
