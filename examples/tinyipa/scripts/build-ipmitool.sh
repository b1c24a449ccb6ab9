#!/bin/sh
# ipmitool from bookworm's source package: upstream tag IPMITOOL_1_8_19 plus
# Debian's patches, configured as debian/rules does (lanplus, usb, dummy
# interfaces) but without the interactive shell (so without readline),
# built with autotools. With CROSS_COMPILE set (the cross build image), it
# is cross-compiled for that triplet (`--host`), against the target's
# libssl-dev in its multiarch folders. Its closure goes to /closure/ipmitool.
set -eu
# CROSS_COMPILE: the build image's toolchain (arch/<arch>/on-<build_arch>/).
. "/strata/work/${TOOLCHAIN:?}"
export CROSS_COMPILE
mkdir -p -m 1777 /tmp
cp -r /strata/deps/ipmitool-source /build
cd /build
sh /strata/work/scripts/patch-debian.sh
./bootstrap
host="" strip=strip
if [ -n "${CROSS_COMPILE:-}" ]; then
  host="--host=${CROSS_COMPILE%-}" strip=${CROSS_COMPILE}strip
fi
# shellcheck disable=SC2086
./configure $host --prefix=/usr --mandir=/usr/share/man --enable-intf-lanplus \
  --enable-intf-usb --enable-intf-dummy --disable-ipmishell
make -j"$(nproc)"
install -s --strip-program="$strip" -D -m 0755 src/ipmitool /usr/bin/ipmitool
sh /strata/work/scripts/closure.sh /closure/ipmitool /usr/bin/ipmitool
cd / && rm -rf /build
