#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every check CI
# runs. Works on a fresh machine; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

# A clean run takes some 5 GB (test binaries, tree images, the examples'
# stores); a full disk shows up as a linker error, so say it first.
free_mb=$(df -Pm . | awk 'NR==2 {print $4}')
if ((free_mb < 8192)); then
  echo "warning: only ${free_mb} MB free here; a clean test run needs about 5 GB" >&2
fi

# Tools the tests and the example pipelines call (Debian package names).
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need cc gcc
need tar tar
need gzip gzip
need sha256sum coreutils
need zstd zstd
need xz xz-utils
need cpio cpio
need dpkg-deb dpkg
need dot graphviz
need qemu-system-x86_64 qemu-system-x86
# examples/tinyipa boots its aarch64 ramdisk on qemu -M virt.
need qemu-system-aarch64 qemu-system-arm
# examples/appliance: compose on the flashed data-root, the ext4 tools.
need docker-compose docker-compose
need mke2fs e2fsprogs
need debugfs e2fsprogs
# The image rules' oracles (tests/rule_volumes.rs, tests/rule_disk.rs).
need unsquashfs squashfs-tools
need fsck.vfat dosfstools
need mdir mtools
need sfdisk fdisk
need xorriso xorriso
need losetup mount
need git git
need keyctl keyutils
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# The container tests need a Docker Engine and a registry binary; in CI they
# must run, never skip.
scripts/docker-up.sh
export STRATA_REQUIRE_DOCKER=1

# Steps on linux/arm64 images run through qemu-user: the script installs
# qemu-user-static and qemu-system-arm and registers the aarch64 binfmt_misc
# handler (failing with the kernel's reason if it refuses). In CI the
# emulated tests must run, never skip.
scripts/binfmt-up.sh
export STRATA_REQUIRE_EMULATION=1

# The remote cache tests start real cache servers of their own: nginx as a
# Bazel HTTP cache and BuildGrid (PyPI, in a reused venv) as a REAPI one; the
# remote execution tests start BuildGrid as an execution service on a
# PostgreSQL cluster of their own (scripts/buildgrid-serve.sh; buildgrid-up.sh
# installs Debian's postgresql). The scripts install them when missing and
# print their binaries; in CI these tests must run, never skip.
STRATA_NGINX_BIN=$(scripts/nginx-up.sh)
STRATA_BUILDGRID_BIN=$(scripts/buildgrid-up.sh)
export STRATA_NGINX_BIN STRATA_BUILDGRID_BIN
export STRATA_REQUIRE_REMOTE_SERVERS=1

# Bazel (Debian's bazel-bootstrap, 4.2.3) as a third-party client of
# `strata cache serve` over REAPI gRPC; in CI it must run, never skip.
STRATA_BAZEL_BIN=$(scripts/bazel-up.sh)
export STRATA_BAZEL_BIN
export STRATA_REQUIRE_BAZEL=1

# The supply-chain tests check Strata's SBOMs and signed provenance with
# third-party validators (spdx-tools, cyclonedx-python-lib, securesystemslib)
# from a venv the script makes once under ~/.cache/strata-test; in CI they
# must run, never skip.
STRATA_SUPPLY_PYTHON=$(scripts/supply-validators-up.sh)
export STRATA_SUPPLY_PYTHON
export STRATA_REQUIRE_SUPPLY_VALIDATORS=1

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The crate layering ARCHITECTURE.md promises (no network client below the
# engine, nothing but the binary on the engine, the "only crate that"s).
scripts/check-layers.sh
cargo test --workspace --locked
