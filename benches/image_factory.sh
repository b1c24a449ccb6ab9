#!/usr/bin/env bash
# examples/image-factory (base-tools -> dependencies -> application ->
# runtime) built by Strata and, as the multi-stage Dockerfile
# benches/image_factory/Dockerfile, by `docker build` (legacy builder), side
# by side on the same Docker Engine and the same edits:
#
#   cold        Strata: a store holding base-tools only; Docker: --no-cache
#   no-op       nothing changed
#   code        envelope.c's version string (application and runtime change)
#   deps        deps.txt edited, resolved set unchanged (a comment, the order,
#               a library another one requires): Strata re-runs `dependencies`,
#               gets the same tree and stops there
#   sequence    EDITS (default 20) typical edits in a fixed order: code,
#               comment-only code, dependency-file comment/order/pin,
#               a library added and removed again
#
# Setup, not timed in the table: Strata builds base-tools-image (Debian
# packages fetched, extracted, a rootfs, /tmp) and Docker loads it.
#
# Needs a Docker Engine (scripts/docker-up.sh), network access to
# deb.debian.org for the packages (once per store), python3, and a release
# build of strata (STRATA=path, else $CARGO_TARGET_DIR or target/release).
# Prints the table on stdout, progress on stderr; KEEP=1 keeps the folder.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
strata=${STRATA:-${CARGO_TARGET_DIR:-$root/target}/release/strata}
edits=${EDITS:-20}
[ -x "$strata" ] || { echo "no strata binary at $strata (cargo build --release, or STRATA=...)" >&2; exit 2; }
export DOCKER_BUILDKIT=0
tag=image-factory/envelope:docker-bench
work=$(mktemp -d)
ws=$work/ws
store=$work/store
records=$work/records.tsv
docker_images=$work/docker-images
strata_trees=$work/strata-trees
: >"$records" >"$docker_images" >"$strata_trees"
cleanup() {
  # Only what this run made: the images of its docker builds, its tags,
  # and the engine images Strata imported for the trees it built.
  sort -u "$docker_images" | xargs -r docker rmi -f >/dev/null 2>&1 || true
  docker rmi "$tag" image-factory/base-tools:1 image-factory/envelope:1 >/dev/null 2>&1 || true
  sort -u "$strata_trees" | sed 's/^/strata-tree:/' | xargs -r docker rmi >/dev/null 2>&1 || true
  if [ -n "${KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
log() { echo "$*" >&2; }

mkdir -p "$ws"
cp -a "$root/examples/image-factory/." "$ws/"
rm -rf "$ws/out"
cp "$root/benches/image_factory/Dockerfile" "$ws/Dockerfile"
printf '%s\n' out Dockerfile .dockerignore BUILD.yaml packages.yaml lock.sh README.md >"$ws/.dockerignore"
cd "$ws"

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# One Strata build: appends "strata<TAB>phase<TAB>seconds<TAB>executed targets".
strata_build() {
  local phase=$1 t0 t1
  t0=$(now)
  "$strata" build --store "$store" --json >"$work/strata.json" 2>"$work/strata.err" ||
    { cat "$work/strata.err" >&2; exit 1; }
  t1=$(now)
  python3 - "$work/strata.json" "$phase" "$(secs "$t0" "$t1")" "$strata_trees" >>"$records" <<'PY'
import json, sys
doc, phase, secs, trees = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4]
t = doc["targets"]
pipeline = ["dependencies", "application", "runtime", "runtime-image"]
for name, v in t.items():
    assert name in pipeline or v["status"] == "cached", f"{name} ran in phase {phase}"
ran = [n for n in pipeline if t[n]["status"] == "executed"]
# Application steps run FROM the dependencies tree, imported into the engine.
with open(trees, "a") as f:
    f.write(t["dependencies"]["output"].split(":", 1)[1] + "\n")
print(f"strata\t{phase}\t{secs}\t{','.join(ran)}")
PY
}

# One docker build: appends "docker<TAB>phase<TAB>seconds<TAB>steps that ran".
docker_build() {
  local phase=$1 t0 t1
  shift
  t0=$(now)
  docker build "$@" -t "$tag" . >"$work/docker.log" 2>&1 || { cat "$work/docker.log" >&2; exit 1; }
  t1=$(now)
  grep -o -- '---> [0-9a-f]\{12\}$' "$work/docker.log" | cut -c6- >>"$docker_images" || true
  awk -v phase="$phase" -v secs="$(secs "$t0" "$t1")" '
    /^Step [0-9]+\/[0-9]+ : / {
      instr = $0; sub(/^Step [0-9]+\/[0-9]+ : /, "", instr)
      if (instr ~ /^FROM /) { n = split(instr, w, " "); stage = n >= 4 ? w[4] : w[2]; pending = 0; next }
      split(instr, w, " "); cur = stage ":" w[1]; total++; pending = 1; next
    }
    pending && /^ ---> Using cache/ { pending = 0; next }
    pending && /^ ---> / { ran = ran (ran ? "," : "") cur; pending = 0; next }
    END { printf "docker\t%s\t%s\t%s\t%d\n", phase, secs, ran, total }
  ' "$work/docker.log" >>"$records"
}

both() {
  local phase=$1
  shift
  strata_build "$phase"
  docker_build "$phase" "$@"
  log "$(tail -2 "$records" | cut -f1-4 | tr '\t' ' ' | paste -sd'|' | sed 's/|/   |   /')"
}

# Edits. Each changes the shared sources both tools build from.
n=0
edit() {
  n=$((n + 1))
  case $1 in
  code) sed -i "s/^#define ENVELOPE_VERSION .*/#define ENVELOPE_VERSION \"1.0.$n\"/" src/envelope.c ;;
  comment) echo "/* edit $n: a comment only */" >>src/envelope.c ;;
  deps-comment) echo "# edit $n: a comment only" >>deps.txt ;;
  deps-order) tac deps.txt >"$work/d" && cat "$work/d" >deps.txt ;;
  deps-pin)
    if grep -q '^crc32$' deps.txt; then sed -i 's/^crc32$/crc32 1.0.3/' deps.txt
    else sed -i 's/^crc32 1.0.3$/crc32/' deps.txt; fi ;;
  deps-required) echo "strbuf  # base64 requires it already" >>deps.txt ;;
  deps-add) echo "hex" >>deps.txt ;;
  deps-remove) sed -i '/^hex$/d' deps.txt ;;
  *) echo "unknown edit $1" >&2; exit 2 ;;
  esac
}

