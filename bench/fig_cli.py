"""Figure 5: CLI latency, end to end, of asking one service's status.

``supervisor service-status q1`` (ours) vs ``supervisorctl status q1`` vs
``circusctl status q1``, and the floor: ``python -c pass`` with the same interpreter
(both venvs are built from it). Timed with hyperfine (``-N``: no shell in between) when
it is installed, else by the harness itself (posix_spawn + wait, the same thing).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time

from common import OUR_BIN, log, wait_until
from daemons import Circus, Ours, Supervisord

SLEEP = ["/bin/sleep", "100000"]


def _hyperfine(cmd: list[str], runs: int, warmup: int, env: dict) -> list[float]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(["hyperfine", "-N", "--style", "none", "--warmup", str(warmup),
                        "--runs", str(runs), "--export-json", out.name,
                        " ".join(cmd)], env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=600)
        with open(out.name) as f:
            data = json.load(f)
    return [t * 1000 for t in data["results"][0]["times"]]


def _own_timing(cmd: list[str], runs: int, warmup: int, env: dict) -> list[float]:
    times = []
    for i in range(warmup + runs):
        t = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=True, timeout=60)
        if i >= warmup:
            times.append((time.perf_counter() - t) * 1000)
    return times


def run(cfg) -> dict:
    hyperfine = shutil.which("hyperfine")
    timer = _hyperfine if hyperfine else _own_timing
    results: dict = {"tool": "hyperfine -N" if hyperfine else "harness (posix_spawn + wait)",
                     "runs": cfg.cli_runs, "commands": {}}
    # Bytecode caches as any normal installation has them: this machine sets
    # PYTHONDONTWRITEBYTECODE, and a module whose cache is missing or stale would be
    # compiled on every run. The check run before timing each command writes them.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    floor = [os.path.join(OUR_BIN, "python"), "-c", "pass"]

    def measure(label: str, cmd: list[str], env: dict) -> None:
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)  # it works, before timing it
        log(f"cli: {label}")
        results["commands"][label] = {"cmd": " ".join(cmd),
                                      "ms": timer(cmd, cfg.cli_runs, cfg.cli_warmup, env)}

    measure("floor: python -c pass", floor, env)
    with Ours() as d:
        d.client.create_service(*SLEEP[:1], SLEEP[1:], name="q1", cwd="/")
        measure("ours: supervisor service-status q1",
                [os.path.join(OUR_BIN, "supervisor"), "service-status", "q1", "-i", "0"],
                {**env, "SUPERVISOR_RUNTIME_DIR": d.dir})
        results["journald"] = d.journald
    with Supervisord([("q1", SLEEP)]) as d:
        wait_until(lambda: d.all_running(["q1"]), 10)
        measure("supervisorctl status q1", [*d.ctl, "status", "q1"], env)
    with Circus([("q1", SLEEP)]) as d:
        wait_until(lambda: d.all_running(["q1"]), 10)
        measure("circusctl status q1", [*d.ctl, "status", "q1"], env)
    return results
