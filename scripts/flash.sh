#!/usr/bin/env bash
# Flashes a door: the firmware, its partition table and the door's setup secret (the WPA2
# password of its setup access point, firmware/esp32c3/README.md: "Setup access point").
#
#   scripts/flash.sh [--flash-size 4mb|8mb] [--port PORT] [--secrets DIR] [--secret FILE]
#                    [--new-secret] [--elf FILE]
#
#   --flash-size  the board's flash: picks partitions-<size>.csv and the matching image
#                 (8mb: built with --features flash-8mb). Default 4mb.
#   --port        the board's serial port (default: the one board espflash finds).
#   --secrets     where secrets are kept, one file per board named by its MAC address
#                 (default ./door-secrets).
#   --secret      this board's secret file instead of DIR/<MAC>.bin (for a board whose MAC
#                 espflash cannot read, or a secret kept elsewhere).
#   --new-secret  give the board a new secret even though one exists (a lost or leaked
#                 password); the old file is replaced only once the new one is on the board.
#   --elf         flash this firmware ELF instead of building it (it must be built for the
#                 same flash size).
#
# First flash of a board: makes its secret with `chronolock firmware setup-secret` (printing
# the network, the password and a QR code), writes it to the board's `setup` partition, then
# flashes the firmware. Later flashes of the same board reuse its secret file (the QR code is
# printed again), so the password on a door's label stays right.
#
# Needs espflash (installed with `cargo install espflash --locked` if missing) and the
# riscv32imc-unknown-none-elf target (added with rustup if missing).
set -euo pipefail

TARGET=riscv32imc-unknown-none-elf
root=$(cd "$(dirname "$0")/.." && pwd)
fw="$root/firmware/esp32c3"

flash_size=4mb
port=""
secrets_dir="./door-secrets"
secret=""
new_secret=false
elf=""

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

die() {
    echo "flash: $*" >&2
    exit 1
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --flash-size) flash_size=${2:?--flash-size needs 4mb or 8mb}; shift 2 ;;
        --port) port=${2:?--port needs a serial port}; shift 2 ;;
        --secrets) secrets_dir=${2:?--secrets needs a directory}; shift 2 ;;
        --secret) secret=${2:?--secret needs a file}; shift 2 ;;
        --new-secret) new_secret=true; shift ;;
        --elf) elf=${2:?--elf needs a file}; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

case "$flash_size" in
    4mb) features="" ;;
    8mb) features="flash-8mb" ;;
    *) die "--flash-size must be 4mb or 8mb, not $flash_size" ;;
esac
table="$fw/partitions-$flash_size.csv"
[[ -f "$table" ]] || die "no partition table $table"

# The setup partition's offset and size, from the table itself: the secret goes where the
# firmware will look for it.
read -r setup_offset setup_size < <(
    awk -F, '{ gsub(/[ \t]/, "") } $1 == "setup" { print $4, $5 }' "$table"
) || true
[[ -n "${setup_offset:-}" ]] || die "$table has no partition labelled setup"
(( setup_size == 0x1000 )) || die "$table: setup partition is $setup_size bytes, not 0x1000"

# ----- tools -------------------------------------------------------------------------------
if ! command -v espflash >/dev/null; then
    echo "flash: installing espflash (cargo install espflash --locked)"
    cargo install espflash --locked
fi
# No network look-up for a newer espflash on every call.
export ESPFLASH_SKIP_UPDATE_CHECK=true

# Before anything is written to the board: espflash must be able to read the table (some
# versions stop at data partitions whose subtype they do not know).
if ! espflash partition-table "$table" >/dev/null 2>&1; then
    espflash partition-table "$table" >&2 || true
    die "$(espflash --version) cannot read $table: nothing was written to the board"
fi

chronolock() {
    if [[ -n "${CHRONOLOCK:-}" ]]; then
        "$CHRONOLOCK" "$@"
    else
        (cd "$root" && cargo run --quiet --locked -p chronolock -- "$@")
    fi
}

# ----- the board ---------------------------------------------------------------------------
# One port for every step, so the secret, the table and the firmware all reach the same board.
if [[ -z "$port" ]]; then
    ports=$(espflash list-ports --name-only)
    case $(grep -c . <<<"$ports" || true) in
        0) die "no board found: connect one, or name its port with --port" ;;
        1) port=$ports ;;
        *) die "several boards ($(paste -sd ' ' - <<<"$ports")): pick one with --port" ;;
    esac
