#!/usr/bin/env bash
# Device syncs per second against `chronolock serve`, measured with wrk on loopback.
#   scripts/bench-sync.sh [sqlite|postgres] [PEOPLE] [DOORS] [SECONDS]
# Seeds a site (default 100,000 people, 1,000 doors) with the `scale` example (which also times
# the list compiler), starts the release server, replays an unchanged-list sync from a paired
# door with 64 connections, then full list downloads, and prints the server's memory. Bounded:
# each wrk run lasts SECONDS (default 15), and the server is stopped however this ends.
set -euo pipefail
cd "$(dirname "$0")/.."

DB=${1:-sqlite}
PEOPLE=${2:-100000}
DOORS=${3:-1000}
SECONDS_RUN=${4:-15}
PORT=${CHRONOLOCK_BENCH_PORT:-18080}

if [ "$DB" = postgres ] && [ -z "${CHRONOLOCK_TEST_POSTGRES_URL:-}" ]; then
  CHRONOLOCK_PG_FSYNC=on exec ./scripts/with-postgres.sh "$0" "$@"
fi
if ! command -v wrk >/dev/null; then
  echo "==> installing Debian package wrk" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi

cargo build --release --locked -q -p chronolock
cargo build --release --locked -q -p chronolock-server --example scale
DIR=$(mktemp -d /tmp/chronolock-bench.XXXXXX)
URL_ARGS=()
[ "$DB" = postgres ] && URL_ARGS=(--database-url "$CHRONOLOCK_TEST_POSTGRES_URL")
SERVER=""
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  rm -rf "$DIR"
}
trap cleanup EXIT

echo "== seeding and compiling ($DB)"
./target/release/examples/scale "$DIR" "$PEOPLE" "$DOORS" ${CHRONOLOCK_TEST_POSTGRES_URL:+"$CHRONOLOCK_TEST_POSTGRES_URL"}

RUST_LOG=warn ./target/release/chronolock serve --data "$DIR" --listen "127.0.0.1:$PORT" "${URL_ARGS[@]}" &
SERVER=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
rss() { awk '/VmRSS|VmHWM/ {printf "%s %d MiB  ", $1, $2/1024}' "/proc/$SERVER/status"; echo; }
echo "== server memory at rest: $(rss)"

echo "== unchanged-list syncs: 64 connections, ${SECONDS_RUN}s"
SYNC_BODY="$DIR/sync-unchanged.bin" wrk -t2 -c64 -d"${SECONDS_RUN}s" --latency \
  -s scripts/wrk-sync.lua "http://127.0.0.1:$PORT/device/v1/sync"
echo "== server memory after syncs: $(rss)"

echo "== full list downloads ($PEOPLE-person list): 8 connections, 5s"
SYNC_BODY="$DIR/sync-stale.bin" wrk -t2 -c8 -d5s --latency \
  -s scripts/wrk-sync.lua "http://127.0.0.1:$PORT/device/v1/sync"
echo "== server memory after downloads: $(rss)"
