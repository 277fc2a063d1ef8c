#!/usr/bin/env bash
# Unchanged device syncs per second beside nginx answering 304 on the same loopback, measured
# by one client in one run (`chronolock bench sync --baseline-url`), and nginx under wrk first
# when wrk is installed.
#   scripts/bench-sync-nginx.sh [sqlite|postgres] [PEOPLE] [DOORS] [SECONDS] [CONNECTIONS]
# Bounded: each half runs SECONDS (default 10); nginx and the server stop however this ends.
set -euo pipefail
cd "$(dirname "$0")/.."

DB=${1:-sqlite}
PEOPLE=${2:-1000}
DOORS=${3:-100}
SECONDS_RUN=${4:-10}
CONNECTIONS=${5:-32}

if [ "$DB" = postgres ] && [ -z "${CHRONOLOCK_TEST_POSTGRES_URL:-}" ]; then
  CHRONOLOCK_PG_FSYNC=on exec ./scripts/with-postgres.sh "$0" "$@"
fi
nginx=$(command -v nginx || echo /usr/sbin/nginx)
if [ ! -x "$nginx" ]; then
  echo "==> installing Debian package nginx-light" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nginx-light >/dev/null
  nginx=$(command -v nginx || echo /usr/sbin/nginx)
fi

cargo build --release --locked -q -p chronolock
dir=$(mktemp -d /tmp/chronolock-nginx.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# One worker per core, keep-alive without limit: nginx at its usual.
cat > "$dir/nginx.conf" <<CONF
worker_processes auto;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  server {
    listen 127.0.0.1:$port;
    location / { return 304; }
  }
}
CONF
"$nginx" -c "$dir/nginx.conf" -p "$dir" &
nginx_pid=$!
trap 'kill $nginx_pid 2>/dev/null; wait $nginx_pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 50); do
  curl -s -o /dev/null "http://127.0.0.1:$port/" && break
  sleep 0.1
done

# nginx at its usual, driven by wrk (when installed) over as many connections: the figure the
# syncs' baseline from chronolock's own client is to be read against.
if command -v wrk >/dev/null; then
  echo "== nginx 304 under wrk -t2 -c$CONNECTIONS -d${SECONDS_RUN}s"
  wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_RUN}s" "http://127.0.0.1:$port/" | grep -E "Requests/sec|Latency"
fi

URL_ARGS=()
[ "$DB" = postgres ] && URL_ARGS=(--database-url "$CHRONOLOCK_TEST_POSTGRES_URL")
./target/release/chronolock bench sync --people "$PEOPLE" --doors "$DOORS" \
  --seconds "$SECONDS_RUN" --connections "$CONNECTIONS" "${URL_ARGS[@]}" \
  --baseline-url "http://127.0.0.1:$port/"