fi
esp=(--chip esp32c3 --port "$port" --non-interactive)

echo "flash: reading the board on $port"
info=$(espflash board-info "${esp[@]}")
echo "$info"
# "MAC address:       60:55:f9:c0:1b:4c" (absent in secure download mode).
mac=$(sed -n 's/^MAC address:[[:space:]]*\([0-9A-Fa-f:]\{17\}\).*/\1/p' <<<"$info" | tr 'A-F:' 'a-f-')
# "Flash size:        4MB": a table larger than the flash would put allow-lists past its end.
board_mb=$(sed -n 's/^Flash size:[^0-9]*\([0-9]\{1,\}\).*/\1/p' <<<"$info")
if [[ -n "$board_mb" ]] && (( board_mb < ${flash_size%mb} )); then
    die "the board has ${board_mb} MB of flash: use --flash-size 4mb"
fi
if [[ -n "$board_mb" ]] && (( board_mb > ${flash_size%mb} )); then
    echo "flash: note: the board has ${board_mb} MB of flash; --flash-size 8mb gives larger allow-lists"
fi

# ----- the secret --------------------------------------------------------------------------
if [[ -z "$secret" ]]; then
    if [[ ! -d "$secrets_dir" ]]; then
        mkdir -p "$secrets_dir"
        chmod 700 "$secrets_dir"
        # Door passwords do not belong in a repository.
        printf '# Door setup secrets: keep them out of version control.\n*\n' >"$secrets_dir/.gitignore"
    fi
    if [[ -n "$mac" ]]; then
        secret="$secrets_dir/$mac.bin"
    else
        secret="$secrets_dir/door-$(date -u +%Y%m%dT%H%M%SZ).bin"
        echo "flash: warning: espflash did not report the MAC address; the secret is $secret" >&2
        echo "flash: warning: pass --secret $secret when flashing this board again" >&2
    fi
fi

umask 077
if [[ -f "$secret" && "$new_secret" == false ]]; then
    echo "flash: reusing this board's secret $secret"
    # Checked as the door checks it, before it is written to the board.
    chronolock firmware show-secret "$secret"
    to_write="$secret"
else
    # Made beside the file and moved over it only once it is on the board: until then the
    # file keeps describing what the door holds.
    to_write="$secret.new"
    if [[ -f "$secret" ]]; then
        echo "flash: --new-secret: $secret is replaced once the board holds the new one"
    fi
    chronolock firmware setup-secret --out "$to_write" --force
fi

# ----- the firmware ------------------------------------------------------------------------
if [[ -z "$elf" ]]; then
    if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
        rustup target add "$TARGET"
    fi
    echo "flash: building the firmware for $flash_size (firmware/esp32c3)"
    # Its own target directory whatever CARGO_TARGET_DIR says: the ELF is looked for there.
    (cd "$fw" && CARGO_TARGET_DIR="$fw/target" cargo build --release --locked \
        ${features:+--features "$features"})
    elf="$fw/target/$TARGET/release/chronolock-esp32c3"
fi
[[ -f "$elf" ]] || die "no firmware ELF at $elf"

# The secret first: the firmware boots at the end of `espflash flash` and must find it then.
echo "flash: writing the setup secret at $setup_offset"
espflash write-bin "${esp[@]}" "$setup_offset" "$to_write"
# write-bin does not verify; read it back, since a door without its secret never opens setup.
readback=$(mktemp)
trap 'rm -f "$readback"' EXIT
espflash read-flash "${esp[@]}" "$setup_offset" 0x1000 "$readback" >/dev/null
cmp -s "$readback" "$to_write" ||
    die "the setup partition does not read back as $to_write: run the script again"
if [[ "$to_write" != "$secret" ]]; then
    mv -f "$to_write" "$secret"
    echo "flash: this board's secret is $secret"
fi

echo "flash: flashing $elf with $(basename "$table")"
# otadata erased: the bootloader then starts ota_0, the slot espflash writes, even on a door
# that had switched to ota_1 by an update.
espflash flash "${esp[@]}" --flash-size "$flash_size" --partition-table "$table" \
    --erase-parts otadata "$elf"

echo "flash: done. The setup access point's password is in $secret"
echo "flash: (\`chronolock firmware show-secret $secret\` prints it and its QR code again)"
