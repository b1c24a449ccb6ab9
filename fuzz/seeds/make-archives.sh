#!/usr/bin/env bash
# Regenerates the archive seeds of the extract_archive target with system
# tools (tar, gzip, xz, zstd, bzip2, ar, dpkg-deb). Small on purpose: tar
# records of one block (-b1), a few entries of each kind.
set -euo pipefail
out="$(cd "$(dirname "$0")" && pwd)/extract_archive"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"

T=(tar -b1 --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner)

mkdir -p root/usr/bin root/usr/share/doc/pkg root/etc root/tmp
printf 'hello\n' >root/usr/bin/tool
chmod 4755 root/usr/bin/tool
printf 'doc\n' >root/usr/share/doc/pkg/README
printf 'conf\n' >root/etc/app.conf
chmod 1777 root/tmp
ln -s ../usr/bin/tool root/etc/link
ln root/usr/bin/tool root/usr/bin/hard
mkfifo root/tmp/fifo

"${T[@]}" --format=gnu -cf "$out/gnu.tar" -C root .
"${T[@]}" --format=ustar -cf "$out/ustar.tar" -C root usr etc
"${T[@]}" --format=pax --pax-option=delete=atime,delete=ctime -cf "$out/pax.tar" -C root .
gzip -n -9 <"$out/ustar.tar" >"$out/ustar.tar.gz"
xz -9e --check=crc64 <"$out/ustar.tar" >"$out/ustar.tar.xz"
zstd -q -19 <"$out/ustar.tar" >"$out/ustar.tar.zst"
bzip2 -9 <"$out/ustar.tar" >"$out/ustar.tar.bz2"

# Long names: GNU ././@LongLink and PAX path/linkpath records.
long="d/$(printf 'n%.0s' {1..120})"
mkdir -p "long/$(dirname "$long")"
printf 'x' >"long/$long"
ln -s "$(printf 't%.0s' {1..110})" long/d/sym
"${T[@]}" --format=gnu -cf "$out/longname-gnu.tar" -C long .
"${T[@]}" --format=pax --pax-option=delete=atime,delete=ctime -cf "$out/longname-pax.tar" -C long .

# A hostile tar: a `..` entry, an absolute path, a link out of the tree.
mkdir -p evil/a
printf 'x' >evil/a/f
ln -s /etc/passwd evil/a/l
"${T[@]}" --format=gnu -cf "$out/evil.tar" -C evil a \
  --transform='s,^a/f$,../../etc/cron.d/x,' --transform='s,^a/l$,/abs/l,'

# A .deb with dpkg-deb (control.tar.xz, data.tar.xz by default) ...
mkdir -p deb/DEBIAN deb/usr/bin
printf 'Package: p\nVersion: 1\nArchitecture: all\nMaintainer: x <x@x>\nDescription: d\n' \
  >deb/DEBIAN/control
printf '#!/bin/sh\n' >deb/DEBIAN/postinst
chmod 755 deb/DEBIAN/postinst deb/DEBIAN deb/usr deb/usr/bin
printf 'bin' >deb/usr/bin/p
SOURCE_DATE_EPOCH=0 dpkg-deb --root-owner-group -Zxz --build deb "$out/xz.deb" >/dev/null
SOURCE_DATE_EPOCH=0 dpkg-deb --root-owner-group -Zgzip --build deb "$out/gzip.deb" >/dev/null
# ... and one assembled with ar (plain tars, zstd control), the way
# third-party tools write them.
mkdir -p ar
printf '2.0\n' >ar/debian-binary
"${T[@]}" -cf ar/control.tar -C deb/DEBIAN .
zstd -q -19 <ar/control.tar >ar/control.tar.zst
"${T[@]}" -cf ar/data.tar -C deb ./usr
(cd ar && ar -rcD "$out/ar.deb" debian-binary control.tar.zst data.tar)

ls -l "$out"
