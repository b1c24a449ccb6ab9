#!/usr/bin/env bash
# Usage: lock.sh [x86_64|aarch64]...   (default: both)
# Regenerates the appliance's pinned Debian 12 package lists (see
# scripts/debian-lock.sh):
#   packages-<arch>.yaml       the device's packages for that architecture
#                              (amd64 or arm64): debs, deb-*, base-rootfs
# (platform-<arch>.yaml is written by hand.) Then build once per
# architecture: each fetch whose list changed fails with its new output
# digest, which goes into the matching `*_debs_digest` variable of
# BUILD.yaml (`--var arch=aarch64` for the arm64 one).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
lock="$here/../../scripts/debian-lock.sh"
device_packages=(dash coreutils busybox systemd-sysv e2fsprogs gzip sed findutils tar)

arches=("$@")
((${#arches[@]})) || arches=(x86_64 aarch64)
for arch in "${arches[@]}"; do
  case $arch in
    x86_64) deb=amd64 ;;
    aarch64) deb=arm64 ;;
    *) echo "unknown arch $arch (x86_64 or aarch64)" >&2; exit 2 ;;
  esac
  "$lock" --arch "$deb" --digest-var "${deb}_debs_digest" \
    "$here/packages-$arch.yaml" "${device_packages[@]}"
done