log "setup: strata builds base-tools-image (Debian packages, rootfs, /tmp); docker loads it"
t0=$(now)
"$strata" build --store "$store" --json base-tools-image >"$work/setup.json" 2>"$work/strata.err" ||
  { cat "$work/strata.err" >&2; exit 1; }
t1=$(now)
setup_strata=$(secs "$t0" "$t1")
t0=$(now)
tar -C out/base-tools-image -c . | docker load >/dev/null
t1=$(now)
setup_docker=$(secs "$t0" "$t1")
# The base-tools tree as an engine image: Strata imports it when the first
# dependencies step runs. Remove it if an earlier run left it, so that import
# is part of Strata's cold build (docker's load above is not in its cold).
base_tree=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["targets"]["base-tools"]["output"].split(":")[1])' "$work/setup.json")
if docker image inspect "strata-tree:$base_tree" >/dev/null 2>&1; then
  docker rmi "strata-tree:$base_tree" >/dev/null 2>&1 || log "note: strata-tree:$base_tree is in use; Strata's cold build will not import it"
else
  echo "$base_tree" >>"$strata_trees"
fi

log "cold"
both cold --no-cache
log "no-op"
both no-op
log "code change"
edit code
both code
log "dependency-file change, same resolved set"
edit deps-comment
edit deps-order
edit deps-required
both deps

sequence=(code comment deps-comment code deps-order comment code deps-pin code deps-add
  comment code deps-remove deps-required code comment deps-pin code deps-comment code)
