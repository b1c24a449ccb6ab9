#!/usr/bin/env python3
"""Per-step overhead of Strata's sandbox: N independent steps that run `true`.

Each step does nothing, so the cost of a cold build is the engine's per-step
work (sandbox, staging, hashing the empty output, cache entries) plus
starting one process. Measured side by side, cold, at each -j:

  strata, sandbox   N `run` targets with `argv: [true, <name>]`, fresh store
  strata, no sandbox  the same with STRATA_SANDBOX=off
  ninja             N edges whose command is `true <name>` (ninja runs it with
                    /bin/sh -c), no .ninja_log
  spawn             N x posix_spawn of `/bin/sh -c "true <name>"`, J at a time,
                    from this script: the floor of starting a process

The target's name is an argument `true` ignores: without it every step would
have the same key and one execution would serve them all.

Standard library only (Python 3.11). See benches/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# The comparison's helpers: running a tool (wall time, peak RSS), finding
# ninja and Strata, reading build records and traces.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ninja_compare import (  # noqa: E402
    DEFAULT_STRATA,
    BenchError,
    check_strata,
    find_ninja,
    last_isolation,
    parse_strata_executed,
    run_timed,
)

MODES = ("strata-sandbox", "strata-nosandbox", "ninja", "spawn")
SANDBOX_OFF = {"STRATA_SANDBOX": "off"}


def log(msg: str) -> None:
    print(f"[sandbox_overhead] {msg}", file=sys.stderr, flush=True)


def step_name(i: int) -> str:
    return f"t{i:05d}"


def write_workspace(workspace: Path, steps: int, shell: bool) -> None:
    """BUILD.yaml and build.ninja with `steps` independent do-nothing steps."""
    workspace.mkdir(parents=True)
    lines = ["targets:"]
    for i in range(steps):
        name = step_name(i)
        lines.append(f"  {name}:")
        lines.append("    rule: run")
        # No srcs, no outs: the emptiest step Strata accepts.
        lines.append(f'    cmd: "true {name}"' if shell else f'    argv: ["true", "{name}"]')
    (workspace / "BUILD.yaml").write_text("\n".join(lines) + "\n")
    edges = ["rule true", "  command = true $out", ""]
    # The outputs are never created, which ninja does not check.
    edges += [f"build {step_name(i)}: true" for i in range(steps)]
    (workspace / "build.ninja").write_text("\n".join(edges) + "\n")


@dataclass
class Measured:
    seconds: float
    executed: int | None
    peak_rss_kib: int | None = None
    # Strata only: mean duration of an executed action in the trace (the
    # step's own latency, without load, keys and the record), and isolation.
    action_ms: float | None = None
    isolation: str | None = None


def run_strata(strata: Path, workspace: Path, store: Path, logs: Path, jobs: int,
               sandbox: bool, tag: str) -> Measured:
    # Cold: no store (no cache, no stat cache, no record), no out/.
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(workspace / "out", ignore_errors=True)
    trace = logs / f"{tag}.trace.json"
    argv = [str(strata), "build", "-j", str(jobs), "--store", str(store), "--trace", str(trace)]
    env = None if sandbox else {**os.environ, **SANDBOX_OFF}
    t = run_timed(argv, workspace, logs / f"{tag}.log", env)
    isolation = last_isolation(store)
    want = "sandbox" if sandbox else "unsandboxed"
    if isolation is None or not isolation.startswith(want):
        raise BenchError(f"{tag}: expected steps to run {want}, the build record says "
                         f"{isolation!r} (log: {logs / f'{tag}.log'})")
    return Measured(t.seconds, parse_strata_executed(t.text), t.peak_rss_kib,
                    mean_action_ms(trace), isolation)


def mean_action_ms(trace: Path) -> float | None:
    events = json.loads(trace.read_text())["traceEvents"]
    spans = [e["dur"] for e in events
             if e.get("cat") == "action" and e.get("args", {}).get("status") == "executed"]
    return sum(spans) / len(spans) / 1000 if spans else None


def run_ninja(ninja: str, workspace: Path, logs: Path, jobs: int, tag: str) -> Measured:
    (workspace / ".ninja_log").unlink(missing_ok=True)
    (workspace / ".ninja_deps").unlink(missing_ok=True)
    t = run_timed([ninja, "-j", str(jobs)], workspace, logs / f"{tag}.log")
    edges = sum(1 for line in t.text.splitlines() if line.startswith("["))
    return Measured(t.seconds, edges, t.peak_rss_kib)


def run_spawn(steps: int, jobs: int) -> Measured:
    """`steps` x `/bin/sh -c "true tNNNNN"`, at most `jobs` at once, as ninja
    starts its commands (posix_spawn)."""
    env = {"PATH": "/usr/bin:/bin"}
    running: set[int] = set()
    start = time.perf_counter()
    for i in range(steps):
        if len(running) >= jobs:
            running.discard(wait_ok())
        running.add(os.posix_spawn("/bin/sh", ["sh", "-c", f"true {step_name(i)}"], env))
    while running:
        running.discard(wait_ok())
    return Measured(time.perf_counter() - start, steps)


def wait_ok() -> int:
    pid, status = os.wait()
    if os.waitstatus_to_exitcode(status) != 0:
        raise BenchError(f"`sh -c true` exited with status {status}")
    return pid


def measure(args, strata, ninja, workspace: Path, base: Path, jobs: int, number: int) -> dict:
    logs = base / "logs"
    row: dict = {"jobs": jobs, "run": number, "steps": args.steps}
    for mode in MODES:
        tag = f"{mode}-j{jobs}-run{number}"
        if mode == "ninja" and ninja is None:
            continue
        log(f"{mode}: {args.steps} steps, -j {jobs}")
        if mode == "strata-sandbox":
            m = run_strata(strata, workspace, base / "store", logs, jobs, True, tag)
        elif mode == "strata-nosandbox":
            m = run_strata(strata, workspace, base / "store", logs, jobs, False, tag)
        elif mode == "ninja":
            m = run_ninja(ninja, workspace, logs, jobs, tag)
        else:
            m = run_spawn(args.steps, jobs)
        if m.executed != args.steps:
            raise BenchError(f"{tag}: ran {m.executed} steps, expected {args.steps}")
        row[mode] = {
            "s": round(m.seconds, 4),
            "ms_per_step": round(m.seconds / args.steps * 1000, 3),
            "peak_rss_mib": None if m.peak_rss_kib is None else round(m.peak_rss_kib / 1024, 1),
            "action_ms": None if m.action_ms is None else round(m.action_ms, 3),
            "isolation": m.isolation,
        }
    per_step = {mode: row[mode]["ms_per_step"] for mode in MODES if mode in row}
    row["ratios"] = {
        f"{a}/{b}": round(per_step[a] / per_step[b], 2)
        for a in ("strata-sandbox", "strata-nosandbox")
        for b in ("ninja", "spawn") if b in per_step and per_step[b]
    }
    row["sandbox_ms_per_step_minus_nosandbox"] = round(
        per_step["strata-sandbox"] - per_step["strata-nosandbox"], 3)
    return row


def format_table(report: dict) -> str:
    lines = [
        f"{report['steps']} independent `true` steps ({report['step']}), cold, "
        f"{os.cpu_count()} CPUs; ms/step = wall time / steps; "
        "action ms = Strata's mean executed span in --trace",
        "",
        f"{'-j':>3} | {'run':>3} | {'mode':<16} | {'wall s':>8} | {'ms/step':>8} "
        f"| {'action ms':>9} | {'x ninja':>7} | {'x spawn':>7}",
        f"{'-' * 3}-+-{'-' * 3}-+-{'-' * 16}-+-{'-' * 8}-+-{'-' * 8}-+-{'-' * 9}-+-"
        f"{'-' * 7}-+-{'-' * 7}",
    ]
    for row in report["rows"]:
        for mode in MODES:
            if mode not in row:
                continue
            m = row[mode]
            action = "-" if m["action_ms"] is None else f"{m['action_ms']:.2f}"

            def x(base: str) -> str:
                r = row["ratios"].get(f"{mode}/{base}")
                return "-" if r is None else f"{r:.1f}"

            lines.append(
                f"{row['jobs']:>3} | {row['run']:>3} | {mode:<16} | {m['s']:>8.3f} | "
                f"{m['ms_per_step']:>8.2f} | {action:>9} | {x('ninja'):>7} | {x('spawn'):>7}")
        lines.append(f"{'':>3} | {'':>3} | sandbox's own ms/step (sandbox - no sandbox): "
                     f"{row['sandbox_ms_per_step_minus_nosandbox']:.2f}")
    return "\n".join(lines)


def parse_jobs(text: str) -> list[int]:
    try:
        jobs = [int(j) for j in text.split(",") if j.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected e.g. 1,2, got {text!r}")
    if not jobs or min(jobs) < 1:
        raise argparse.ArgumentTypeError("job counts must be at least 1")
    return jobs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cpus = os.cpu_count() or 1
    p.add_argument("--steps", type=int, default=500, help="number of steps (default 500)")
    p.add_argument("--jobs", "-j", type=parse_jobs, default=sorted({1, cpus}),
                   help=f"comma-separated -j values (default: 1,{cpus})")
    p.add_argument("--runs", type=int, default=1, help="repeat every measurement N times")
    p.add_argument("--shell", action="store_true",
                   help="Strata steps as `cmd: true NAME` (through /bin/sh, as ninja's) "
                        "instead of `argv: [true, NAME]`")
    p.add_argument("--strata", metavar="PATH", default=str(DEFAULT_STRATA),
                   help="Strata binary (default: target/release/strata in the repo)")
    p.add_argument("--no-ninja", action="store_true", help="leave ninja out")
    p.add_argument("--install-ninja", action="store_true",
                   help="if ninja is missing, apt-get install ninja-build")
    p.add_argument("--keep", metavar="DIR", help="work in DIR (new or empty) and keep it")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    if args.steps < 1 or args.runs < 1:
        p.error("--steps and --runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = None
    try:
        strata = check_strata(Path(args.strata).resolve())
        ninja = None if args.no_ninja else find_ninja(args.install_ninja)
        if args.keep:
            base = Path(args.keep).resolve()
            if base.exists() and any(base.iterdir()):
                raise BenchError(f"--keep directory {base} exists and is not empty")
            base.mkdir(parents=True, exist_ok=True)
        else:
            base = Path(tempfile.mkdtemp(prefix="strata-sandbox-"))
        (base / "logs").mkdir()
        workspace = base / "workspace"
        write_workspace(workspace, args.steps, args.shell)
        rows = [measure(args, strata, ninja, workspace, base, jobs, number)
                for number in range(1, args.runs + 1) for jobs in args.jobs]
    except BenchError as e:
        print(f"sandbox_overhead: error: {e}", file=sys.stderr)
        if base is not None:
            print(f"sandbox_overhead: logs left in {base}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sandbox_overhead: interrupted", file=sys.stderr)
        return 130
    report = {
        "steps": args.steps,
        "step": "cmd: true NAME" if args.shell else "argv: [true, NAME]",
        "cpus": os.cpu_count(),
        "rows": rows,
        "workspace": str(base) if args.keep else None,
    }
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
