#!/usr/bin/env bash
# Builds the ESP32-C3 firmware (release, --locked), prints its flash and static RAM use, fails
# above the budgets, and writes the flashable application image. First runs the host tests of
# the firmware's own parsing (firmware/host-tests); the drivers shared with the virtual doors are
# tested with the main workspace (`cargo test -p chronolock-device`).
#
#   scripts/firmware.sh            # from anywhere in the repository
#
# Budgets: 1.5 MiB of flash (the image), 200 KiB of static RAM (.data, .bss and the code that
# runs from RAM). Installs what it needs on a fresh Debian machine: the riscv32imc target and
# esptool (from PyPI, pinned) for `elf2image`.
set -euo pipefail

ESPTOOL_VERSION=5.1.0
FLASH_LIMIT=$((1536 * 1024))
RAM_LIMIT=$((200 * 1024))
TARGET=riscv32imc-unknown-none-elf

root=$(cd "$(dirname "$0")/.." && pwd)
fw="$root/firmware/esp32c3"
elf="$fw/target/$TARGET/release/chronolock-esp32c3"
image="$fw/target/chronolock-esp32c3.bin"

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

echo "firmware: cargo build --release --locked (firmware/esp32c3)"
# Its own target directory whatever CARGO_TARGET_DIR says: the ELF is looked for there.
(cd "$fw" && CARGO_TARGET_DIR="$fw/target" cargo build --release --locked --quiet)

"$venv/bin/esptool" --chip esp32c3 elf2image --flash-mode dio --flash-size 4MB \
    --output "$image" "$elf" >/dev/null

# Sizes from the ELF's section headers (no binutils needed).
python3 - "$elf" "$image" "$FLASH_LIMIT" "$RAM_LIMIT" <<'EOF'
import os, struct, sys

elf_path, image_path, flash_limit, ram_limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
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
print(f"firmware: flash {image} bytes ({image / 1024:.1f} KiB image, limit {flash_limit // 1024} KiB)")
print(f"firmware: static RAM {static_ram} bytes ({static_ram / 1024:.1f} KiB, limit {ram_limit // 1024} KiB): {detail}")
print(f"firmware: image {os.path.relpath(image_path)}")
failed = False
if image > flash_limit:
    print("firmware: FAIL: image above the flash budget", file=sys.stderr)
    failed = True
if static_ram > ram_limit:
    print("firmware: FAIL: static RAM above the budget", file=sys.stderr)
    failed = True
sys.exit(1 if failed else 0)
EOF
