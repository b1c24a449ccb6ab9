#!/usr/bin/env python3
"""`strata build --remote-executor`: what sending steps to BuildGrid costs.

A 200-target graph (20 chains of 10 `run` steps; each step hashes its
number and its dependency's output: `cat dep | (cat; echo N) | sha256sum`)
is built, in turn, each round:

  local        no executor, -j 2
  one worker   --remote-executor, one `strata worker -j 2`, build -j 2
  two workers  --remote-executor, two `strata worker -j 1`, build -j 2
  clone        a copy of the workspace at another path with a fresh store,
               --remote-executor: every step from the service's action cache

BuildGrid (scripts/buildgrid-serve.sh, PostgreSQL) and the workers run on
the same machine as the client, so this measures overhead, not speed-up.
Each build has a fresh store; each round's commands carry a nonce so the
service's action cache answers only the clone. Prints wall times, the
upload and download volumes (`--json`'s remote_execution), one line per
build, then the medians.

usage: STRATA_BUILDGRID_BIN=$(scripts/buildgrid-up.sh) \
       benches/remote_execution.py [--strata target/release/strata] [--rounds 3]
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHAINS, LENGTH = 20, 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_graph(ws: Path, nonce: str) -> None:
    lines = ["targets:"]
    for c in range(CHAINS):
        for i in range(LENGTH):
            name = f"t{c:02d}_{i:02d}"
            lines += [f"  {name}:", "    rule: run"]
            if i:
                dep = f"t{c:02d}_{i - 1:02d}"
                lines += [f"    deps: [{dep}]"]
                src = f"$DEPS/{dep}/o"
            else:
                src = "/dev/null"
            lines += [
                f"    cmd: cat {src} | (cat; echo {nonce} {name}) | sha256sum > $OUT/o",
                "    outs: [o]",
            ]
    ws.mkdir(parents=True, exist_ok=True)
    (ws / "BUILD.yaml").write_text("\n".join(lines) + "\n")


def build(strata: str, ws: Path, store: Path, extra: list[str]) -> tuple[float, dict]:
    t0 = time.monotonic()
    out = subprocess.run(
        [strata, "build", "--json", "-j", "2", "--store", str(store), *extra],
        cwd=ws, capture_output=True, text=True,
    )
    elapsed = time.monotonic() - t0
    if out.returncode != 0:
        raise SystemExit(f"build failed in {ws}:\n{out.stderr}")
    return elapsed, json.loads(out.stdout)


def start_workers(strata: str, url: str, tmp: Path, shape: list[int]) -> list[subprocess.Popen]:
    workers = []
    for n, jobs in enumerate(shape):
        log = open(tmp / f"worker{n}.log", "w")
        workers.append(subprocess.Popen(
            [strata, "worker", "--server", url, "-j", str(jobs),
             "--cache-dir", str(tmp / f"worker{n}")],
            stdout=subprocess.DEVNULL, stderr=log))
    deadline = time.monotonic() + 60
    for n in range(len(shape)):
        while "serving" not in (tmp / f"worker{n}.log").read_text():
            if time.monotonic() > deadline:
                raise SystemExit("a worker did not start")
            time.sleep(0.1)
    return workers


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--strata", default=str(REPO / "target" / "release" / "strata"))
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    args.strata = str(Path(args.strata).resolve())
    tmp = Path(tempfile.mkdtemp(prefix="strata-remote-bench-"))
    tmp.chmod(0o711)  # as root, PostgreSQL runs as `postgres` and must reach its folder
    port = free_port()
    service = subprocess.Popen(
        [str(REPO / "scripts" / "buildgrid-serve.sh"), "--dir", str(tmp / "service"),
         "--port", str(port), "--instance", "bench"],
        stdout=open(tmp / "service.log", "w"), stderr=subprocess.STDOUT,
        start_new_session=True)
    url = f"grpc://127.0.0.1:{port}/bench"
    times: dict[str, list[float]] = {}
    try:
        deadline = time.monotonic() + 180
        while "serving" not in (tmp / "service.log").read_text():
            if time.monotonic() > deadline or service.poll() is not None:
                raise SystemExit((tmp / "service.log").read_text())
            time.sleep(0.5)
        time.sleep(3)  # BuildGrid answers a moment after the script says so
        for r in range(args.rounds):
            for name, shape in (("local", None), ("one worker -j2", [2]), ("two workers -j1", [1, 1])):
                nonce = f"{r}-{name}-{time.time_ns()}"
                ws = tmp / f"ws-{r}-{len(times.get(name, []))}-{name.replace(' ', '_')}"
                write_graph(ws, nonce)
                aux = tmp / f"{ws.name}-aux"
                aux.mkdir()
                workers = start_workers(args.strata, url, aux, shape) if shape else []
                try:
                    extra = ["--remote-executor", url] if shape else []
                    t, doc = build(args.strata, ws, aux / "store", extra)
                    e = doc.get("remote_execution", {})
                    print(f"round {r}: {name:16} {t:6.2f} s  executed {doc['executed']}, "
                          f"remotely {e.get('executed', 0)}, uploaded {e.get('uploaded_blobs', 0)} blobs "
                          f"{e.get('uploaded_bytes', 0)} B, downloaded {e.get('downloaded_bytes', 0)} B",
                          flush=True)
                    times.setdefault(name, []).append(t)
                    if shape and shape == [2]:
                        clone = tmp / f"clone-{r}" / "elsewhere"
                        clone.mkdir(parents=True)
                        shutil.copy(ws / "BUILD.yaml", clone / "BUILD.yaml")
                        t, doc = build(args.strata, clone, tmp / f"clone-{r}" / "store", extra)
                        e = doc["remote_execution"]
                        print(f"round {r}: {'clone (AC hits)':16} {t:6.2f} s  from the service's cache "
                              f"{e['cached']}, remotely {e['executed']}, uploaded {e['uploaded_bytes']} B, "
                              f"downloaded {e['downloaded_bytes']} B", flush=True)
                        times.setdefault("clone (AC hits)", []).append(t)
                finally:
                    stop(workers)
        print("medians:", ", ".join(f"{k} {statistics.median(v):.2f} s" for k, v in times.items()))
    finally:
        try:
            os.killpg(service.pid, signal.SIGTERM)
            service.wait(timeout=60)
        except ProcessLookupError:
            pass
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
