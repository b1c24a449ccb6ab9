#!/usr/bin/env bash
# The crate layering ARCHITECTURE.md promises, checked from Cargo's own view
# of the dependency graph (normal dependencies: what a crate links).
set -euo pipefail
cd "$(dirname "$0")/.."

failed=0
fail() { echo "layering: $*" >&2; failed=1; }

# Crates that must link no outside-system client: the core knows no Docker,
# registry or network protocol.
network='^(bollard|reqwest|hyper|tonic) v'
for crate in strata-store strata-formats strata-supply strata-rules strata-load strata-exec strata-engine; do
  found=$(cargo tree -q --locked -p "$crate" -e normal --prefix none | sed "s/ (\*)//" | sort -u | grep -E "$network" || true)
  [[ -z $found ]] || fail "$crate links $(echo "$found" | tr '\n' ' ')"
done

# Nothing but the binary depends on the engine.
dependents=$(cargo tree -q --locked -i strata-engine -e normal --depth 1 --prefix none | tail -n +2 | sort -u)
[[ $dependents == "strata v"* && $(echo "$dependents" | wc -l) -eq 1 ]] \
  || fail "strata-engine is a dependency of: $(echo "$dependents" | tr '\n' ' ')"

# The only crate that knows YAML, the only one that talks to dockerd, the only
# one that speaks cache protocols.
only() { # only DEPENDENCY CRATE
  local users
  users=$(cargo tree -q --locked -i "$1" -e normal --depth 1 --prefix none | tail -n +2 | grep '^strata' | sort -u)
  [[ $users == "$2 v"* && $(echo "$users" | wc -l) -eq 1 ]] || fail "$1 is used by: $(echo "$users" | tr '\n' ' ') (only $2 may)"
}
only serde-saphyr strata-load
only bollard strata-docker
only tonic strata-remote

((failed == 0)) && echo "layering: ok"
exit "$failed"
