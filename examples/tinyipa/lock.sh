#!/usr/bin/env bash
# Usage: lock.sh [x86_64|aarch64]...   (default: both)
# Regenerates the pinned Debian 12 package and source lists of the example
# (see scripts/debian-lock.sh): per architecture, arch/<arch>/
#   build-packages.yaml   the build image's packages (compilers, autotools,
#                         libssl-dev): build-debs, build-deb-*, build-base-rootfs
#   qemu-packages.yaml    what qemu-img's build adds to them (meson, ninja,
#                         python3, glib): qemu-build-debs, qemu-build-deb-*,
#                         qemu-build-base-rootfs, on when require_qemu_img is
#   images.yaml           (written by hand) the build images, with their
#                         platform
#   runtime-packages.yaml busybox-static (runtime-debs, runtime-deb-*)
#   kernel-packages.yaml  the kernel package of linux-image-<arch> (kernel-debs)
#                         and `kernel`, its /boot/vmlinuz-*
# and, shared, sources/<pkg>.yaml: ipmitool, lshw and qemu from bookworm's
# source packages (each file checked against the SHA256 apt gives).
# Then build once: each fetch whose file list changed fails with its new
# output digest, which goes into the matching `*_digest` variable of
# BUILD.yaml (`--var arch=aarch64` for the arm64 ones).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
lock="$here/../../scripts/debian-lock.sh"
build_packages=(gcc g++ make libc6-dev libc-bin dash bash coreutils grep sed mawk
  findutils diffutils patch autoconf automake libtool libssl-dev)
qemu_packages=(python3 meson ninja-build pkgconf libglib2.0-dev zlib1g-dev)

arches=("$@")
((${#arches[@]})) || arches=(x86_64 aarch64)
for arch in "${arches[@]}"; do
  case $arch in
    x86_64) deb=amd64 ;;
    aarch64) deb=arm64 ;;
    *) echo "unknown arch $arch (x86_64 or aarch64)" >&2; exit 2 ;;
  esac
  out="$here/arch/$arch"
  mkdir -p "$out"
  "$lock" --arch "$deb" --prefix build- --digest-var "${deb}_build_debs_digest" \
    "$out/build-packages.yaml" "${build_packages[@]}"
  "$lock" --arch "$deb" --prefix qemu-build- --digest-var "${deb}_qemu_build_debs_digest" \
    --when '${require_qemu_img}' --on-top-of "${build_packages[*]}" \
    "$out/qemu-packages.yaml" "${qemu_packages[@]}"
  "$lock" --arch "$deb" --prefix runtime- --digest-var "${deb}_runtime_debs_digest" \
    --exact --no-rootfs "$out/runtime-packages.yaml" busybox-static
  # The kernel: the package linux-image-<arch> points to, fetched alone (its
  # dependencies are initramfs tools a ramdisk does not need), and only its
  # /boot/vmlinuz-* extracted.
  "$lock" --arch "$deb" --prefix kernel- --digest-var "${deb}_kernel_debs_digest" \
    --exact --first-depends --no-extract "$out/kernel-packages.yaml" "linux-image-$deb"
  file=$(awk '/curl / {print $6; exit}' "$out/kernel-packages.yaml")
  cat >>"$out/kernel-packages.yaml" <<YAML
  kernel:
    rule: extract
    from: "kernel-debs:debs/$file"
    include: ["boot/vmlinuz-*"]
YAML
done
mkdir -p "$here/sources"
"$lock" --source --when '${require_ipmitool}' "$here/sources/ipmitool.yaml" ipmitool
"$lock" --source "$here/sources/lshw.yaml" lshw
"$lock" --source --when '${require_qemu_img}' "$here/sources/qemu.yaml" qemu
