#!/usr/bin/env bash
# Instructions per card decision (find_card + policy + access::evaluate) on a 100k-card list,
# counted by callgrind: the example `one_decision` runs with N = 1 and N = 1001 decisions, and
# (I(1001) - I(1)) / 1000 is one decision, the list building cancelling out. Fails if a decision
# costs more than CALLGRIND_MAX_INSTRUCTIONS (default 2000). Installs valgrind when missing.
# Keeps the callgrind output files when CALLGRIND_KEEP is set to a directory.
set -euo pipefail
cd "$(dirname "$0")/.."

MAX=${CALLGRIND_MAX_INSTRUCTIONS:-2000}
RUNS=1000 # decisions between the two runs

if ! command -v valgrind >/dev/null 2>&1; then
  echo "==> installing valgrind" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo=sudo; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq valgrind
fi

echo "==> cargo build --release -p chronolock-core --features alloc --example one_decision" >&2
# The executable's path from cargo's own report, so CARGO_TARGET_DIR and the like are honoured.
bin=$(cargo build --release -p chronolock-core --features alloc --example one_decision \
  --message-format=json-render-diagnostics |
  sed -n 's/.*"executable":"\([^"]*one_decision[^"]*\)".*/\1/p' | tail -n 1)
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "callgrind.sh: cannot find the one_decision executable" >&2
  exit 2
fi

out=${CALLGRIND_KEEP:-}
if [ -z "$out" ]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out"

# Total instructions (Ir) of a callgrind output file: its `totals:` line (or `summary:`).
total() {
  awk '/^totals:/ { t = $2 } /^summary:/ { s = $2 } END { v = (t != "" ? t : s); if (v == "") exit 1; print v }' "$1"
}

declare -A ir
for n in 1 $((RUNS + 1)); do
  echo "==> valgrind --tool=callgrind one_decision $n" >&2
  valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out.$n" "$bin" "$n" \
    >"$out/stdout.$n" 2>"$out/valgrind.$n.log" || {
    cat "$out/valgrind.$n.log" >&2
    exit 2
  }
  ir[$n]=$(total "$out/callgrind.out.$n")
  echo "    $(cat "$out/stdout.$n"): $(printf "%'d" "${ir[$n]}" 2>/dev/null || echo "${ir[$n]}") instructions" >&2
done

diff=$((ir[$((RUNS + 1))] - ir[1]))
per=$(awk -v d="$diff" -v r="$RUNS" 'BEGIN { printf "%.1f", d / r }')
echo "instructions per decision: $per (limit $MAX)"
if [ "$diff" -gt $((MAX * RUNS)) ]; then
  echo "callgrind.sh: one decision costs $per instructions, more than $MAX" >&2
  exit 1
fi
