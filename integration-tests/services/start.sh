#!/usr/bin/env bash
# Makes every server the integration tests need available on loopback, idempotently, without
# Docker: uses a server already running, else installs it from Debian packages and starts it.
# Creates the test databases and users, installs the servers' own command-line clients (psql,
# mariadb, sqlite3) that the interoperability tests drive, then writes the connection URLs
# and client paths to integration-tests/services/.run/env (and prints them) as
# CERTSTORE_TEST_* variables.
#
#   bash integration-tests/services/start.sh && source integration-tests/services/.run/env
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
run="$here/.run"
mkdir -p "$run"

log() { printf '[services] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    apt_updated=1
  fi
  log "installing $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

wait_for() { # wait_for NAME TRIES COMMAND...
  local name=$1 tries=$2
  shift 2
  for _ in $(seq "$tries"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  log "$name did not become ready"
  return 1
}

# client VAR PACKAGE COMMAND: installs PACKAGE unless COMMAND is on the PATH, then prints
# `export VAR=<path of COMMAND>`.
client() {
  local var=$1 package=$2 command=$3 found
  if ! command -v "$command" >/dev/null 2>&1; then
    apt_install "$package"
  fi
  found="$(command -v "$command")"
  echo "export $var=$found"
}

# --- PostgreSQL -------------------------------------------------------------------------
start_postgres() {
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    apt_install postgresql
  fi
  if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    log "starting PostgreSQL $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || true
  fi
  wait_for PostgreSQL 60 pg_isready -h 127.0.0.1 -p 5432
  local psql=(as_root runuser -u postgres -- psql -v ON_ERROR_STOP=1 -q -d postgres)
  "${psql[@]}" -c "DO \$\$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'certstore') THEN
        CREATE ROLE certstore LOGIN PASSWORD 'certstore';
      END IF;
    END \$\$;" >&2
  if ! "${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = 'certstore_test'" | grep -q 1; then
    "${psql[@]}" -c "CREATE DATABASE certstore_test OWNER certstore" >&2
  fi
  echo "export CERTSTORE_TEST_POSTGRES_URL=postgres://certstore:certstore@127.0.0.1:5432/certstore_test"
  client CERTSTORE_TEST_PSQL postgresql-client psql
}

# --- MariaDB ----------------------------------------------------------------------------
start_mariadb() {
  if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
    apt_install mariadb-server
  fi
  if ! mariadb-admin ping --silent >/dev/null 2>&1; then
    log "starting MariaDB"
    as_root mkdir -p /run/mysqld
    as_root chown mysql:mysql /run/mysqld 2>/dev/null || true
    as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql >&2
  fi
  wait_for MariaDB 60 mariadb-admin ping --silent
  as_root mariadb -u root <<'SQL' >&2
CREATE DATABASE IF NOT EXISTS certstore_test;
CREATE USER IF NOT EXISTS 'certstore'@'%' IDENTIFIED BY 'certstore';
CREATE USER IF NOT EXISTS 'certstore'@'localhost' IDENTIFIED BY 'certstore';
GRANT ALL PRIVILEGES ON certstore_test.* TO 'certstore'@'%';
GRANT ALL PRIVILEGES ON certstore_test.* TO 'certstore'@'localhost';
FLUSH PRIVILEGES;
SQL
  echo "export CERTSTORE_TEST_MYSQL_URL=mysql://certstore:certstore@127.0.0.1:3306/certstore_test"
  client CERTSTORE_TEST_MYSQL_CLIENT mariadb-client mariadb
}

# --- Redis ------------------------------------------------------------------------------
start_redis() {
  if ! command -v redis-server >/dev/null 2>&1; then
    apt_install redis-server
  fi
  if ! redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
    log "starting Redis"
    as_root mkdir -p /var/lib/redis /var/log/redis
    as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
      --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log >&2
  fi
  wait_for Redis 60 sh -c 'redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG'
  echo "export CERTSTORE_TEST_REDIS_URL=redis://127.0.0.1:6379/"
  client CERTSTORE_TEST_REDIS_CLI redis-tools redis-cli
}

{
  start_postgres
  start_mariadb
  start_redis
  # SQLite has no server: its command-line shell reads the databases the tests create.
  client CERTSTORE_TEST_SQLITE3 sqlite3 sqlite3
  # Further servers (S3, Azurite, Pebble): each script in start.d installs and starts one,
  # idempotently, and prints its `export CERTSTORE_TEST_...=...` lines on stdout.
  for script in "$here"/start.d/*.sh; do
    [ -e "$script" ] || continue
    RUN_DIR="$run" bash "$script"
  done
} > "$run/env.tmp"
mv "$run/env.tmp" "$run/env"
log "servers ready; variables in $run/env:"
cat "$run/env"
