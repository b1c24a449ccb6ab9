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


def run_timed(argv: list[str], cwd: Path, log: Path) -> tuple[float, str]:
    """Run argv in cwd, output to `log`; return (wall seconds, output text).

    Raises BenchError with the log's tail if the exit code is not 0.
    """
    with open(log, "wb") as out:
        start = time.perf_counter()
        try:
            proc = subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        except OSError as e:
            raise BenchError(f"could not start {argv[0]}: {e}") from e
        seconds = time.perf_counter() - start
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        tail = "\n".join(text.splitlines()[-20:])
        raise BenchError(
            f"`{' '.join(argv)}` exited with code {proc.returncode} (log: {log})\n"
            f"--- last lines ---\n{tail}"
        )
    return seconds, text


def parse_strata_executed(text: str) -> int | None:
    # The last summary line wins, in case progress lines look similar.
    matches = STRATA_SUMMARY.findall(text)
    return int(matches[-1][0]) if matches else None


def run_strata(strata: Path, jobs: int, store: Path, workspace: Path, log: Path) -> Run:
    argv = [str(strata), "build", "-j", str(jobs), "--store", str(store)]
    seconds, text = run_timed(argv, workspace, log)
    return Run(seconds, parse_strata_executed(text), log)


def run_ninja(ninja: str, jobs: int, workspace: Path, log: Path) -> Run:
    seconds, text = run_timed([ninja, "-j", str(jobs)], workspace, log)
    return Run(seconds, len(NINJA_EDGE_LINE.findall(text)), log)


def reset_strata(store: Path) -> None:
    # A cold Strata build starts from a store directory that does not exist.
    shutil.rmtree(store, ignore_errors=True)


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
    log(f"warnings raised: logs kept in {base / 'logs'}")


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


def run_benchmark(args: argparse.Namespace, strata: Path | None, ninja: str | None,
                  base: Path) -> dict:
    tools = [t for t, binary in zip(TOOLS, (strata, ninja)) if binary is not None]
    workspace, store, logs = base / "workspace", base / "store", base / "logs"
    workspace.mkdir()
    logs.mkdir()

    rng = random.Random(args.seed)
    graph = build_graph(args.targets, args.layers, args.files, rng)
    changed = pick_changed_target(graph, args.layers, rng)
    expected = len(dependents_closure(graph, changed.name))
    log(f"generating {args.targets} targets x {args.files} files in {workspace}")
    write_sources(graph, workspace, rng)
    write_build_yaml(graph, workspace)
    write_build_ninja(graph, workspace)

    def run(tool: str, phase: str) -> Run:
        log(f"{tool}: {phase} build")
        logfile = logs / f"{tool}-{phase}.log"
        if tool == "strata":
            return run_strata(strata, args.jobs, store, workspace, logfile)
        return run_ninja(ninja, args.jobs, workspace, logfile)

    # The tools alternate within each phase so that both see the same machine
    # load and the very same source edit.
    results: dict[str, dict[str, Run]] = {t: {} for t in tools}
    if "strata" in tools:
        reset_strata(store)
    if "ninja" in tools:
        reset_ninja(workspace)
    for tool in tools:
        results[tool]["cold"] = run(tool, "cold")
    for tool in tools:
        results[tool]["no-op"] = run(tool, "no-op")
    edited = touch_source(workspace, graph, changed)
    log(f"appended a line to {edited.relative_to(workspace)} "
        f"(layer {changed.layer}; {expected} target(s) to rebuild incl. itself)")
    for tool in tools:
        results[tool]["one-change"] = run(tool, "one-change")

    warnings = sanity_warnings(results, len(graph.targets), expected)
    return report_dict(args, graph, changed, expected, results, warnings, base)


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


def report_dict(args, graph, changed, expected, results, warnings, base) -> dict:
    phases = []
    for phase in PHASES:
        row: dict = {"phase": phase}
        for tool in TOOLS:
            run = results.get(tool, {}).get(phase)
            row[f"{tool}_s"] = round(run.seconds, 4) if run else None
            row[f"{tool}_executed"] = run.executed if run else None
        s, n = row["strata_s"], row["ninja_s"]
        row["ratio_strata_ninja"] = round(s / n, 3) if s is not None and n else None
        phases.append(row)
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
        "phases": phases,
        "warnings": warnings,
        "workspace": str(base) if args.keep else None,
    }


def format_table(report: dict) -> str:
    def num(v, fmt: str) -> str:
        # fmt is e.g. "9.3f"; a missing value is a right-aligned "-" of that width.
        width = int(re.match(r"\d+", fmt).group())
        return f"{'-':>{width}}" if v is None else format(v, fmt)

    lines = [
        f"{report['targets']} targets, {report['source_files']} source files "
        f"({report['files_per_target']}/target), {report['layers']} layers, "
        f"-j {report['jobs']}, seed {report['seed']}",
        f"one-change edits {report['changed_target']} (layer {report['changed_layer']}); "
        f"{report['expected_one_change_rebuilds']} target(s) must rebuild",
        "",
        f"{'phase':<11} | {'strata s':>9} | {'ninja s':>9} | {'strata/ninja':>12} "
        f"| {'strata ran':>10} | {'ninja ran':>9}",
        f"{'-' * 11}-+-{'-' * 9}-+-{'-' * 9}-+-{'-' * 12}-+-{'-' * 10}-+-{'-' * 9}",
    ]
    for row in report["phases"]:
        lines.append(
            f"{row['phase']:<11} | {num(row['strata_s'], '9.3f')} | "
            f"{num(row['ninja_s'], '9.3f')} | {num(row['ratio_strata_ninja'], '12.2f')} | "
            f"{num(row['strata_executed'], '10d')} | {num(row['ninja_executed'], '9d')}"
        )
    for w in report["warnings"]:
        lines.append(f"WARNING: {w}")
    if report["workspace"]:
        lines.append(f"workspace, store and logs kept in {report['workspace']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", type=int, default=10000, help="number of targets (default 10000)")
    p.add_argument("--files", type=int, default=10, help="source files per target (default 10)")
    p.add_argument("--layers", type=int, default=10, help="number of layers (default 10)")
    p.add_argument("--seed", type=int, default=0, help="RNG seed for deps and contents (default 0)")
    p.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1,
                   help="parallel jobs for both tools (default: number of CPUs)")
    p.add_argument("--strata", metavar="PATH", default=str(DEFAULT_STRATA),
                   help="Strata binary (default: target/release/strata in the repo)")
    p.add_argument("--keep", metavar="DIR",
                   help="generate in DIR (new or empty) and keep it, with store and logs")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--only", choices=TOOLS, help="run one tool only (for debugging)")
    p.add_argument("--install-ninja", action="store_true",
                   help="if ninja is missing, apt-get install ninja-build")
    args = p.parse_args(argv)
    for name in ("targets", "files", "layers", "jobs"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if args.layers > args.targets:
        p.error("--layers cannot exceed --targets (every layer needs a target)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = None
    try:
        # Tools first: a missing binary should not leave a half-made workspace.
        strata, ninja = find_tools(args)
        base = make_base_dir(args.keep)
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
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
