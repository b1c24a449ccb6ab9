#!/usr/bin/env bash
# Which ready step starts first, side by side: first ready, first started
# (how Strata scheduled before, STRATA_READY_ORDER=fifo) against the longest
# remaining path first (the default), at -j2.
#
# The graph: a chain `a-compile` (sleep 5) -> `a-link` (sleep 2) and four
# independent 1 s steps `t1`..`t4`. The chain is the critical path: 7 s at
# best. Started last, it makes the build 5 s + 2 s after two rounds of 1 s
# steps, 9 s. The names put the chain last in the graph's order, as in the
# case that was measured at 9.1 s (issue 15); with other names the old order
# may happen to start it first.
#
# Three builds, each with --no-cache on a store of its own (the last one
# reuses the store of the second, whose build record it reads):
#   fifo                  the old order
#   critical path         no build record yet: the remaining path is the depth
#   critical path, timed  after one build: the recorded durations
# Steps run unsandboxed (only sleep and echo), so the figures are the
# schedule, not the sandbox's start-up. Usage: benches/critical_path.sh
# [rounds] (default 3); STRATA=path/to/strata (default target/release/strata,
# else target/debug/strata).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
strata=${STRATA:-$root/target/release/strata}
[ -x "$strata" ] || strata=$root/target/debug/strata
rounds=${1:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

step() { printf '  %s:\n    rule: run\n    deps: [%s]\n    cmd: "sleep %s; echo > $OUT/o"\n    outs: [o]\n' "$1" "$2" "$3"; }
{
  echo "targets:"
  step a-compile "" 5
  step a-link a-compile 2
  for t in t1 t2 t3 t4; do step "$t" "" 1; done
} >BUILD.yaml

export STRATA_SANDBOX=off
timed() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>"$work/err" || { cat "$work/err"; exit 1; }
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}

echo "strata: $strata; $(nproc) cores; $(date -u +%Y-%m-%d)"
printf '%-6s %10s %16s %24s\n' round fifo "critical path" "critical path, timed"
for r in $(seq 1 "$rounds"); do
  rm -rf "$work/s1" "$work/s2"
  fifo=$(STRATA_READY_ORDER=fifo timed "$strata" build -j2 --no-cache --store "$work/s1")
  depth=$(timed "$strata" build -j2 --no-cache --store "$work/s2")
  timed_=$(timed "$strata" build -j2 --no-cache --store "$work/s2")
  printf '%-6s %9.2fs %15.2fs %23.2fs\n' "$r" "$fifo" "$depth" "$timed_"
done
