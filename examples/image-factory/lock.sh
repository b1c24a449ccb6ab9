#!/usr/bin/env bash
# Regenerates packages.yaml (the base image's Debian packages, pinned); see
# scripts/debian-lock.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec "$here/../../scripts/debian-lock.sh" "$here/packages.yaml" gcc libc6-dev make dash coreutils