for i in $(seq 0 $((edits - 1))); do
  kind=${sequence[$((i % ${#sequence[@]}))]}
  log "sequence $((i + 1))/$edits: $kind"
  edit "$kind"
  both "seq:$kind"
done

# The two runtime images do the same thing.
tar -C out/runtime-image -c . | docker load >/dev/null
printf 'image factory\n' >"$work/payload"
a=$(docker run --rm -i --network none image-factory/envelope:1 seal <"$work/payload")
b=$(docker run --rm -i --network none "$tag" seal <"$work/payload")
[ "$a" = "$b" ] || { printf 'the two runtime images differ in behaviour:\n%s\n---\n%s\n' "$a" "$b" >&2; exit 1; }

python3 - "$records" "$setup_strata" "$setup_docker" "$(nproc)" "$(docker version --format '{{.Server.Version}}')" "$edits" <<'PY'
import sys
records, setup_s, setup_d, cores, dver, edits = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(records)]
strata = [r for r in rows if r[0] == "strata"]
docker = [r for r in rows if r[0] == "docker"]
STRATA_STEPS = 4   # dependencies, application, runtime, runtime-image
docker_steps = int(docker[0][4])

def ran(r):
    return [x for x in r[3].split(",") if x]

def show_strata(r):
    return ", ".join(ran(r)) or "nothing"

def show_docker(r):
    steps = ran(r)
    if not steps:
        return "nothing"
    by = {}
    for s in steps:
        stage, instr = s.split(":")
        by.setdefault(stage, []).append(instr)
    return "; ".join(f"{st} {'+'.join(i)}" for st, i in by.items())

print(f"Machine: {cores} cores, Docker {dver} (legacy builder). Setup, not in the table: "
      f"strata base-tools {float(setup_s):.1f} s, docker load {float(setup_d):.1f} s.\n")
print("| phase | strata | docker build | strata / docker | strata re-ran | docker re-ran |")
print("| --- | --- | --- | --- | --- | --- |")
names = {"cold": "cold", "no-op": "no-op", "code": "code change (application)",
         "deps": "deps.txt changed, same resolved set"}
for s, d in zip(strata, docker):
    if s[1] not in names:
        continue
    ts, td = float(s[2]), float(d[2])
    print(f"| {names[s[1]]} | {ts:.2f} s | {td:.2f} s | {ts / td:.2f} | {show_strata(s)} | {show_docker(d)} |")
seq_s = [r for r in strata if r[1].startswith("seq:")]
seq_d = [r for r in docker if r[1].startswith("seq:")]
ts = sum(float(r[2]) for r in seq_s)
td = sum(float(r[2]) for r in seq_d)
# Stage level, the same unit for both: a stage is a hit when none of its
# steps ran (base-tools, built in the setup, is never counted).
STAGES = ["dependencies", "application", "runtime"]
def stage_of_strata(step):
    return "runtime" if step == "runtime-image" else step
def stage_hits(seq, stage_of):
    ran_stages = sum(len({stage_of(x) for x in ran(r)}) for r in seq)
    return 1 - ran_stages / (len(STAGES) * len(seq))
hit_s = stage_hits(seq_s, stage_of_strata)
hit_d = stage_hits(seq_d, lambda x: x.split(":")[0])
step_s = 1 - sum(len(ran(r)) for r in seq_s) / (STRATA_STEPS * len(seq_s))
step_d = 1 - sum(len(ran(r)) for r in seq_d) / (docker_steps * len(seq_d))
runs_s = sum(1 for r in seq_s for x in ran(r) if x in ("dependencies", "application"))
runs_d = sum(1 for r in seq_d for x in ran(r) if x.endswith(":RUN"))
n = len(STAGES) * len(seq_s)
print(f"| {edits} typical edits, in all | {ts:.1f} s | {td:.1f} s | {ts / td:.2f} | "
      f"stages cached {hit_s:.0%} of {n}; {runs_s} commands run | "
      f"stages cached {hit_d:.0%} of {n}; {runs_d} RUN steps run |")
print()
print(f"Cache hits per step over the {edits} edits: strata {step_s:.0%} of "
      f"{STRATA_STEPS * len(seq_s)} (dependencies, application, runtime, runtime-image), "
      f"docker {step_d:.0%} of {docker_steps * len(seq_d)} ({docker_steps} instructions after FROM).")
print()
print("The edits, in order (what each tool re-ran):\n")
print("| # | edit | strata | | docker build | |")
print("| --- | --- | --- | --- | --- | --- |")
for i, (s, d) in enumerate(zip(seq_s, seq_d), 1):
    print(f"| {i} | {s[1][4:]} | {float(s[2]):.2f} s | {show_strata(s)} | {float(d[2]):.2f} s | {show_docker(d)} |")
PY
