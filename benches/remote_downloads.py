#!/usr/bin/env python3
"""`strata build --remote-executor`: bytes downloaded, with outputs fetched
only where needed, against a binary that fetches every output.

The 200-target graph of `remote_execution.py` (20 chains of 10 `run`
steps), where each step also leaves a 64 KiB file `big` beside its
one-line `o` (both declared): a later step reads only `o`. Each binary
given with `--strata` builds, in turn, with a fresh store and a fresh
nonce (so the service executes every step):

  ends    only the 20 chain ends requested (out/ needs 20 of 200 outputs)
  all     every target requested (out/ needs all 200)
  clone   `ends` again at another path, the service's action cache warm

against BuildGrid (scripts/buildgrid-serve.sh, PostgreSQL) and one
`strata worker -j 2` on this machine. Prints `--json`'s
remote_execution.downloaded_bytes and the wall time of each build.

usage: STRATA_BUILDGRID_BIN=$(scripts/buildgrid-up.sh) \
       benches/remote_downloads.py --strata before=/path/strata --strata after=target/release/strata
Standard library only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from remote_execution import REPO, build, free_port, start_workers, stop  # noqa: E402

CHAINS, LENGTH, BIG = 20, 10, 64 * 1024


def write_graph(ws: Path, nonce: str) -> list[str]:
    """Writes the graph; returns the chain ends."""
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
                f"    cmd: cat {src} | (cat; echo {nonce} {name}) | sha256sum > $OUT/o"
                f" && yes '{nonce} {name}' | head -c {BIG} > $OUT/big",
                "    outs: [o, big]",
            ]
    ws.mkdir(parents=True, exist_ok=True)
    (ws / "BUILD.yaml").write_text("\n".join(lines) + "\n")
    return [f"t{c:02d}_{LENGTH - 1:02d}" for c in range(CHAINS)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--strata", action="append", required=True, help="NAME=PATH")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    binaries = [(n, str(Path(p).resolve())) for n, p in (s.split("=", 1) for s in args.strata)]
    tmp = Path(tempfile.mkdtemp(prefix="strata-downloads-bench-"))
    tmp.chmod(0o711)
    port = free_port()
    service = subprocess.Popen(
        [str(REPO / "scripts" / "buildgrid-serve.sh"), "--dir", str(tmp / "service"),
         "--port", str(port), "--instance", "bench"],
        stdout=open(tmp / "service.log", "w"), stderr=subprocess.STDOUT,
        start_new_session=True)
    url = f"grpc://127.0.0.1:{port}/bench"
    try:
        deadline = time.monotonic() + 180
        while "serving" not in (tmp / "service.log").read_text():
            if time.monotonic() > deadline or service.poll() is not None:
                raise SystemExit((tmp / "service.log").read_text())
            time.sleep(0.5)
        time.sleep(3)
        for r in range(args.rounds):
            for name, strata in binaries:
                aux = tmp / f"aux-{r}-{name}"
                aux.mkdir()
                workers = start_workers(strata, url, aux, [2])
                try:
                    for scenario in ("ends", "all"):
                        nonce = f"{r}-{name}-{scenario}-{time.time_ns()}"
                        ws = tmp / f"ws-{r}-{name}-{scenario}"
                        ends = write_graph(ws, nonce)
                        targets = ends if scenario == "ends" else []
                        t, doc = build(strata, ws, aux / f"store-{scenario}",
                                       ["--remote-executor", url, *targets])
                        e = doc["remote_execution"]
                        print(f"round {r}: {name:8} {scenario:6} {t:6.2f} s  remotely {e['executed']}, "
                              f"cached {e['cached']}, downloaded {e['downloaded_bytes']} B", flush=True)
                        if scenario == "ends":
                            clone = tmp / f"clone-{r}-{name}" / "elsewhere"
                            clone.mkdir(parents=True)
                            shutil.copy(ws / "BUILD.yaml", clone / "BUILD.yaml")
                            t, doc = build(strata, clone, aux / "store-clone",
                                           ["--remote-executor", url, *ends])
                            e = doc["remote_execution"]
                            print(f"round {r}: {name:8} {'clone':6} {t:6.2f} s  remotely {e['executed']}, "
                                  f"cached {e['cached']}, downloaded {e['downloaded_bytes']} B", flush=True)
                finally:
                    stop(workers)
    finally:
        try:
            os.killpg(service.pid, signal.SIGTERM)
            service.wait(timeout=60)
        except ProcessLookupError:
            pass
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
