#!/usr/bin/env python3
"""Compare Strata against ninja on the same synthetic, layered build graph.

The graph has N targets spread over L layers. Every target owns a folder
src/tNNNNN/ with F small text files; a target in layer k > 0 also depends on
1 to 3 targets of layer k-1 (seeded RNG, so runs are reproducible). Every
target does the same cheap work in both tools,

    cat <its sources> <its dependencies' out.txt> | cksum > out.txt

so the timings measure the engines, not the commands.

Phases timed (wall clock) for each tool:
  cold        fresh Strata store / no ninja-out, .ninja_log, .ninja_deps
  no-op       run again with nothing changed
  one-change  a line appended to one source file of a middle-layer target

Standard library only (Python 3.11). See benches/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STRATA = REPO_ROOT / "target" / "release" / "strata"
PHASES = ("cold", "no-op", "one-change")
TOOLS = ("strata", "ninja")

# Strata prints e.g. "12 executed, 3 cached, 0 failed in 0.42 s".
STRATA_SUMMARY = re.compile(
    r"(\d+)\s+executed,\s*(\d+)\s+cached,\s*(\d+)\s+failed\s+in\s+([0-9.]+)\s*s"
)
# With stdout not a terminal, ninja prints one "[i/n] description" line per edge.
NINJA_EDGE_LINE = re.compile(r"^\[\d+/\d+\]", re.MULTILINE)


class BenchError(Exception):
    """A failure that should stop the benchmark with a clear message."""


# --------------------------------------------------------------------------
# Graph model and generation
# --------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    layer: int
    deps: list[str] = field(default_factory=list)


@dataclass
class Graph:
    targets: list[Target]
    files_per_target: int

    def by_name(self) -> dict[str, Target]:
        return {t.name: t for t in self.targets}

    def source_names(self) -> list[str]:
        """File names inside each target's folder (the same for all targets)."""
        width = max(2, len(str(self.files_per_target - 1)))
        return [f"f{j:0{width}d}.txt" for j in range(self.files_per_target)]


def target_name(index: int, count: int) -> str:
    # Five digits as in the contract (t00001); wider only if the graph needs it.
    width = max(5, len(str(count - 1)))
    return f"t{index:0{width}d}"


def layer_of(index: int, count: int, layers: int) -> int:
    # Contiguous, near-equal blocks: targets [0, N/L) are layer 0, and so on.
    return index * layers // count


def build_graph(count: int, layers: int, files: int, rng: random.Random) -> Graph:
    """Lay out `count` targets in `layers` layers and pick each one's deps."""
    by_layer: list[list[str]] = [[] for _ in range(layers)]
    targets: list[Target] = []
    for i in range(count):
        t = Target(target_name(i, count), layer_of(i, count, layers))
        if t.layer > 0:
            previous = by_layer[t.layer - 1]
            how_many = rng.randint(1, min(3, len(previous)))
            # Sorted so both generated files list deps in the same, stable order.
            t.deps = sorted(rng.sample(previous, how_many))
        by_layer[t.layer].append(t.name)
        targets.append(t)
    return Graph(targets, files)


def dependents_closure(graph: Graph, root: str) -> set[str]:
    """`root` plus every target that depends on it, directly or not.

    That is exactly what must re-run when one of root's sources changes: each
    out.txt is a checksum, so every downstream output changes too.
    """
    reverse: dict[str, list[str]] = {t.name: [] for t in graph.targets}
    for t in graph.targets:
        for d in t.deps:
            reverse[d].append(t.name)
    seen, stack = {root}, [root]
    while stack:
        for parent in reverse[stack.pop()]:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def pick_changed_target(graph: Graph, layers: int, rng: random.Random) -> Target:
    """A seeded pick in the middle layer, preferring targets something depends on,
    so that the edit propagates downstream like a real one."""
    middle = layers // 2
    in_layer = [t for t in graph.targets if t.layer == middle]
    depended_on = {d for t in graph.targets for d in t.deps}
    with_dependents = [t for t in in_layer if t.name in depended_on]
    return rng.choice(with_dependents or in_layer)


