#!/bin/sh
# Applies a Debian source package's quilt patches (debian/patches/series)
# to the upstream tree in the current folder, as dpkg-source -x would. A
# source locked without its Debian tarball has no patches to apply.
set -eu
[ -f debian/patches/series ] || { echo "no debian/patches/series: upstream source as is"; exit 0; }
sed -e 's/#.*//' -e '/^[[:space:]]*$/d' debian/patches/series | while read -r p _; do
  echo "applying $p"
  patch -p1 --no-backup-if-mismatch -s <"debian/patches/$p"
done
