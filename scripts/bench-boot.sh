#!/usr/bin/env bash
# Time from network-up to a valid clock for a virtual door without RTC, against chronyd serving
# this machine's clock on a loopback port (started with -x: it never adjusts the clock), and the
# door's offset from it, over BOOTS boots (default 100).
#
#   scripts/bench-boot.sh [BOOTS]
set -euo pipefail
cd "$(dirname "$0")/.."
boots=${1:-100}
command -v chronyd >/dev/null || [ -x /usr/sbin/chronyd ] || {
  echo "needs chronyd (Debian package chrony)" >&2; exit 2; }
chronyd=$(command -v chronyd || echo /usr/sbin/chronyd)
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$dir/chrony.conf" <<CONF
port $port
bindaddress 127.0.0.1
local stratum 8
allow 127.0.0.1
cmdport 0
pidfile $dir/chronyd.pid
CONF
user=()
[ "$(id -u)" -eq 0 ] && user=(-u root)
"$chronyd" -x -d -f "$dir/chrony.conf" "${user[@]}" >"$dir/chronyd.log" 2>&1 &
chrony_pid=$!
trap 'kill $chrony_pid 2>/dev/null; wait $chrony_pid 2>/dev/null; rm -rf "$dir"' EXIT
sleep 0.5
cargo run --release --locked --quiet -p chronolock -- sim bench-boot --ntp "127.0.0.1:$port" --boots "$boots"
