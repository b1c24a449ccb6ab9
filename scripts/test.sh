#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every check CI
# runs. Works on a fresh machine; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

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
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# The container tests need a Docker Engine and a registry binary; in CI they
# must run, never skip.
scripts/docker-up.sh
export STRATA_REQUIRE_DOCKER=1

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
