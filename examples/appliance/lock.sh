#!/usr/bin/env bash
# Regenerates packages.yaml (the appliance's Debian packages, pinned); see
# scripts/debian-lock.sh. After running it, build once and copy the new
# digest of `debs` into `debs_digest` in BUILD.yaml.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec "$here/../../scripts/debian-lock.sh" "$here/packages.yaml" dash coreutils busybox systemd-sysv e2fsprogs gzip sed findutils tar
