"""Figures 3 and 4: cold start of N quiet services, then the daemon's idle cost and RSS.

For each daemon and N, one fresh daemon is populated with N services ``/bin/sleep 100000``:

* cold start (figure 4): from launching the daemon until its status reports all N
  running. Ours: ``init`` (daemon start) + one pipelined batch of N create-service
  requests through ``supervisor.client.Client.pipeline`` (each answer is RUNNING; a
  list-supervisor then confirms all of them). Peers: their config file lists the N
  programs; the harness polls their status API (every 20 ms) from the moment it launches
  them until all N are running.
* idle (figure 3): after a settle pause, with no client connected, the daemon's CPU
  (utime + stime from /proc/<pid>/stat, and the exact on-CPU time from
  /proc/<pid>/task/*/schedstat) and its context switches (voluntary + nonvoluntary, summed
  over /proc/<pid>/task/*/status: every thread) over the window; per second.
* RSS (figure 4): VmRSS of the daemon process at the end of the window.
* ours at the largest N: list-supervisor time through the client (figure 6).
"""

from __future__ import annotations

import functools
import os
import signal
import time

from common import (
    CLK_TCK,
    count_children,
    cpu_ns,
    cpu_ticks,
    cpus_busy_s,
    ctx_switches,
    log,
    rss_kb,
    summary,
    threads,
    wait_until,
)
from daemons import Ours, make_peer, peer_kinds

SLEEP = ["/bin/sleep", "100000"]


def idle_window(pid: int, window: float) -> dict:
    t0, c0, n0, x0 = time.monotonic(), cpu_ticks(pid), cpu_ns(pid), ctx_switches(pid)
    time.sleep(window)
    t1, c1, n1, x1 = time.monotonic(), cpu_ticks(pid), cpu_ns(pid), ctx_switches(pid)
    dt = t1 - t0
    return {"window_s": dt,
            "cpu_ms_per_s": (c1 - c0) * 1000 / CLK_TCK / dt,
            "cpu_exact_ms_per_s": (n1 - n0) / 1e6 / dt,
            "wakeups_per_s": (x1 - x0) / dt,
            "ctx_switches": x1 - x0,
            "threads": threads(pid),
            "rss_mb": rss_kb(pid) / 1024}


def spawn_floor(n: int, reps: int = 3) -> dict:
    """The floor under any cold start here: N bare ``posix_spawn`` calls of the same toy
    (new session, as ours does), back to back from this small harness process with no
    pidfds, cgroups, logging or protocol (seconds, one sample per repetition); and the CPU
    the N toys themselves burn to get started (exec, dynamic loading; summed from each
    one's /proc/<pid>/schedstat once they sleep), which any supervisor's cold start shares
    the machine's CPUs with."""
    samples, toys_cpu = [], []
    env = dict(os.environ)  # the run's one environment, which the supervisors pass on too
    for _ in range(reps):
        pids = []
        t = time.perf_counter()
        try:
            for _ in range(n):
                pids.append(os.posix_spawn(SLEEP[0], SLEEP, env, setsid=True))
            samples.append(time.perf_counter() - t)
            wait_until(functools.partial(_all_sleeping, pids), 30)
            toys_cpu.append(sum(cpu_ns(pid) for pid in pids) / 1e9)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            for pid in pids:
                os.waitpid(pid, 0)
    return {"wall_s": samples, "toys_cpu_s": toys_cpu, "cpus": os.cpu_count()}


def _all_sleeping(pids: list[int]) -> bool:
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] != "S":
                return False
    return True


def _cold(d: Ours, names: list[str], t0: float) -> dict:
    """One cold start in daemon ``d`` (launched at ``t0``): times, the daemon's CPU during
    the create pipeline, and the CPU its toys burnt starting."""
    t_daemon = time.perf_counter() - t0
    t1, cpu0, busy0 = time.perf_counter(), cpu_ns(d.pid), cpus_busy_s()
    answers = d.create([(name, SLEEP) for name in names])
    t_pipe = time.perf_counter() - t1
    total = time.perf_counter() - t0
    daemon_cpu = (cpu_ns(d.pid) - cpu0) / 1e9  # the daemon's own, during the pipeline
    # how busy the machine's CPUs were meanwhile (everything on them: the daemon, the
    # toys starting, this harness, the kernel's own threads), as a share of what they had
    busy = (cpus_busy_s() - busy0) / (t_pipe * os.cpu_count())
    bad = [a for a in answers if not isinstance(a, dict) or a.get("status") != "RUNNING"]
    if bad:
        raise RuntimeError(f"ours: {len(bad)} of {len(names)} creates failed, e.g. {bad[0]!r}")
    if not d.all_running(names):
        raise RuntimeError("ours: list-supervisor does not show all services RUNNING")
    toys_cpu = sum(cpu_ns(a["pid"]) for a in answers) / 1e9  # the toys' start-ups
    return {"cold_start_s": total, "daemon_start_s": t_daemon, "pipeline_s": t_pipe,
            "daemon_cpu_s": daemon_cpu, "toys_cpu_s": toys_cpu, "cpus_busy": busy}


