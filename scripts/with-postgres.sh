#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL server on a loopback port, then stops it.
#   scripts/with-postgres.sh CMD ARGS...
# Installs Debian's postgresql when missing. The server runs as the `postgres` user (initdb
# refuses root), keeps its data in a temporary directory, listens on 127.0.0.1 only, and is
# stopped (and its data removed) however the command ends. The command sees
# CHRONOLOCK_TEST_POSTGRES_URL. Tests run with fsync off (throwaway data); benchmarks set
# CHRONOLOCK_PG_FSYNC=on to measure a durable server.
set -euo pipefail

PORT=${CHRONOLOCK_PG_PORT:-55432}

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "==> installing Debian package postgresql" >&2
  # Keep the package from starting its own cluster service: the only server is ours, below.
  blocked=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && blocked=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  [ -n "$blocked" ] && rm -f /usr/sbin/policy-rc.d
fi
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

DIR=$(mktemp -d /tmp/chronolock-pg.XXXXXX)
chmod 755 "$DIR"
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$DIR"
cleanup() {
  as_pg "$BIN/pg_ctl" -D "$DIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT

as_pg "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust -E UTF8 >/dev/null
as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c fsync=${CHRONOLOCK_PG_FSYNC:-off} -c max_connections=200" start >/dev/null
as_pg "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres chronolock_test

export CHRONOLOCK_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$PORT/chronolock_test"
echo "==> PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT" >&2
"$@"
