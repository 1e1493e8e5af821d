"""Figure 2: how fast an external kill -STOP / kill -CONT / kill -9 shows in the status.

For each round a fresh quiet process (``/bin/sleep 100000``) is signalled from outside and
the daemon's status API is asked in a tight loop (one request in flight) until it says so:
ours through the Python client (service-status), supervisord through XML-RPC
(getProcessInfo), circus through its ZeroMQ socket (``list <watcher>``: the pid is gone;
``status <watcher>`` for a stop). Time = from just before ``kill`` until the first answer
that shows the change, so it includes up to one request round trip of the asker.

The peers have no stopped state: a STOP is waited for a bounded time and reported as never
(so is the CONT after it: there is no stopped state to leave). Only ours can open (adopt)
a process it did not start, so the "opened" rows are ours alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from common import NEVER, log, wait_until
from daemons import Ours, make_peer, peer_kinds

SLEEP = ["/bin/sleep", "100000"]


def _timed(pid: int, signo: int, pred, bound: float) -> float:
    start = time.perf_counter()
    os.kill(pid, signo)
    while not pred():
        if time.perf_counter() - start > bound:
            return NEVER
    return (time.perf_counter() - start) * 1000


def ours(rounds: int, bound: float) -> tuple[dict[str, list[float]], bool]:
    out: dict[str, list[float]] = {}
    with Ours() as d:
        c = d.client

        def status_is(name, want):
            return lambda: c.service_status(name)["status"] == want

        for r in range(rounds):
            created = c.create_service(SLEEP[0], SLEEP[1:], name=f"c{r}", cwd="/")
            stranger = subprocess.Popen(SLEEP)
            try:
                c.open_service(stranger.pid, name=f"o{r}")
                for kind, name, pid, gone in (("created", f"c{r}", created["pid"], "KILLED"),
                                              ("opened", f"o{r}", stranger.pid, "EXITED")):
                    for change, signo, want in (("STOP", signal.SIGSTOP, "STOPPED"),
                                                ("CONT", signal.SIGCONT, "RUNNING"),
                                                ("exit (kill -9)", signal.SIGKILL, gone)):
                        out.setdefault(f"{kind} {change}", []).append(
                            _timed(pid, signo, status_is(name, want), bound))
            finally:
                stranger.kill()
                stranger.wait(5)
            c.supervisor_freelist([f"c{r}", f"o{r}"])
    return out, d.journald


def peer(kind: str, opts: dict, rounds_stop: int, rounds_exit: int, bound_stop: float,
         bound_exit: float) -> tuple[str, dict[str, list[float]]]:
    names = [f"q{i}" for i in range(max(rounds_stop, rounds_exit))]
    out: dict[str, list[float]] = {"created STOP": [], "created CONT": [],
                                   "created exit (kill -9)": []}
    with make_peer(kind, [(n, SLEEP) for n in names], **opts) as d:
        label = d.label
        if not wait_until(lambda: d.all_running(names), 30, 0.02):
            raise RuntimeError(f"{label}: programs not running within 30 s")
        for i, name in enumerate(names):
            pid = d.pid_of(name)
            if i < rounds_stop:
                seen = _timed(pid, signal.SIGSTOP, lambda n=name: d.is_stopped(n), bound_stop)
                out["created STOP"].append(seen)
                if seen == NEVER:
                    os.kill(pid, signal.SIGCONT)
                    out["created CONT"].append(NEVER)  # no stopped state to leave
                else:
                    out["created CONT"].append(_timed(
                        pid, signal.SIGCONT, lambda n=name: not d.is_stopped(n), bound_stop))
            if i < rounds_exit:
                out["created exit (kill -9)"].append(_timed(
                    pid, signal.SIGKILL, lambda n=name, p=pid: d.pid_of(n) != p, bound_exit))
    return label, out


def run(cfg) -> dict:
    results: dict = {"bound_stop_s": cfg.detect_bound_stop, "bound_exit_s": cfg.detect_bound_exit,
                     "daemons": {}}
    log(f"detect: ours, {cfg.detect_rounds} rounds")
    results["daemons"]["ours"], results["ours_journald"] = ours(cfg.detect_rounds,
                                                                cfg.detect_bound_exit)
    for kind, opts in peer_kinds(cfg.smoke):
        log(f"detect: {kind} {opts or ''}")
        label, res = peer(kind, opts, cfg.detect_peer_stop_rounds, cfg.detect_peer_rounds,
                          cfg.detect_bound_stop, cfg.detect_bound_exit)
        results["daemons"][label] = res
    return results
