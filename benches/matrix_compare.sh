#!/usr/bin/env bash
# One invocation building two architectures against two builds, side by
# side, on examples/image given an `arch` variable (the greeter compiled
# per architecture, its .deb marked with it; the unpacked source shared):
#
#   matrix      strata build --matrix arch=amd64,arm64          (one graph)
#   sequential  strata build --var arch=amd64; then arch=arm64  (one store)
#   parallel    both of those at once, as Packer's --parallel   (one store)
#
# Each round starts from an empty store and output folder; a no-op round
# follows each cold one. Both configurations compile with the host's `cc`
# (the bench measures the matrix, not a cross compiler), so it needs no
# emulator and works offline. Prints medians and the steps each way ran.
#
# usage: benches/matrix_compare.sh [ROUNDS]    (STRATA=path, default release)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
strata=$(realpath "${STRATA:-target/release/strata}")
jobs=${JOBS:-2}
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

cp -a examples/image "$work/ws"
rm -rf "$work/ws/out"
python3 - "$work/ws/BUILD.yaml" <<'EOF'
import sys
path = sys.argv[1]
s = open(path).read()
s = s.replace('vars:\n', 'vars:\n  arch: amd64\n', 1)
s = s.replace('targets:\n', 'matrix:\n  arch: [amd64, arm64]\ntargets:\n', 1)
s = s.replace('cc -O2 -o $OUT/greeter', 'cc -O2 -DGREETER_ARCH=${arch} -o $OUT/greeter', 1)
s = s.replace('Architecture: amd64', 'Architecture: "${arch}"', 1)
assert s.count('${arch}') == 2, s
open(path, 'w').write(s)
EOF

now() { date +%s%N; }
# Runs strata in the workspace with store $1; the JSON summary goes to $2.
run() {
  local store=$1 json=$2
  shift 2
  (cd "$work/ws" && STRATA_STORE="$store" "$strata" build --json -j "$jobs" "$@" >"$json" 2>/dev/null)
}
executed() { python3 -c 'import json,sys; print(sum(json.load(open(f))["executed"] for f in sys.argv[1:]))' "$@"; }
fresh() { chmod -R u+w "$work/s" "$work/ws/out"* 2>/dev/null || true; rm -rf "$work/s" "$work/ws/out"*; }

declare -A cold noop steps
for ((i = 0; i < rounds; i++)); do
  for way in matrix sequential parallel; do
    fresh
    t0=$(now)
    case $way in
      matrix) run "$work/s" "$work/a.json" --matrix arch=amd64,arm64 ;;
      sequential)
        run "$work/s" "$work/a.json" --var arch=amd64 --out-dir out-amd64
        run "$work/s" "$work/b.json" --var arch=arm64 --out-dir out-arm64
        ;;
      parallel)
        run "$work/s" "$work/a.json" --var arch=amd64 --out-dir out-amd64 &
        run "$work/s" "$work/b.json" --var arch=arm64 --out-dir out-arm64 &
        wait
        ;;
    esac
    t1=$(now)
    if [[ $way == matrix ]]; then steps[$way]=$(executed "$work/a.json"); else steps[$way]=$(executed "$work/a.json" "$work/b.json"); fi
    case $way in
      matrix) run "$work/s" "$work/a.json" --matrix arch=amd64,arm64 ;;
      sequential)
        run "$work/s" "$work/a.json" --var arch=amd64 --out-dir out-amd64
        run "$work/s" "$work/b.json" --var arch=arm64 --out-dir out-arm64
        ;;
      parallel)
        run "$work/s" "$work/a.json" --var arch=amd64 --out-dir out-amd64 &
        run "$work/s" "$work/b.json" --var arch=arm64 --out-dir out-arm64 &
        wait
        ;;
    esac
    t2=$(now)
    cold[$way]+="$(((t1 - t0) / 1000000)) "
    noop[$way]+="$(((t2 - t1) / 1000000)) "
  done
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "examples/image, two architectures, $rounds rounds, -j $jobs, $(nproc) cores, $(date -u +%Y-%m-%d)"
printf '%-11s %10s %10s %14s\n' way "cold (ms)" "no-op (ms)" "steps executed"
for way in matrix sequential parallel; do
  printf '%-11s %10s %10s %14s\n' "$way" "$(median <<<"${cold[$way]}")" "$(median <<<"${noop[$way]}")" "${steps[$way]}"
done
