#!/usr/bin/env bash
# Makes BuildGrid (a REAPI server from PyPI) available to the remote cache
# and remote execution tests: a venv with the pinned buildgrid, its database
# extra (the PostgreSQL drivers its scheduler needs) and their pinned
# dependencies (scripts/buildgrid-constraints.txt), created once and reused
# while the pins and the interpreter are unchanged; and Debian's PostgreSQL
# server programs, which BuildGrid's scheduler stores its jobs in (0.4.4 and
# later accept no other database). Nothing is started: tests start their own
# servers (tests/common/remote.rs: a cache; scripts/buildgrid-serve.sh, also
# for developers: a private PostgreSQL cluster and an execution service).
# Prints the venv's `bgd` path; progress goes to stderr.
#
# buildgrid 0.4.4 needs Python >= 3.11 (newer releases need 3.13): the
# interpreter is $STRATA_BUILDGRID_PYTHON, else the newest of 3.13, 3.12 and
# 3.11 found on PATH or under pyenv, else Debian's python3 (with python3-venv
# installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.4.4
constraints=scripts/buildgrid-constraints.txt

# PostgreSQL's server programs (initdb, postgres). The package's own
# cluster is never started: a policy-rc.d that refuses service starts is in
# place during the install (Debian's container images already have one).
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  echo "installing: postgresql" >&2
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# strata scripts/buildgrid-up.sh: no service starts during its install\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -qq postgresql >&2
fi

usable() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; }

find_python() {
  if [ -n "${STRATA_BUILDGRID_PYTHON:-}" ]; then
    usable "$STRATA_BUILDGRID_PYTHON" || {
      echo "buildgrid-up: STRATA_BUILDGRID_PYTHON=$STRATA_BUILDGRID_PYTHON is not a Python >= 3.11" >&2
      return 1
    }
    echo "$STRATA_BUILDGRID_PYTHON"
    return
  fi
  local v c
  for v in 3.13 3.12 3.11; do
    for c in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v"*/bin/python"$v" \
      /root/.pyenv/versions/"$v"*/bin/python"$v" "$(command -v "python$v" || true)"; do
      if [ -n "$c" ] && [ -x "$c" ] && usable "$c"; then
        # The real interpreter, not a pyenv shim: the venv must not depend
        # on which pyenv version is selected.
        "$c" -c 'import sys; print(sys.executable)'
        return
      fi
    done
  done
  if command -v python3 >/dev/null 2>&1 && usable python3; then
    python3 -c 'import sys; print(sys.executable)'
    return
  fi
  echo "buildgrid-up: no Python >= 3.11 found (looked for python3.13, python3.12, python3.11" \
    "on PATH and under ${PYENV_ROOT:-$HOME/.pyenv}/versions, then python3);" \
    "install one or set STRATA_BUILDGRID_PYTHON" >&2
  return 1
}

python=$(find_python)
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# `database` in the name: venvs made before the extra was installed are
# left alone, not rebuilt under a running test.
venv=${XDG_CACHE_HOME:-$HOME/.cache}/strata-test/buildgrid-$version-database-py$pyver
stamp="$venv/.strata-installed"
want="$python buildgrid[database]==$version $(sha256sum "$constraints" | cut -d' ' -f1)"

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "buildgrid-up: installing buildgrid[database]==$version into $venv (Python $pyver: $python)" >&2
  if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    # Debian's python3 needs python3-venv for `-m venv`.
    echo "installing: python3-venv" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
  fi
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    -c "$constraints" "buildgrid[database]==$version" >&2
  echo "$want" >"$stamp"
fi

[ -x "$venv/bin/bgd" ] || { echo "buildgrid-up: $venv/bin/bgd missing" >&2; exit 1; }
echo "$venv/bin/bgd"
