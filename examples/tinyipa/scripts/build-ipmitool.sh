#!/bin/sh
# ipmitool from bookworm's source package: upstream tag IPMITOOL_1_8_19 plus
# Debian's patches, configured as debian/rules does (lanplus, usb, dummy
# interfaces) but without the interactive shell (so without readline),
# built with autotools. Its closure goes to /closure/ipmitool.
set -eu
mkdir -p -m 1777 /tmp
cp -r /strata/deps/ipmitool-source /build
cd /build
sh /strata/work/scripts/patch-debian.sh
./bootstrap
./configure --prefix=/usr --mandir=/usr/share/man --enable-intf-lanplus \
  --enable-intf-usb --enable-intf-dummy --disable-ipmishell
make -j"$(nproc)"
install -s -D -m 0755 src/ipmitool /usr/bin/ipmitool
sh /strata/work/scripts/closure.sh /closure/ipmitool /usr/bin/ipmitool
cd / && rm -rf /build
