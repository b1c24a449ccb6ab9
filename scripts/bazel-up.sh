#!/usr/bin/env bash
# Installs what the Bazel client tests run: Debian's bazel-bootstrap (Bazel
# 4.2.3, with the default JDK it needs) when `bazel` is missing. Tests run
# their own Bazel server (tests/common/bazel.rs: own output root, no rc
# files, no network). Prints the bazel binary's path; progress goes to
# stderr.
set -euo pipefail

if ! command -v bazel >/dev/null 2>&1 || [ ! -d /usr/share/bazel ]; then
  echo "installing: bazel-bootstrap" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 \
    apt-get install -y -qq --no-install-recommends bazel-bootstrap >&2
fi

bin=$(command -v bazel) || { echo "bazel-up: no bazel binary after install" >&2; exit 1; }
[ -d /usr/share/bazel ] || { echo "bazel-up: /usr/share/bazel (the install base) is missing" >&2; exit 1; }
echo "$bin"
