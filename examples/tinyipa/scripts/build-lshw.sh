#!/bin/sh
# lshw from bookworm's source package (upstream snapshot 996aaad9c7), the
# command-line tool only (no GUI, no SQLite, no zlib). Its version string
# comes from VERSION (upstream reads it from git, which a source package
# does not have). With CROSS_COMPILE set (the cross build image), the
# compiler, archiver and strip are the cross toolchain's. Its closure goes
# to /closure/lshw.
set -eu
# CROSS_COMPILE: the build image's toolchain (arch/<arch>/on-<build_arch>/).
. "/strata/work/${TOOLCHAIN:?}"
export CROSS_COMPILE
: "${LSHW_VERSION:?}"
mkdir -p -m 1777 /tmp
cp -r /strata/deps/lshw-source /build
cd /build
sh /strata/work/scripts/patch-debian.sh
cross=${CROSS_COMPILE:-}
make -C src -j"$(nproc)" VERSION="$LSHW_VERSION" RPM_OPT_FLAGS=-O2 \
  CXX="${cross}g++" AR="${cross}ar" lshw
install -s --strip-program="${cross}strip" -D -m 0755 src/lshw /usr/sbin/lshw
sh /strata/work/scripts/closure.sh /closure/lshw /usr/sbin/lshw
cd / && rm -rf /build