def write_sources(graph: Graph, workspace: Path, rng: random.Random) -> None:
    # Random tokens make every file's content distinct, like real sources.
    names = graph.source_names()
    for t in graph.targets:
        folder = workspace / "src" / t.name
        folder.mkdir(parents=True)
        for fname in names:
            token = rng.getrandbits(64)
            (folder / fname).write_text(f"{t.name}/{fname} {token:016x}\n")


def strata_cmd(t: Target) -> str:
    inputs = [f"src/{t.name}/*.txt"] + [f"$DEPS/{d}/out.txt" for d in t.deps]
    return f"cat {' '.join(inputs)} | cksum > $OUT/out.txt"


def write_build_yaml(graph: Graph, workspace: Path) -> None:
    """Write the Strata BUILD.yaml (fixed contract format)."""
    lines = ["targets:"]
    for t in graph.targets:
        lines.append(f"  {t.name}:")
        lines.append("    rule: run")
        lines.append(f'    srcs: ["src/{t.name}/*.txt"]')
        if t.deps:
            lines.append(f"    deps: [{', '.join(t.deps)}]")
        # A JSON string of ASCII text is also a valid YAML double-quoted scalar.
        lines.append(f"    cmd: {json.dumps(strata_cmd(t))}")
        lines.append("    outs: [out.txt]")
    (workspace / "BUILD.yaml").write_text("\n".join(lines) + "\n")


def write_build_ninja(graph: Graph, workspace: Path) -> None:
    """Write build.ninja: one edge per target, same inputs as in BUILD.yaml."""
    names = graph.source_names()
    lines = [
        "# Generated by benches/ninja_compare.py; mirrors BUILD.yaml.",
        "rule cksum",
        "  command = cat $in | cksum > $out",
        "  description = CKSUM $out",
        "",
    ]
    for t in graph.targets:
        srcs = [f"src/{t.name}/{n}" for n in names]
        deps = [f"ninja-out/{d}/out.txt" for d in t.deps]
        # Ninja creates the output's parent directory itself.
        lines.append(f"build ninja-out/{t.name}/out.txt: cksum {' '.join(srcs + deps)}")
    lines.append("")
    (workspace / "build.ninja").write_text("\n".join(lines))


# --------------------------------------------------------------------------
# Running the tools
# --------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    # strata: "executed" from its summary line; ninja: edges it ran.
    executed: int | None
    log: Path
    # Peak resident set of the tool's process, in KiB (see run_timed).
    peak_rss_kib: int | None = None


@dataclass
class Timed:
    seconds: float
    text: str
    peak_rss_kib: int


# Starts one tool and reports its wall time and peak RSS, from a process of
# its own. The peak RSS wait4(2) reports for a child is the largest of the
# child and what it waited for, and includes the memory the child had before
# it exec'd: the parent's, for a child of fork or vfork. A child of this
# script would count this script's (a 100,000-target graph in Python is
# large); a child of this small interpreter (-S -I, no site imports) counts
# its ~5 MiB (`rss_floor_mib` in the reports: lower figures read as at most
# that). Output: "exit-code seconds peak-rss-KiB" in the file named first.
SPAWNER = """
import os, signal, sys, time
result, argv = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execv(argv[0], argv)
    except OSError as e:
        os.write(2, f"cannot start {argv[0]}: {e}\\n".encode())
        os._exit(127)
# Ctrl-C reaches the tool too (same process group): wait for it to end.
signal.signal(signal.SIGINT, signal.SIG_IGN)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
with open(result, "w") as f:
    f.write(f"{os.waitstatus_to_exitcode(status)} {seconds} {usage.ru_maxrss}")
"""


