#!/usr/bin/env bash
# Fuzzes Strata with cargo-fuzz (libFuzzer): each target for a bounded time.
# Not part of CI (scripts/test.sh does not call it).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
#   SECONDS_PER_TARGET  default 60
#   TARGET              default: every target (cargo fuzz list)
#
# Environment:
#   SANITIZER   address (default) or none; if the address build fails the
#               script falls back to none and says so
#   FUZZ_ARGS   extra libFuzzer flags for every target; e.g. to go on past
#               a known crash: FUZZ_ARGS="-fork=1 -ignore_crashes=1"
#
# The toolchain is stable Rust: cargo-fuzz needs nightly-only flags, which
# RUSTC_BOOTSTRAP=1 unlocks. Builds are release with debug assertions and
# overflow checks on (-O -a), so an arithmetic overflow is a finding too.
#
# Corpora: fuzz/seeds/<target>/ (checked in, read only) and
# fuzz/corpus/<target>/ (grown by the fuzzer, git-ignored). A crashing
# input lands in fuzz/artifacts/<target>/; replay it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz -O -a TARGET FILE
# (add -s none if the run was without a sanitizer).
#
# Prints, per target, the executions and whether it crashed; exits 1 if any
# target crashed (or failed to run), 0 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || ((seconds < 1)); then
  echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2
  exit 2
fi

export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "installing cargo-fuzz (a few minutes)..."
  cargo install --locked cargo-fuzz || cargo install cargo-fuzz || {
    echo "cannot install cargo-fuzz" >&2
    exit 2
  }
fi

fuzz=(cargo fuzz)
flags=(--fuzz-dir fuzz -O -a)

if (($# > 0)); then
  targets=("$@")
else
  mapfile -t targets < <("${fuzz[@]}" list --fuzz-dir fuzz)
fi

sanitizer="${SANITIZER:-address}"
echo "building ${targets[*]} (sanitizer: $sanitizer)..."
if ! "${fuzz[@]}" build "${flags[@]}" -s "$sanitizer"; then
  if [[ "$sanitizer" == none ]]; then
    echo "build failed" >&2
    exit 2
  fi
  echo "the $sanitizer build failed; retrying without a sanitizer" >&2
  sanitizer=none
  "${fuzz[@]}" build "${flags[@]}" -s none || {
    echo "build failed" >&2
    exit 2
  }
fi

# Built once, run directly: `cargo fuzz run` would rebuild before every
# target whenever a source changed meanwhile.
host="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="fuzz/target/$host/release"

# Per-target libFuzzer options: the longest input, and a dictionary.
declare -A max_len=([load_build_yaml]=8192 [extract_archive]=65536 [store_tree]=8192)
declare -A dict=([load_build_yaml]=build_yaml [extract_archive]=archive [store_tree]=store)

# Every process's scratch folder (stores, a workspace) goes under here.
scratch="$(mktemp -d "${TMPDIR:-/tmp}/strata-fuzz.XXXXXX")"
if [[ -d /dev/shm && -w /dev/shm ]]; then
  rm -rf "$scratch"
  scratch="$(mktemp -d /dev/shm/strata-fuzz.XXXXXX)"
fi
logs="$(mktemp -d "${TMPDIR:-/tmp}/strata-fuzz-logs.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
export STRATA_FUZZ_TMPDIR="$scratch"

status=0
summary=()
for t in "${targets[@]}"; do
  corpus="fuzz/corpus/$t"
  seeds="fuzz/seeds/$t"
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  opts=(-artifact_prefix="fuzz/artifacts/$t/" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1)
  [[ -n "${max_len[$t]:-}" ]] && opts+=(-max_len="${max_len[$t]}")
  [[ -n "${dict[$t]:-}" && -f "fuzz/dict/${dict[$t]}.dict" ]] && opts+=(-dict="fuzz/dict/${dict[$t]}.dict")
  # shellcheck disable=SC2206
  opts+=(${FUZZ_ARGS:-})
  dirs=("$corpus")
  [[ -d "$seeds" ]] && dirs+=("$seeds")
  log="$logs/$t.log"
  echo "== $t: ${seconds}s (log: $log)"
  start=$(date +%s)
  "$bin_dir/$t" "${opts[@]}" "${dirs[@]}" >"$log" 2>&1
  rc=$?
  took=$(($(date +%s) - start))
  runs=$(grep -a 'stat::number_of_executed_units' "$log" | tail -1 | awk '{print $2}')
  # Fork mode (-fork=N) prints no final stats, only "#N: cov: ..." lines.
  [[ -z "$runs" ]] && runs=$(grep -aoE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
  runs="${runs:-?}"
  mapfile -t artifacts < <(grep -aoE 'Test unit written to [^ ]+' "$log" | sed 's/Test unit written to //' | sort -u)
  if ((rc == 0)) && ((${#artifacts[@]} == 0)); then
    result="no crash"
  else
    status=1
    # Distinct panic places (or sanitizer reports), not every repeat.
    reasons=$(grep -aoE "panicked at [^ ]+|ERROR: AddressSanitizer: [a-z-]+|ERROR: libFuzzer: (timeout|out-of-memory|fuzz target exited)[^ ]*" "$log" | sort | uniq -c | sed 's/^ */x/' | paste -sd ';' -)
    result="CRASHED (exit $rc), ${#artifacts[@]} input(s): ${artifacts[*]:-none written}; ${reasons:-see the log}"
    grep -a -m1 -A3 "panicked at" "$log" || tail -40 "$log"
  fi
  line="$t: $runs runs in ${took}s, corpus $(find "$corpus" -type f | wc -l) files: $result"
  echo "$line"
  summary+=("$line")
done

echo
echo "== summary (sanitizer: $sanitizer, ${seconds}s per target; logs in $logs)"
printf '%s\n' "${summary[@]}"
exit "$status"
