#!/bin/sh
# Installs the bundled package into the root given as $1 (default /).
set -e
root="${1:-/}"
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
[ -e "$root/var/lib/dpkg/status" ] || : > "$root/var/lib/dpkg/status"
dpkg --root="$root" --force-not-root --force-script-chrootless --force-bad-path -i ./*.deb
echo "installed into $root"