def run_timed(argv: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> Timed:
    """Run argv in cwd, output to `log`; return wall seconds, output text and
    the peak RSS of the tool's process (see SPAWNER).

    Raises BenchError with the log's tail if the exit code is not 0.
    """
    result = log.with_name(log.name + ".rusage")
    # Searched here: a PATH search in the spawner's child would grow the
    # memory it hands to the tool.
    program = shutil.which(argv[0])
    if program is None:
        raise BenchError(f"could not start {argv[0]}: not found")
    spawner = [sys.executable, "-S", "-I", "-c", SPAWNER, str(result), program] + argv[1:]
    with open(log, "wb") as out:
        try:
            proc = subprocess.Popen(spawner, cwd=cwd, stdout=out,
                                    stderr=subprocess.STDOUT, env=env)
        except OSError as e:
            raise BenchError(f"could not start {sys.executable}: {e}") from e
        try:
            proc.wait()
        except KeyboardInterrupt:
            proc.wait()
            raise
    text = log.read_text(errors="replace")
    try:
        code, seconds, rss = result.read_text().split()
        result.unlink()
    except (OSError, ValueError):
        code, seconds, rss = str(proc.returncode), "nan", "0"
    if int(code) != 0:
        tail = "\n".join(text.splitlines()[-20:])
        raise BenchError(
            f"`{' '.join(argv)}` exited with code {code} (log: {log})\n"
            f"--- last lines ---\n{tail}"
        )
    # ru_maxrss is in KiB on Linux.
    return Timed(float(seconds), text, int(rss))


def rss_floor_kib(folder: Path) -> int:
    """The peak RSS run_timed reports for /bin/true: what it reports for any
    tool that uses less (the spawner's own memory, copied by fork)."""
    return run_timed(["true"], folder, folder / "rss-floor.log").peak_rss_kib


def parse_strata_executed(text: str) -> int | None:
    # The last summary line wins, in case progress lines look similar.
    matches = STRATA_SUMMARY.findall(text)
    return int(matches[-1][0]) if matches else None


def run_strata(strata: Path, jobs: int, store: Path, workspace: Path, log: Path,
               extra: list[str] | None = None, env: dict[str, str] | None = None) -> Run:
    argv = [str(strata), "build", "-j", str(jobs), "--store", str(store)] + (extra or [])
    t = run_timed(argv, workspace, log, env)
    return Run(t.seconds, parse_strata_executed(t.text), log, t.peak_rss_kib)


def run_ninja(ninja: str, jobs: int, workspace: Path, log: Path) -> Run:
    t = run_timed([ninja, "-j", str(jobs)], workspace, log)
    return Run(t.seconds, len(NINJA_EDGE_LINE.findall(t.text)), log, t.peak_rss_kib)


def last_isolation(store: Path) -> str | None:
    """`isolation` of the newest build record in the store: `sandbox`, or
    `unsandboxed: <reason>`. None if there is no record."""
    records = sorted((store / "meta" / "records").glob("*/*.json"), key=lambda p: p.name)
    if not records:
        return None
    return json.loads(records[-1].read_text()).get("isolation")


def trace_phases(trace: Path) -> dict[str, float]:
    """Seconds spent in each build phase (`load`, `key`, `execute`,
    `materialize`, `record`) of a `strata build --trace` file."""
    events = json.loads(trace.read_text())["traceEvents"]
    return {e["name"]: e["dur"] / 1e6 for e in events
            if e.get("cat") == "phase" and e.get("ph") == "X"}


def reset_strata(store: Path, workspace: Path) -> None:
    # A cold Strata build starts from a store directory that does not exist,
    # and (as on a fresh checkout) no out/ left by an earlier run.
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(workspace / "out", ignore_errors=True)


def reset_ninja(workspace: Path) -> None:
    # Without outputs and without its log/deps files ninja rebuilds everything.
    shutil.rmtree(workspace / "ninja-out", ignore_errors=True)
    for name in (".ninja_log", ".ninja_deps"):
        (workspace / name).unlink(missing_ok=True)


def touch_source(workspace: Path, graph: Graph, target: Target) -> Path:
    """Append a line to the first source file of `target` (content + mtime change)."""
    path = workspace / "src" / target.name / graph.source_names()[0]
    with open(path, "a") as f:
        f.write("edited by ninja_compare\n")
    return path


# --------------------------------------------------------------------------
# Setup helpers
# --------------------------------------------------------------------------


def find_ninja(install: bool) -> str:
    ninja = shutil.which("ninja")
    if ninja:
        return ninja
    if not install:
        raise BenchError(
            "`ninja` not found on PATH. Install it with\n"
            "  apt-get update && apt-get install -y ninja-build\n"
            "or rerun with --install-ninja (runs those two commands)."
        )
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "ninja-build"]):
        log(f"running: {' '.join(argv)}")
        if subprocess.run(argv).returncode != 0:
            raise BenchError(f"`{' '.join(argv)}` failed; install ninja-build by hand")
    ninja = shutil.which("ninja")
    if not ninja:
        raise BenchError("ninja-build installed but `ninja` still not on PATH")
    return ninja


