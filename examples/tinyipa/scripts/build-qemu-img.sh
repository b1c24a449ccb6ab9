#!/bin/sh
# qemu-img from bookworm's qemu source package with Debian's patches: the
# tools only (no system or user emulator, no optional feature), so it needs
# meson, ninja, python3, glib and zlib and nothing else. Its closure goes
# to /closure/qemu-img.
set -eu
mkdir -p -m 1777 /tmp
cp -r /strata/deps/qemu-source /build
cd /build
sh /strata/work/scripts/patch-debian.sh
mkdir b && cd b
../configure --prefix=/usr --target-list= --disable-system --disable-user \
  --enable-tools --without-default-features --disable-docs --disable-werror
ninja -j"$(nproc)" qemu-img
install -s -D -m 0755 qemu-img /usr/bin/qemu-img
sh /strata/work/scripts/closure.sh /closure/qemu-img /usr/bin/qemu-img
cd / && rm -rf /build
