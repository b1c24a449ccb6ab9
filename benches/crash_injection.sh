#!/usr/bin/env bash
# Crash injection at length: tests/crash.rs with 500 SIGKILLs (release build).
#
#   benches/crash_injection.sh            # 500 kills, seed from the clock
#   KILLS=100 SEED=42 benches/crash_injection.sh
#
# Prints the test's summary line (kills, how many landed during a build,
# failures, seed) and every failure; exits non-zero if any kill failed.
set -uo pipefail
cd "$(dirname "$0")/.."

kills=${KILLS:-${STRATA_CRASH_KILLS:-500}}
seed=${SEED:-${STRATA_CRASH_SEED:-$(date +%s%N)}}
log=$(mktemp "${TMPDIR:-/tmp}/strata-crash-XXXXXX.log")

echo "crash injection: $kills kills, seed $seed (log: $log)"
STRATA_CRASH_KILLS=$kills STRATA_CRASH_SEED=$seed \
  cargo test --release --test crash -- --nocapture --test-threads 1 \
  builds_killed_at_random_moments >"$log" 2>&1
status=$?

grep -E '^crash injection FAILURE' "$log" | cut -c1-2000
summary=$(grep -E '^crash injection: [0-9]+ kills' "$log" | tail -n 1)
if [ -z "$summary" ]; then
  echo "no summary line: the test did not run to the end (exit $status); see $log" >&2
  tail -n 40 "$log" >&2
  exit 1
fi
echo "$summary"
failures=$(sed -E 's/.* ([0-9]+) failures.*/\1/' <<<"$summary")
echo "kills: $kills  failures: $failures"
exit "$status"
