#!/usr/bin/env bash
# Early cutoff across a stage step, Strata vs Docker's layer chain.
#
# Two steps: the first reads one byte of an input file, the second is slow
# (sleep 5 stands for a compile). The input then changes in a byte the first
# step ignores. Strata re-runs step 1, sees the same tree and keeps step 2
# cached; Docker re-runs every layer after the changed COPY.
# Needs a Docker Engine (scripts/docker-up.sh) and a release build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
strata=${STRATA:-$root/target/release/strata}
work=$(mktemp -d)
trap 'rm -rf "$work"; docker rmi -f strata-bench/cutoff-base strata-bench/cutoff >/dev/null 2>&1 || true' EXIT
cd "$work"

# One tiny base image from host binaries, for both tools.
mkdir -p rootfs/bin rootfs/tmp
for t in sh head cp sleep; do cp "$(readlink -f /bin/$t)" rootfs/bin/$t; done
for lib in $(ldd /bin/sh /bin/head /bin/cp /bin/sleep | grep -o '/[^ ]*' | grep -v ':$' | sort -u); do
  mkdir -p "rootfs$(dirname "$lib")" && cp "$lib" "rootfs$lib"
done
tar -C rootfs -c . | docker import - strata-bench/cutoff-base >/dev/null

printf 'ab\n' >v.txt
cat >Dockerfile <<'DOCKERFILE'
FROM strata-bench/cutoff-base
COPY v.txt /v.txt
RUN head -c 1 /v.txt > /first
RUN sleep 5 && cp /first /second
DOCKERFILE
cat >BUILD.yaml <<'YAML'
targets:
  base:
    rule: image
    srcs: ["rootfs/**"]
    from: srcs:rootfs
  cutoff:
    rule: stage
    from: base
    steps:
      - srcs: [v.txt]
        cmd: head -c 1 /strata/work/v.txt > /first
      - cmd: sleep 5 && cp /first /second
YAML

timed() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>"$work/err" || { cat "$work/err"; exit 1; }; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
export DOCKER_BUILDKIT=0
store="$work/store"
echo "first build:   docker $(timed docker build -q -t strata-bench/cutoff .) s   strata $(timed "$strata" build --store "$store") s"
printf 'ac\n' >v.txt   # the second byte: step 1's output does not change
d=$(timed docker build -t strata-bench/cutoff .)
s=$(timed "$strata" build --store "$store")
printf 'ad\n' >v.txt   # once more, to see which steps each tool runs
docker build -t strata-bench/cutoff . >"$work/docker.log" 2>&1
"$strata" build --store "$store" --json >"$work/strata.json" 2>/dev/null
echo "after a change step 1 ignores: docker $d s   strata $s s"
echo "  docker steps re-run: $(grep -c -- '---> Running in' "$work/docker.log") of 3 (COPY, RUN, RUN; the RUNs run again)"
python3 - "$work/strata.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
ran = sorted(k for k, v in doc["targets"].items() if v["status"] == "executed")
print("  strata steps re-run:", ", ".join(ran) or "none", "(cutoff#1 only; the slow step is cached)")
PY