def check_strata(path: Path) -> Path:
    if not path.is_file() or not os.access(path, os.X_OK):
        raise BenchError(
            f"Strata binary not found or not executable: {path}\n"
            "Build it with `cargo build --release` in the repo root, pass --strata PATH,\n"
            "or run only ninja with --only ninja."
        )
    return path


def make_base_dir(keep: str | None) -> Path:
    """Directory holding workspace/, store/ and logs/."""
    if keep is None:
        return Path(tempfile.mkdtemp(prefix="strata-ninja-"))
    base = Path(keep).resolve()
    if base.exists() and any(base.iterdir()):
        raise BenchError(f"--keep directory {base} exists and is not empty")
    base.mkdir(parents=True, exist_ok=True)
    return base


def clean_up(base: Path, keep_logs: bool) -> None:
    """Remove the temporary directory; warnings point at logs, so keep those then."""
    if not keep_logs:
        shutil.rmtree(base, ignore_errors=True)
        return
    for name in ("workspace", "store"):
        shutil.rmtree(base / name, ignore_errors=True)
    log(f"warnings raised: logs kept in {base}")


def log(msg: str) -> None:
    # Progress goes to stderr so that --json output on stdout stays clean.
    print(f"[ninja_compare] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Benchmark driver and reporting
# --------------------------------------------------------------------------


def find_tools(args: argparse.Namespace) -> tuple[Path | None, str | None]:
    """(strata binary, ninja binary); None for a tool left out with --only."""
    tools = [args.only] if args.only else list(TOOLS)
    strata = check_strata(Path(args.strata).resolve()) if "strata" in tools else None
    ninja = find_ninja(args.install_ninja) if "ninja" in tools else None
    return strata, ninja


def generate(args: argparse.Namespace, targets: int, workspace: Path) -> tuple[Graph, Target, int]:
    """Write the sources, BUILD.yaml and build.ninja of a `targets`-target graph.

    Returns the graph, the target whose source the one-change phase edits, and
    how many targets that edit must rebuild.
    """
    workspace.mkdir(parents=True)
    rng = random.Random(args.seed)
    graph = build_graph(targets, args.layers, args.files, rng)
    changed = pick_changed_target(graph, args.layers, rng)
    expected = len(dependents_closure(graph, changed.name))
    log(f"generating {targets} targets x {args.files} files in {workspace}")
    write_sources(graph, workspace, rng)
    write_build_yaml(graph, workspace)
    write_build_ninja(graph, workspace)
    return graph, changed, expected


class Tools:
    """Runs each tool's build in one workspace, logging to logs/<tool>-<name>.log."""

    def __init__(self, args, strata: Path | None, ninja: str | None, workspace: Path,
                 store: Path, logs: Path):
        self.args, self.strata, self.ninja = args, strata, ninja
        self.workspace, self.store, self.logs = workspace, store, logs
        self.names = [t for t, binary in zip(TOOLS, (strata, ninja)) if binary is not None]
        logs.mkdir(parents=True, exist_ok=True)

    def run(self, tool: str, name: str, extra: list[str] | None = None) -> Run:
        log(f"{tool}: {name} build")
        logfile = self.logs / f"{tool}-{name}.log"
        if tool == "strata":
            return run_strata(self.strata, self.args.jobs, self.store, self.workspace, logfile,
                              extra)
        return run_ninja(self.ninja, self.args.jobs, self.workspace, logfile)

    def reset(self) -> None:
        if "strata" in self.names:
            reset_strata(self.store, self.workspace)
        if "ninja" in self.names:
            reset_ninja(self.workspace)


def run_benchmark(args: argparse.Namespace, strata: Path | None, ninja: str | None,
                  base: Path) -> dict:
    workspace = base / "workspace"
    graph, changed, expected = generate(args, args.targets, workspace)
    tools = Tools(args, strata, ninja, workspace, base / "store", base / "logs")
    floor = rss_floor_kib(tools.logs)
    runs = []
    for number in range(1, args.runs + 1):
        runs.append(run_phases(tools, graph, changed, expected, number, args.runs))
    return report_dict(args, graph, changed, expected, runs, floor, base)


def run_phases(tools: Tools, graph: Graph, changed: Target, expected: int, number: int,
               of: int) -> dict:
    """One whole comparison (cold, no-op, one-change) from a cold start."""
    if of > 1:
        log(f"run {number} of {of}")

    def run(tool: str, phase: str) -> Run:
        # Logs of later runs get the run's number; the first keeps the plain name.
        return tools.run(tool, phase if number == 1 else f"{phase}-run{number}")

    # The tools alternate within each phase so that both see the same machine
    # load and the very same source edit.
    results: dict[str, dict[str, Run]] = {t: {} for t in tools.names}
    tools.reset()
    isolation = None
    for tool in tools.names:
        results[tool]["cold"] = run(tool, "cold")
        if tool == "strata":
            isolation = last_isolation(tools.store)
    for tool in tools.names:
        results[tool]["no-op"] = run(tool, "no-op")
    # Every run appends one more line to the same file: the same targets rebuild.
    edited = touch_source(tools.workspace, graph, changed)
    log(f"appended a line to {edited.relative_to(tools.workspace)} "
        f"(layer {changed.layer}; {expected} target(s) to rebuild incl. itself)")
    for tool in tools.names:
        results[tool]["one-change"] = run(tool, "one-change")

    warnings = sanity_warnings(results, len(graph.targets), expected)
    if "strata" in results and isolation != "sandbox":
        warnings.append(f"strata's steps did not run sandboxed (build record: {isolation})")
    return {"run": number, "isolation": isolation, "phases": phase_rows(results),
            "warnings": warnings}


def sanity_warnings(results: dict[str, dict[str, Run]], total: int, expected: int) -> list[str]:
    """Checks that each tool did the work the phase implies; warnings, not errors."""
    out: list[str] = []
    if "strata" in results:
        r = results["strata"]
        for phase, run in r.items():
            if run.executed is None:
                out.append(f"strata {phase}: no 'N executed, M cached, F failed in T s' "
                           f"summary found in {run.log}")
        change = r["one-change"].executed
        if change is not None and change < 1:
            out.append("strata one-change: summary reports 0 executed targets "
                       "after a source edit (change not detected?)")
        elif change is not None and change != expected:
            out.append(f"strata one-change: executed {change} targets, "
                       f"expected {expected} (the edited target and its dependents)")
        noop = r["no-op"].executed
        if noop:
            out.append(f"strata no-op: executed {noop} targets, expected 0")
        cold = r["cold"].executed
        if cold is not None and cold != total:
            out.append(f"strata cold: executed {cold} targets, expected {total}")
    if "ninja" in results:
        r = results["ninja"]
        if r["one-change"].executed < 1:
            out.append("ninja one-change: re-ran 0 edges after a source edit")
        elif r["one-change"].executed != expected:
            out.append(f"ninja one-change: re-ran {r['one-change'].executed} edges, "
                       f"expected {expected}")
        if r["no-op"].executed:
            out.append(f"ninja no-op: ran {r['no-op'].executed} edges, expected 0")
        if r["cold"].executed != total:
            out.append(f"ninja cold: ran {r['cold'].executed} edges, expected {total}")
    return out


def mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def phase_rows(results: dict[str, dict[str, Run]]) -> list[dict]:
    rows = []
    for phase in PHASES:
        row: dict = {"phase": phase}
        for tool in TOOLS:
            run = results.get(tool, {}).get(phase)
            row[f"{tool}_s"] = round(run.seconds, 4) if run else None
            row[f"{tool}_executed"] = run.executed if run else None
            row[f"{tool}_peak_rss_mib"] = mib(run.peak_rss_kib) if run else None
        row["ratio_strata_ninja"] = ratio(row["strata_s"], row["ninja_s"])
        rows.append(row)
    return rows


def report_dict(args, graph, changed, expected, runs, floor, base) -> dict:
    return {
        "targets": len(graph.targets),
        "source_files": len(graph.targets) * graph.files_per_target,
        "files_per_target": graph.files_per_target,
        "layers": args.layers,
        "seed": args.seed,
        "jobs": args.jobs,
        "changed_target": changed.name,
        "changed_layer": changed.layer,
        "expected_one_change_rebuilds": expected,
        "rss_floor_mib": mib(floor),
        "runs": runs,
        "warnings": [w for r in runs for w in r["warnings"]],
        "workspace": str(base) if args.keep else None,
    }


def num(v, fmt: str) -> str:
    # fmt is e.g. "9.3f"; a missing value is a right-aligned "-" of that width.
    width = re.match(r"\d*", fmt).group()
    return f"{'-':>{width or 1}}" if v is None else format(v, fmt)


def table(header: list[tuple[str, int]], rows: list[list[str]]) -> list[str]:
    """Rows of cells already formatted to their column's width."""
    lines = [" | ".join(f"{name:>{w}}" if i else f"{name:<{w}}"
                        for i, (name, w) in enumerate(header)),
             "-+-".join("-" * w for _, w in header)]
    lines += [" | ".join(cells) for cells in rows]
    return lines


def format_table(report: dict) -> str:
    lines = [
        f"{report['targets']} targets, {report['source_files']} source files "
        f"({report['files_per_target']}/target), {report['layers']} layers, "
        f"-j {report['jobs']}, seed {report['seed']}",
        f"one-change edits {report['changed_target']} (layer {report['changed_layer']}); "
        f"{report['expected_one_change_rebuilds']} target(s) must rebuild; "
        f"MiB: peak RSS of the tool's process (measured this way, /bin/true: "
        f"{report['rss_floor_mib']} MiB)",
    ]
    header = [("phase", 11), ("strata s", 9), ("ninja s", 9), ("strata/ninja", 12),
              ("strata MiB", 10), ("ninja MiB", 9), ("strata ran", 10), ("ninja ran", 9)]
    for run in report["runs"]:
        lines += ["", f"run {run['run']} of {len(report['runs'])}; "
                      f"strata's steps: {run['isolation'] or '-'}"]
        lines += table(header, [[
            f"{row['phase']:<11}", num(row["strata_s"], "9.3f"), num(row["ninja_s"], "9.3f"),
            num(row["ratio_strata_ninja"], "12.2f"), num(row["strata_peak_rss_mib"], "10.1f"),
            num(row["ninja_peak_rss_mib"], "9.1f"), num(row["strata_executed"], "10d"),
            num(row["ninja_executed"], "9d"),
        ] for row in run["phases"]])
    for w in report["warnings"]:
        lines.append(f"WARNING: {w}")
    if report["workspace"]:
        lines.append(f"workspace, store and logs kept in {report['workspace']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Scaling: load, no-op and RSS against the number of targets
# --------------------------------------------------------------------------


def run_scaling(args: argparse.Namespace, strata: Path | None, ninja: str | None,
                base: Path) -> dict:
    """For each size: generate, build cold once, then time no-op builds.

    Strata's no-op is run twice per round: plainly (wall time and peak RSS)
    and with --trace (its phase times, `load` among them), since writing the
    trace costs a little time itself.
    """
    rows: list[dict] = []
    warnings: list[str] = []
    base.joinpath("logs").mkdir()
    floor = rss_floor_kib(base / "logs")
    for size in args.scaling:
        folder = base / f"{size}-targets"
        workspace = folder / "workspace"
        started = time.perf_counter()
        graph, _, _ = generate(args, size, workspace)
        generate_s = time.perf_counter() - started
        tools = Tools(args, strata, ninja, workspace, folder / "store", folder / "logs")
        tools.reset()
        cold = {tool: tools.run(tool, "cold") for tool in tools.names}
        isolation = last_isolation(tools.store) if strata else None
        if strata and isolation != "sandbox":
            warnings.append(f"{size} targets: strata's steps did not run sandboxed "
                            f"(build record: {isolation})")
        for number in range(1, args.runs + 1):
            suffix = "" if number == 1 else f"-run{number}"
            noop = {tool: tools.run(tool, f"no-op{suffix}") for tool in tools.names}
            phases = {}
            if strata:
                trace = tools.logs / f"strata-no-op-trace{suffix}.json"
                traced = tools.run("strata", f"no-op-trace{suffix}", ["--trace", str(trace)])
                phases = trace_phases(trace)
                if traced.executed:
                    warnings.append(f"{size} targets: strata no-op executed {traced.executed}")
            for tool, r in noop.items():
                if r.executed:
                    warnings.append(f"{size} targets: {tool} no-op ran {r.executed} targets")
            rows.append(scaling_row(size, graph, number, generate_s, cold, noop, phases,
                                    isolation))
        if not args.keep:
            # 100,000 targets leave hundreds of thousands of files: free them now.
            shutil.rmtree(workspace, ignore_errors=True)
            shutil.rmtree(folder / "store", ignore_errors=True)
    return {"scaling": rows, "growth": growth(rows), "rss_floor_mib": mib(floor),
            "files_per_target": args.files,
            "layers": args.layers, "seed": args.seed, "jobs": args.jobs,
            "warnings": warnings, "workspace": str(base) if args.keep else None}


def scaling_row(size, graph, number, generate_s, cold, noop, phases, isolation) -> dict:
    def seconds(runs: dict[str, Run], tool: str) -> float | None:
        return round(runs[tool].seconds, 4) if tool in runs else None

    def rss(tool: str) -> int | None:
        return noop[tool].peak_rss_kib if tool in noop else None

    def per_target_us(s: float | None) -> float | None:
        return None if s is None else round(s / size * 1e6, 2)

    load = phases.get("load")
    return {
        "targets": size,
        "source_files": size * graph.files_per_target,
        "run": number,
        "generate_s": round(generate_s, 2),
        "strata_cold_s": seconds(cold, "strata"),
        "ninja_cold_s": seconds(cold, "ninja"),
        "strata_isolation": isolation,
        "strata_noop_s": seconds(noop, "strata"),
        "ninja_noop_s": seconds(noop, "ninja"),
        "ratio_noop_strata_ninja": ratio(seconds(noop, "strata"), seconds(noop, "ninja")),
        "strata_load_s": None if load is None else round(load, 4),
        "strata_phases_s": {k: round(v, 4) for k, v in phases.items()},
        "strata_noop_peak_rss_mib": mib(rss("strata")),
        "ninja_noop_peak_rss_mib": mib(rss("ninja")),
        "strata_noop_us_per_target": per_target_us(seconds(noop, "strata")),
        "strata_load_us_per_target": per_target_us(load),
        "strata_rss_kib_per_target": None if rss("strata") is None
        else round(rss("strata") / size, 2),
        "ninja_noop_us_per_target": per_target_us(seconds(noop, "ninja")),
    }


def growth(rows: list[dict]) -> list[dict]:
    """Between consecutive sizes: how much each cost grew against the targets.

    Uses each size's best run (lowest time or RSS): on a shared machine the
    minimum is the least disturbed. Linear growth gives a cost factor equal to
    the target factor; the RSS factor is lower while a fixed base dominates.
    """
    best: dict[int, dict[str, float]] = {}
    keys = ("strata_noop_s", "strata_load_s", "strata_noop_peak_rss_mib", "ninja_noop_s")
    for row in rows:
        b = best.setdefault(row["targets"], {})
        for k in keys:
            if row[k] is not None:
                b[k] = min(b.get(k, row[k]), row[k])
    sizes = sorted(best)
    out = []
    for small, large in zip(sizes, sizes[1:]):
        entry: dict = {"from": small, "to": large, "targets_x": round(large / small, 2)}
        for k in keys:
            a, b = best[small].get(k), best[large].get(k)
            entry[f"{k}_x"] = ratio(b, a)
            # Cost of each added target: the slope, free of the fixed part.
            if a is not None and b is not None:
                scale = 1024 if k.endswith("mib") else 1e6
                unit = "kib" if k.endswith("mib") else "us"
                entry[f"{k.removesuffix('_mib').removesuffix('_s')}_{unit}_per_added_target"] = \
                    round((b - a) * scale / (large - small), 2)
        out.append(entry)
    return out


def format_scaling(report: dict) -> str:
    lines = [f"scaling: {report['files_per_target']} files/target, {report['layers']} layers, "
             f"-j {report['jobs']}, seed {report['seed']}; no-op builds after one cold build; "
             f"RSS: the no-op's peak (/bin/true measures {report['rss_floor_mib']} MiB)", ""]
    header = [("targets", 8), ("run", 3), ("cold s", 8), ("no-op s", 8), ("load s", 7),
              ("RSS MiB", 7), ("ninja cold", 10), ("ninja no-op", 11), ("no-op ratio", 11),
              ("no-op us/t", 10), ("load us/t", 9), ("RSS KiB/t", 9)]
    lines += table(header, [[
        f"{r['targets']:<8d}", num(r["run"], "3d"), num(r["strata_cold_s"], "8.2f"),
        num(r["strata_noop_s"], "8.3f"), num(r["strata_load_s"], "7.3f"),
        num(r["strata_noop_peak_rss_mib"], "7.1f"), num(r["ninja_cold_s"], "10.2f"),
        num(r["ninja_noop_s"], "11.3f"), num(r["ratio_noop_strata_ninja"], "11.2f"),
        num(r["strata_noop_us_per_target"], "10.1f"), num(r["strata_load_us_per_target"], "9.1f"),
        num(r["strata_rss_kib_per_target"], "9.2f"),
    ] for r in report["scaling"]])
    for g in report["growth"]:
        factors = [f"{label} x{g[key]:.2f}" for label, key in (
            ("strata no-op", "strata_noop_s_x"), ("load", "strata_load_s_x"),
            ("RSS", "strata_noop_peak_rss_mib_x"), ("ninja no-op", "ninja_noop_s_x"))
            if g[key] is not None]
        slopes = [f"{label} {g[key]:.{digits}f} {unit}" for label, key, unit, digits in (
            ("strata no-op", "strata_noop_us_per_added_target", "us", 1),
            ("load", "strata_load_us_per_added_target", "us", 1),
            ("RSS", "strata_noop_peak_rss_kib_per_added_target", "KiB", 2),
            ("ninja no-op", "ninja_noop_us_per_added_target", "us", 1)) if key in g]
        lines.append(f"{g['from']} -> {g['to']} targets (x{g['targets_x']:g}), best runs: "
                     f"{', '.join(factors)}; per added target: {', '.join(slopes)}")
    for w in report["warnings"]:
        lines.append(f"WARNING: {w}")
    if report["workspace"]:
        lines.append(f"workspaces, stores and logs kept in {report['workspace']}")
    return "\n".join(lines)


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 10000,100000, got {text!r}")
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive target counts")
    return sorted(set(sizes))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", type=int, default=10000, help="number of targets (default 10000)")
    p.add_argument("--files", type=int, default=10, help="source files per target (default 10)")
    p.add_argument("--layers", type=int, default=10, help="number of layers (default 10)")
    p.add_argument("--seed", type=int, default=0, help="RNG seed for deps and contents (default 0)")
    p.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1,
                   help="parallel jobs for both tools (default: number of CPUs)")
    p.add_argument("--runs", type=int, default=1,
                   help="repeat the whole comparison (cold, no-op, one-change) N times, "
                        "printing every run; with --scaling, the no-op builds (default 1)")
    p.add_argument("--scaling", metavar="N,N,...", type=parse_sizes,
                   help="instead of the comparison: for each size, one cold build, then "
                        "strata's load and no-op time and peak RSS, and ninja's no-op")
    p.add_argument("--strata", metavar="PATH", default=str(DEFAULT_STRATA),
                   help="Strata binary (default: target/release/strata in the repo)")
    p.add_argument("--keep", metavar="DIR",
                   help="generate in DIR (new or empty) and keep it, with store and logs")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--only", choices=TOOLS, help="run one tool only (for debugging)")
    p.add_argument("--install-ninja", action="store_true",
                   help="if ninja is missing, apt-get install ninja-build")
    args = p.parse_args(argv)
    for name in ("targets", "files", "layers", "jobs", "runs"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if args.layers > min(args.scaling or [args.targets]):
        p.error("--layers cannot exceed the number of targets (every layer needs a target)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = None
    try:
        # Tools first: a missing binary should not leave a half-made workspace.
        strata, ninja = find_tools(args)
        base = make_base_dir(args.keep)
        if args.scaling:
            report = run_scaling(args, strata, ninja, base)
        else:
            report = run_benchmark(args, strata, ninja, base)
    except BenchError as e:
        print(f"ninja_compare: error: {e}", file=sys.stderr)
        if base is not None:
            # Kept on purpose: the logs explain the failure.
            print(f"ninja_compare: workspace and logs left in {base}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ninja_compare: interrupted", file=sys.stderr)
        if base is not None:
            print(f"ninja_compare: workspace left in {base}", file=sys.stderr)
        return 130
    if not args.keep:
        clean_up(base, keep_logs=bool(report["warnings"]))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_scaling(report) if args.scaling else format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
