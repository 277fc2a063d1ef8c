#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what it needs, then runs format and lint
# checks, the no_std core build for the ESP32-C3 target, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

# --- what the tests need ----------------------------------------------------------------------
TARGET=riscv32imc-unknown-none-elf
if ! rustup target list --installed | grep -qx "$TARGET"; then
  say "installing the rustup target $TARGET"
  rustup target add "$TARGET"
fi
for component in rustfmt clippy; do
  if ! rustup component list --installed | grep -q "^$component"; then
    say "installing the rustup component $component"
    rustup component add "$component"
  fi
done

# Debian packages the suite needs, installed only when missing: oathtool cross-checks keypad codes;
# chromium and chromium-driver run the admin UI's browser tests (crates/chronolock/tests/browser.rs);
# chrony serves time on a loopback port (started with -x: it never touches this machine's clock)
# for the virtual doors' end-to-end tests (crates/chronolock/tests/live.rs); mosquitto (the broker,
# with mosquitto_passwd) for the Home Assistant MQTT tests (crates/server/tests/mqtt.rs);
# libpcsclite-dev (to build `chronolock card personalize --reader`), pcscd and vsmartcard-vpcd (a
# virtual PC/SC reader the software card answers in) for the enrolment test through PC/SC
# (crates/chronolock/tests/card_cli.rs).
APT_PACKAGES=(oathtool chromium chromium-driver chrony mosquitto libpcsclite-dev pcscd vsmartcard-vpcd)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- checks ------------------------------------------------------------------------------------
say "cargo fmt --check"
cargo fmt --all --check

say "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked --features chronolock/pcsc -- -D warnings

say "core for $TARGET (no_std)"
cargo build -p chronolock-core --target "$TARGET" --release --locked

say "fuzz targets: every parser of untrusted bytes, ${FUZZ_SECONDS:-20} s each"
# libFuzzer on the stable toolchain (RUSTC_BOOTSTRAP lets cargo-fuzz pass its flags; no
# sanitizer). Each run is bounded in time and stops by itself; a crash fails the test command.
if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked --quiet
fi
for target in allowlist card_response device_protocol ntp_response persisted pn532_frame setup_form; do
  fuzz_log=$(mktemp)
  if ! (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -s none --release -- \
    -max_total_time="${FUZZ_SECONDS:-20}" -rss_limit_mb=1024) >"$fuzz_log" 2>&1; then
    tail -n 60 "$fuzz_log"
    echo "fuzz target $target failed (the input is under fuzz/artifacts/$target)" >&2
    exit 1
  fi
  echo "$target: $(grep -E '^Done [0-9]+ runs' "$fuzz_log" | tail -n 1)"
  rm -f "$fuzz_log"
done

say "ESP32-C3 firmware: release build, flash and static RAM budgets, flashable image"
bash scripts/firmware.sh

say "cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# The server tests run on SQLite and on a real PostgreSQL, started here and stopped after.
./scripts/with-postgres.sh cargo test --workspace --locked --features chronolock/pcsc 2>&1 | tee "$log"
# One closing line for the whole suite (cargo prints one per test binary, the last often a
# doc-test run with nothing in it).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "\ntests: %d passed, %d failed\n", p, f; if (p == 0 || f > 0) exit 1 }' "$log"
