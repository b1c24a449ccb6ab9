#!/usr/bin/env bash
# Makes the third-party validators of the supply-chain tests available
# (tests/supply_chain.rs): a venv from PyPI, created once under
# ~/.cache/strata-test and reused while the pins and the interpreter are
# unchanged, holding
#   spdx-tools            pyspdxtools -i FILE: parses and validates SPDX 2.3
#   cyclonedx-python-lib  its JSON validator, against the CycloneDX 1.6 schema
#   securesystemslib      DSSE envelopes verified with an ed25519 key
# Prints the venv's python; progress goes to stderr. Works on a fresh
# machine (Debian's python3-venv installed when `-m venv` is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

pins=(
  "spdx-tools==0.8.5"
  "cyclonedx-python-lib[json-validation]==11.12.0"
  "securesystemslib[crypto]==1.6.0"
)

python=${STRATA_SUPPLY_PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 9))' || {
  echo "supply-validators-up: $python is not a Python >= 3.9 (set STRATA_SUPPLY_PYTHON)" >&2
  exit 1
}
python=$("$python" -c 'import sys; print(sys.executable)')
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
venv=${XDG_CACHE_HOME:-$HOME/.cache}/strata-test/supply-validators-py$pyver
stamp="$venv/.strata-installed"
want="$python ${pins[*]}"

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "supply-validators-up: installing ${pins[*]} into $venv" >&2
  if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    echo "installing: python3-venv" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
  fi
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${pins[@]}" >&2
  echo "$want" >"$stamp"
fi

[ -x "$venv/bin/pyspdxtools" ] || { echo "supply-validators-up: $venv/bin/pyspdxtools missing" >&2; exit 1; }
echo "$venv/bin/python"
