#!/bin/sh
# lshw from bookworm's source package (upstream snapshot 996aaad9c7), the
# command-line tool only (no GUI, no SQLite, no zlib). Its version string
# comes from VERSION (upstream reads it from git, which a source package
# does not have). Its closure goes to /closure/lshw.
set -eu
: "${LSHW_VERSION:?}"
mkdir -p -m 1777 /tmp
cp -r /strata/deps/lshw-source /build
cd /build
sh /strata/work/scripts/patch-debian.sh
make -C src -j"$(nproc)" VERSION="$LSHW_VERSION" RPM_OPT_FLAGS=-O2 lshw
install -s -D -m 0755 src/lshw /usr/sbin/lshw
sh /strata/work/scripts/closure.sh /closure/lshw /usr/sbin/lshw
cd / && rm -rf /build
