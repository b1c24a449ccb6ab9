#!/bin/sh
# Runs the incremental-vs-clean equivalence search (tests/equivalence.rs) for
# many rounds in a release build and prints its counts.
#
#   benches/equivalence.sh                       # 1000 rounds, a random seed
#   STRATA_EQUIV_ROUNDS=200 STRATA_EQUIV_SEED=7 benches/equivalence.sh
#
# A counter-example fails the test and prints its seed and round; replay it
# with STRATA_EQUIV_SEED=<seed> STRATA_EQUIV_ROUND=<round>.
set -eu
cd "$(dirname "$0")/.."

STRATA_EQUIV_ROUNDS="${STRATA_EQUIV_ROUNDS:-1000}"
export STRATA_EQUIV_ROUNDS

log=$(mktemp)
trap 'rm -f "$log"' EXIT

start=$(date +%s)
status=0
cargo test --release --test equivalence -- --nocapture 2>&1 | tee "$log" || status=1
# `tee` hides cargo's exit status: a failed test prints "test result: FAILED".
grep -q '^test result: ok' "$log" || status=1
end=$(date +%s)

echo
echo "== equivalence: $STRATA_EQUIV_ROUNDS rounds requested, $((end - start)) s wall time =="
grep '^equivalence:' "$log" || true
if [ "$status" -ne 0 ]; then
    echo "FAILED: see the counter-example above (seed and round to replay)"
fi
exit "$status"
