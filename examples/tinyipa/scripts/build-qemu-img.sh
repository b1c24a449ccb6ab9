#!/bin/sh
# qemu-img from bookworm's qemu source package with Debian's patches: the
# tools only (no system or user emulator, no optional feature), so it needs
# meson, ninja, python3, glib and zlib and nothing else. With CROSS_COMPILE
# set (the cross build image, by its toolchain.env), configure's --cross-prefix makes the cross
# compiler and the target's pkg-config (aarch64-linux-gnu-pkg-config, over
# its multiarch glib) do the build. Its closure goes to /closure/qemu-img.
set -eu
# CROSS_COMPILE: the build image's toolchain (arch/<arch>/on-<build_arch>/).
. "/strata/work/${TOOLCHAIN:?}"
export CROSS_COMPILE
mkdir -p -m 1777 /tmp
cp -r /strata/deps/qemu-source /build
cd /build
sh /strata/work/scripts/patch-debian.sh
mkdir b && cd b
cross=${CROSS_COMPILE:-}
../configure ${cross:+--cross-prefix="$cross"} --prefix=/usr --target-list= --disable-system --disable-user \
  --enable-tools --without-default-features --disable-docs --disable-werror
ninja -j"$(nproc)" qemu-img
install -s --strip-program="${cross}strip" -D -m 0755 qemu-img /usr/bin/qemu-img
sh /strata/work/scripts/closure.sh /closure/qemu-img /usr/bin/qemu-img
cd / && rm -rf /build
