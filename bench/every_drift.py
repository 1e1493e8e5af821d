"""Drift of `--every 1s` over a minute: each firing's start time (recorded by the toy with
`date +%s.%N`) against the 1 s grid that fits the firings best.

    .venv/bin/python bench/every_drift.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import tempfile
import time

from supervisor.client import Client, close_instance, init


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60)
    n = ap.parse_args().seconds
    rundir = tempfile.mkdtemp(prefix="sve-", dir="/tmp")
    os.environ["SUPERVISOR_RUNTIME_DIR"] = rundir
    log = os.path.join(rundir, "starts")
    try:
        init(0)
        with Client(0) as c:
            c.create_service("/bin/sh", ["-c", f"date +%s.%N >> {log}"], name="tick",
                             every=1.0, output="null")
        time.sleep(n + 0.5)
        close_instance(0)
        with open(log) as f:
            starts = [float(x) for x in f.read().split()][:n]
    finally:
        shutil.rmtree(rundir, ignore_errors=True)
    base = min(s - k for k, s in enumerate(starts))  # the grid, as best seen
    late = [(s - (base + k)) * 1000 for k, s in enumerate(starts)]
    print(f"--every 1s, {len(starts)} firings: lateness vs the grid (ms): "
          f"median {statistics.median(late):.2f}, max {max(late):.2f}, "
          f"last {late[-1]:.2f} (drift over the run), per-firing gaps "
          f"{min(b - a for a, b in itertools.pairwise(starts)):.4f}-"
          f"{max(b - a for a, b in itertools.pairwise(starts)):.4f} s")


if __name__ == "__main__":
    main()
