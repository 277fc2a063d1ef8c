#!/usr/bin/env bash
# Builds the ESP32-C3 firmware (release, --locked) once per flash size: for 4 MB
# (partitions-4mb.csv, default features) and for 8 MB (partitions-8mb.csv, `--features
# flash-8mb`). For each it prints the flash and static RAM use and the allow-list slot size,
# fails above the budgets, and writes the flashable application image. First runs the host tests
# of the firmware's own parsing (firmware/host-tests); the drivers shared with the virtual doors
# are tested with the main workspace (`cargo test -p chronolock-device`).
#
#   scripts/firmware.sh            # from anywhere in the repository
#
# Budgets: the OTA app slot for the image (ota_0 and ota_1 are 0x180000 bytes, 1.5 MiB, in both
# tables), 150 KiB of static RAM (.data, .bss and the code that runs from RAM). Installs what it
# needs on a fresh Debian machine: the riscv32imc target and esptool (from PyPI, pinned) for
# `elf2image`.
set -euo pipefail

ESPTOOL_VERSION=5.1.0
# An image larger than an app slot could not be flashed, nor installed by an update.
FLASH_LIMIT=$((0x180000))
RAM_LIMIT=$((150 * 1024))
TARGET=riscv32imc-unknown-none-elf

root=$(cd "$(dirname "$0")/.." && pwd)
fw="$root/firmware/esp32c3"
# Both builds write this one path: each is copied out before the next build.
built="$fw/target/$TARGET/release/chronolock-esp32c3"

if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
fi

# esptool in a private virtual environment: no system packages touched, quick to reuse.
venv="$fw/target/esptool-venv"
if ! "$venv/bin/esptool" version 2>/dev/null | grep -q "$ESPTOOL_VERSION"; then
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        if command -v apt-get >/dev/null; then
            apt-get update -qq >/dev/null && apt-get install -y -qq python3-venv >/dev/null
        fi
        python3 -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "esptool==$ESPTOOL_VERSION"
fi

echo "firmware: host tests of its parsing (firmware/host-tests)"
(cd "$root/firmware/host-tests" && CARGO_TARGET_DIR="$root/firmware/host-tests/target" cargo test --locked --quiet)

# build SIZE [CARGO FLAGS...]: builds the image for partitions-SIZE.csv, prints its figures and
# fails above the budgets.
build() {
    local size=$1
    shift
    local table="$fw/partitions-$size.csv"
    local elf="$fw/target/chronolock-esp32c3-$size.elf"
    local image="$fw/target/chronolock-esp32c3-$size.bin"

    echo "firmware $size: cargo build --release --locked${*:+ $*} (firmware/esp32c3)"
    # Its own target directory whatever CARGO_TARGET_DIR says: the ELF is looked for there.
    (cd "$fw" && CARGO_TARGET_DIR="$fw/target" cargo build --release --locked --quiet "$@")
    cp "$built" "$elf"

    "$venv/bin/esptool" --chip esp32c3 elf2image --flash-mode dio --flash-size "${size^^}" \
        --output "$image" "$elf" >/dev/null

    python3 - "$size" "$elf" "$image" "$table" "$FLASH_LIMIT" "$RAM_LIMIT" <<'EOF'
import os, struct, sys

size_name, elf_path, image_path, table_path = sys.argv[1:5]
flash_limit, ram_limit = int(sys.argv[5]), int(sys.argv[6])

def say(line, file=sys.stdout):
    print(f"firmware {size_name}: {line}", file=file)

# The allow-list slots, from the table the image is built for (src/store.rs checks the same
# offsets at boot). A slot holds a 256-byte slot header, then the list: a 64-byte header,
# 16-byte card records (keypad entries and policies take room too) and a 64-byte signature.
slot = None
for line in open(table_path):
    fields = [field.strip() for field in line.split(",")]
    if not line.startswith("#") and len(fields) >= 5 and fields[0] == "allowlists":
        slot = int(fields[4], 0) // 2
if slot is None:
    say(f"FAIL: no allowlists partition in {table_path}", sys.stderr)
    sys.exit(1)
cards = (slot - 256 - 64 - 64) // 16

# Sizes from the ELF's section headers (no binutils needed).
f = open(elf_path, "rb").read()
shoff = struct.unpack_from("<I", f, 0x20)[0]
shentsize, shnum, shstrndx = struct.unpack_from("<HHH", f, 0x2E)
sections = [struct.unpack_from("<IIIIIIIIII", f, shoff + i * shentsize) for i in range(shnum)]
names = sections[shstrndx]

def name(s):
    start = names[4] + s[0]
    return f[start:f.index(b"\0", start)].decode()

SHF_ALLOC, SHT_NOBITS = 2, 8
# ESP32-C3 address map: internal SRAM as data (0x3FC8_0000..0x3FCE_0000) and as instructions
# (0x4037_C000..0x403E_0000); flash mapped as data (0x3C00_0000..) and instructions (0x4200_0000..).
def in_sram(a):
    return 0x3FC80000 <= a < 0x3FCE0000 or 0x4037C000 <= a < 0x403E0000

ram = {}
flash_loaded = 0
for s in sections:
    n, kind, flags, addr, size = name(s), s[1], s[2], s[3], s[5]
    if not flags & SHF_ALLOC or size == 0:
        continue
    # Placeholders the linker script uses to keep instruction and data views apart, and the
    # stack (whatever RAM is left), are not static allocations.
    if n.endswith("_dummy") or n == ".stack":
        continue
    if in_sram(addr):
        # Reclaimed after boot from the second-stage bootloader: heap, not the app's RAM.
        if n == ".dram2_uninit":
            continue
        ram[n] = size
    if kind != SHT_NOBITS:
        flash_loaded += size

image = os.path.getsize(image_path)
static_ram = sum(ram.values())
detail = ", ".join(f"{k} {v}" for k, v in sorted(ram.items(), key=lambda kv: -kv[1]))
say(f"flash {image} bytes ({image / 1024:.1f} KiB image, limit {flash_limit // 1024} KiB, the app slot)")
say(f"static RAM {static_ram} bytes ({static_ram / 1024:.1f} KiB, limit {ram_limit // 1024} KiB): {detail}")
say(f"allow-list slots 2 x {slot} bytes ({slot // 1024} KiB), up to {cards} cards of 16 bytes each")
say(f"image {os.path.relpath(image_path)} for {os.path.relpath(table_path)}")
failed = False
if image > flash_limit:
    say("FAIL: image above the flash budget", sys.stderr)
    failed = True
if static_ram > ram_limit:
    say("FAIL: static RAM above the budget", sys.stderr)
    failed = True
sys.exit(1 if failed else 0)
EOF
}

build 4mb
build 8mb --features flash-8mb
