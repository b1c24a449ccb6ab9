#!/usr/bin/env bash
# Usage: lock.sh [x86_64|aarch64]...   (default: both)
# Regenerates the pinned Debian 12 package and source lists of the example
# (see scripts/debian-lock.sh). Per architecture of the ramdisk, arch/<arch>/
#   runtime-packages.yaml busybox-static (runtime-debs, runtime-deb-*)
#   kernel-packages.yaml  the kernel package of linux-image-<arch> (kernel-debs)
#                         and `kernel`, its /boot/vmlinuz-*
#   iso-packages.yaml     (x86_64) isolinux and syslinux-common, the CD
#                         image's boot loader (iso-debs, iso-deb-*)
# per architecture of the build machine (`build_arch`), toolchains/<build_arch>/
#   build-packages.yaml   the build image's packages (compilers, autotools,
#                         libssl-dev): build-debs, build-deb-*, build-base-rootfs
#   qemu-packages.yaml    what qemu-img's build adds to them (meson, ninja,
#                         python3, glib): qemu-build-debs, qemu-build-deb-*,
#                         qemu-build-base-rootfs, on when require_qemu_img is
# and, for aarch64 on x86_64 (a cross build: amd64 build images, x86_64's
# two lists above and these), arch/aarch64/on-x86_64/
#   cross-packages.yaml   Debian's cross toolchain (gcc-aarch64-linux-gnu,
#                         g++-aarch64-linux-gnu) and the arm64 libraries the
#                         tools link, in multiarch paths (libssl-dev:arm64,
#                         libstdc++6:arm64): cross-debs, cross-deb-*,
#                         cross-base-rootfs
#   qemu-cross-packages.yaml  qemu-img's arm64 libraries (libglib2.0-dev:arm64,
#                         zlib1g-dev:arm64, pkgconf:arm64): qemu-cross-debs, ...
# (arch/<arch>/on-<build_arch>/images.yaml and toolchain.env, the build
# images and what their scripts compile for, are written by hand)
# and, shared, sources/<pkg>.yaml: ipmitool, lshw and qemu from bookworm's
# source packages (each file checked against the SHA256 apt gives).
# Then build once: each fetch whose file list changed fails with its new
# output digest, which goes into the matching `*_digest` variable of
# BUILD.yaml (`--var arch=aarch64` for the arm64 ones, with
# `--var build_arch=aarch64` for the native arm64 build images).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
lock="$here/../../scripts/debian-lock.sh"
build_packages=(gcc g++ make libc6-dev libc-bin dash bash coreutils grep sed mawk
  findutils diffutils patch autoconf automake libtool libssl-dev)
qemu_packages=(python3 meson ninja-build pkgconf libglib2.0-dev zlib1g-dev)
cross_packages=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross
  libssl-dev:arm64 libstdc++6:arm64)
qemu_cross_packages=(libglib2.0-dev:arm64 zlib1g-dev:arm64)

arches=("$@")
((${#arches[@]})) || arches=(x86_64 aarch64)
for arch in "${arches[@]}"; do
  case $arch in
    x86_64) deb=amd64 ;;
    aarch64) deb=arm64 ;;
    *) echo "unknown arch $arch (x86_64 or aarch64)" >&2; exit 2 ;;
  esac
  out="$here/arch/$arch"
  # The build machine's own compilers (native build images).
  tools="$here/toolchains/$arch"
  mkdir -p "$out" "$tools"
  "$lock" --arch "$deb" --prefix build- --digest-var "${deb}_build_debs_digest" \
    "$tools/build-packages.yaml" "${build_packages[@]}"
  "$lock" --arch "$deb" --prefix qemu-build- --digest-var "${deb}_qemu_build_debs_digest" \
    --when '${require_qemu_img}' --on-top-of "${build_packages[*]}" \
    "$tools/qemu-packages.yaml" "${qemu_packages[@]}"
  if [[ $arch == aarch64 ]]; then
    # Cross: on top of the amd64 build images, the cross compilers and the
    # arm64 libraries beside the amd64 ones (apt with arm64 as a foreign
    # architecture).
    mkdir -p "$out/on-x86_64"
    "$lock" --arch amd64 --foreign arm64 --prefix cross- \
      --digest-var cross_arm64_build_debs_digest --on-top-of "${build_packages[*]}" \
      "$out/on-x86_64/cross-packages.yaml" "${cross_packages[@]}"
    "$lock" --arch amd64 --foreign arm64 --prefix qemu-cross- \
      --digest-var cross_arm64_qemu_build_debs_digest --when '${require_qemu_img}' \
      --on-top-of "${build_packages[*]} ${qemu_packages[*]} ${cross_packages[*]}" \
      "$out/on-x86_64/qemu-cross-packages.yaml" "${qemu_cross_packages[@]}"
  fi
  "$lock" --arch "$deb" --prefix runtime- --digest-var "${deb}_runtime_debs_digest" \
    --exact --no-rootfs "$out/runtime-packages.yaml" busybox-static
  if [[ $arch == x86_64 ]]; then
    # The CD image's boot loader (isolinux boots PCs): isolinux.bin and
    # ldlinux.c32, for arch/x86_64/iso.yaml.
    "$lock" --arch amd64 --prefix iso- --digest-var amd64_iso_debs_digest \
      --exact --no-rootfs "$out/iso-packages.yaml" isolinux syslinux-common
  fi
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
