"""How fast an external kill -STOP / -CONT / -9 shows in service-status.

    .venv/bin/python bench/detect.py [--rounds N]

Starts a private instance, then for a created and for an opened process sends each signal
from outside and asks service-status in a tight loop until the status says so. Prints
median, p95 and max in milliseconds. (Querying costs ~0.1 ms a round trip, so the figure
includes up to that much of the client.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time

from supervisor.client import Client, close_instance, init


def _until(c: Client, name: str, status: str, limit: float = 5.0) -> float:
    start = time.perf_counter()
    while c.service_status(name)["status"] != status:
        if time.perf_counter() - start > limit:
            raise RuntimeError(f"{name} never showed {status}")
    return time.perf_counter() - start


def _measure(c: Client, name: str, pid: int, signo: int, status: str) -> float:
    start = time.perf_counter()
    os.kill(pid, signo)
    _until(c, name, status)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=50)
    rounds = ap.parse_args().rounds
    rundir = tempfile.mkdtemp(prefix="svb-", dir="/tmp")
    os.environ["SUPERVISOR_RUNTIME_DIR"] = rundir
    results: dict[str, list[float]] = {}
    try:
        init(0)
        with Client(0) as c:
            for r in range(rounds):
                created = c.create_service("/bin/sleep", ["600"], name=f"c{r}")
                stranger = subprocess.Popen(["sleep", "600"])
                c.open_service(stranger.pid, name=f"o{r}")
                for kind, name, pid, done in (("created", f"c{r}", created["pid"], "KILLED"),
                                              ("opened", f"o{r}", stranger.pid, "EXITED")):
                    for label, signo, status in (("STOP", signal.SIGSTOP, "STOPPED"),
                                                 ("CONT", signal.SIGCONT, "RUNNING"),
                                                 ("KILL", signal.SIGKILL, done)):
                        results.setdefault(f"{kind} {label}", []).append(
                            _measure(c, name, pid, signo, status))
                stranger.wait()
                c.supervisor_freelist([f"c{r}", f"o{r}"])
        close_instance(0)
    finally:
        shutil.rmtree(rundir, ignore_errors=True)
    print(f"detection latency, {rounds} rounds (ms):")
    print(f"{'change':<14} {'median':>8} {'p95':>8} {'max':>8}")
    for key, values in results.items():
        ms = sorted(v * 1000 for v in values)
        p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
        print(f"{key:<14} {statistics.median(ms):8.3f} {p95:8.3f} {ms[-1]:8.3f}")


if __name__ == "__main__":
    main()
