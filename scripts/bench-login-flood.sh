#!/usr/bin/env bash
# Device-API latency with and without a 64-connection flood of wrong admin logins, against the
# release `chronolock serve` on loopback (see crates/server/examples/login_flood.rs).
#   scripts/bench-login-flood.sh [SECONDS] [DOORS]
# Bounded: three phases of SECONDS (default 10) each, after a 1 s warm-up; the server is killed
# when the benchmark ends.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q -p chronolock
cargo build --release --locked -q -p chronolock-server --example login_flood
exec ./target/release/examples/login_flood "${1:-10}" "${2:-16}"