COLD_REPS = 3  # cold starts of ours up to 1,000 services: the median one is reported


def ours(n: int, cfg) -> dict:
    names = [f"q{i}" for i in range(n)]
    # the extra cold starts first (each a daemon of its own, closed at once): one sample
    # moved by 40 % from one run to the next on this VM
    extra = []
    for _ in range(COLD_REPS - 1 if n <= 1000 else 0):
        t0 = time.perf_counter()
        with Ours() as d:
            extra.append(_cold(d, names, t0))
            d.disconnect()
        time.sleep(cfg.settle)
    t0 = time.perf_counter()
    with Ours() as d:
        cold = _cold(d, names, t0)
        runs = sorted([cold, *extra], key=lambda c: c["cold_start_s"])
        res = {"n": n, **runs[len(runs) // 2],
               "cold_samples_s": [c["cold_start_s"] for c in [*extra, cold]],
               "children": count_children(d.pid), "journald": d.journald}
        d.disconnect()
        time.sleep(cfg.settle)
        res["idle"] = idle_window(d.pid, cfg.idle_window)
        if n == max(cfg.ns_ours):
            d.client.connect()
            times, times_usage = [], []
            for _ in range(cfg.list_reps):  # state only, then with the usage fields
                t = time.perf_counter()
                listing = d.client.list_supervisor(usage=False)
                times.append((time.perf_counter() - t) * 1000)
                assert len(listing["services"]) == n
                t = time.perf_counter()
                listing = d.client.list_supervisor()
                times_usage.append((time.perf_counter() - t) * 1000)
                assert len(listing["services"]) == n
            res["list_supervisor_ms"] = times
            res["list_supervisor_usage_ms"] = times_usage
            d.disconnect()
        t2 = time.perf_counter()
    res["shutdown_s"] = time.perf_counter() - t2
    return res


def peer(kind: str, opts: dict, n: int, cfg) -> tuple[str, dict]:
    names = [f"q{i}" for i in range(n)]
    d = make_peer(kind, [(name, SLEEP) for name in names], **opts)
    with d:
        ok = wait_until(lambda: d.all_running(names), cfg.cold_cap, 0.02)
        total = time.perf_counter() - d.start_t
        res = {"n": n, "cold_start_s": total if ok else None, "children": count_children(d.pid)}
        if not ok:
            res["note"] = f"not all running within {cfg.cold_cap:g} s"
        time.sleep(cfg.settle)
        res["idle"] = idle_window(d.pid, cfg.idle_window)
        t2 = time.perf_counter()
    res["shutdown_s"] = time.perf_counter() - t2
    return d.label, res


def run(cfg) -> dict:
    results: dict = {"daemons": {}, "spawn_floor": {}}
    for n in cfg.ns_peers:
        if n >= 100 or cfg.smoke:
            floor = results["spawn_floor"][str(n)] = spawn_floor(n)
            log(f"scale: spawn floor N={n}: {summary(floor['wall_s'])['median']:.3f} s, "
                f"the toys' own start-up CPU {summary(floor['toys_cpu_s'])['median']:.3f} s")
    for n in cfg.ns_ours:
        log(f"scale: ours N={n}")
        res = ours(n, cfg)
        results["daemons"].setdefault("ours", {})[str(n)] = res
        log(f"  cold {res['cold_start_s']:.3f} s, idle {res['idle']['cpu_exact_ms_per_s']:.3f}"
            f" ms/s, {res['idle']['wakeups_per_s']:.2f} wakeups/s, "
            f"RSS {res['idle']['rss_mb']:.1f} MB")
        if "list_supervisor_ms" in res:
            log(f"  list-supervisor {summary(res['list_supervisor_ms'])['median']:.1f} ms")
    for kind, opts in peer_kinds(cfg.smoke):
        for n in cfg.ns_peers:
            log(f"scale: {kind} {opts or ''} N={n}")
            label, res = peer(kind, opts, n, cfg)
            results["daemons"].setdefault(label, {})[str(n)] = res
            cold = res["cold_start_s"]
            log(f"  cold {cold if cold is None else round(cold, 3)} s, idle "
                f"{res['idle']['cpu_exact_ms_per_s']:.3f} ms/s, "
                f"{res['idle']['wakeups_per_s']:.2f} wakeups/s, "
                f"RSS {res['idle']['rss_mb']:.1f} MB, shutdown {res['shutdown_s']:.1f} s")
    return results
