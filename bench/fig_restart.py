"""Figure 1: crash -> restart latency, for toys that live a while.

The toy (bench/toys/crash_toy, a /bin/sh script) appends ``s <ns>`` when it starts, lives
L seconds, appends ``c <ns>`` and kills itself with SIGSEGV. Under a supervisor that
restarts it, restart latency = the next ``s`` minus the previous ``c``. Four lifetimes, the
realistic one first: 0.3 s plus a random part of 0.3 s, 0.3 s, 0.05 s, 0 s. A toy that
crashes at once keeps the kernel's locks and caches warm between restarts (a
``cgroup.procs`` write, for one, takes cgroup_threadgroup_rwsem and waits for an RCU grace
period unless another came just before): the lifetimes show whether a cost hides there.
Each row: ours, ours with the spawn path kept for older kernels (posix_spawn, the daemon
stepping into the cgroup: what ours did before), supervisord, circus.

That latency includes the toy's own start-up (sh + one ``date``). The bare start-up is
measured by running the same toy straight from the harness (posix_spawn, wall clock taken
just before), in the environment every supervisor passes its toy (the run's one
environment, common.BENCH_ENV): bare start-up = its ``s`` minus the spawn time. "Share" =
restart latency minus the median bare start-up. The toy's crash tail (from its ``c``
record until the harness sees it dead on a pidfd) is measured too and reported, since it
is in every supervisor's latency and is not the supervisor's doing either.

The bare start-up is measured back to back, warm; a toy that lived 0.3 s starts on a
machine that was idle meanwhile (caches cold, CPUs asleep), which costs every supervisor
alike. So each lifetime also has its floor: the least any supervisor can do, the harness
itself as a minimal supervisor (wait on the toy's pidfd, reap it, posix_spawn it again at
once, its output to /dev/null as ours is), measured with the same toy at the same
lifetime. "Over the floor" = restart latency minus the floor's median at that lifetime:
what a supervisor adds to the least possible restart.

Beside many: the realistic toy restarted K times beside N quiet services (``sleep``,
started first, output to /dev/null), the restarts counted from once all N run. Over the
floor, measured as above with N other processes on the machine (the harness's own
``sleep``s), and the daemon's own CPU a restart (schedstat of all its threads over the
window, divided by the restarts in it; it includes the harness's status polls, one every
0.5 s, ~0.1 ms each for ours). A supervisor whose every change rewrites all its state, or
that walks all its services on each event, shows it here and not in the rows above.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import tempfile
import time

from common import BENCH, cpu_ns, log, summary, wait_until
from daemons import Ours, make_peer, peer_kinds

TOY = os.path.join(BENCH, "toys", "crash_toy")


def records(path: str) -> list[tuple[str, int]]:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("s", "c") and parts[1].isdigit():
            out.append((parts[0], int(parts[1])))
    return out


def latencies_ms(recs: list[tuple[str, int]]) -> list[float]:
    """Each ``c`` followed by an ``s``: (s - c) in ms."""
    return [(recs[i + 1][1] - recs[i][1]) / 1e6 for i in range(len(recs) - 1)
            if recs[i][0] == "c" and recs[i + 1][0] == "s"]


def _starts(path: str) -> int:
    return sum(1 for kind, _ in records(path) if kind == "s")


def bare(n: int, workdir: str) -> tuple[list[float], list[float]]:
    """Run the toy directly ``n`` times: (start-up ms, crash tail ms)."""
    startup, tail = [], []
    env = dict(os.environ)  # the run's one environment, as each supervisor gives its toy
    for i in range(n):
        rec = os.path.join(workdir, f"bare-{i}")
        t0 = time.time_ns()
        pid = os.posix_spawn(TOY, [TOY, rec], env, setsid=True)
        fd = os.pidfd_open(pid)
        try:
            select.select([fd], [], [], 10)
            t_dead = time.time_ns()
        finally:
            os.close(fd)
        os.waitpid(pid, 0)
        recs = dict(records(rec))
        if "s" in recs and "c" in recs:
            startup.append((recs["s"] - t0) / 1e6)
            tail.append((t_dead - recs["c"]) / 1e6)
    return startup, tail


def floor(k: int, toy: list[str], workdir: str) -> dict:
    """The harness as the least a supervisor can do: k restarts of the toy, each spawned
    as soon as its pidfd says the last one died (and it was reaped)."""
    rec = os.path.join(workdir, f"floor-{'-'.join(toy)}")
    env = dict(os.environ)
    null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
               (os.POSIX_SPAWN_DUP2, null, 1), (os.POSIX_SPAWN_DUP2, null, 2)]
    try:
        for _ in range(k + 1):
            pid = os.posix_spawn(TOY, [TOY, rec, *toy], env, file_actions=actions,
                                 setsid=True)
            fd = os.pidfd_open(pid)
            try:
                select.select([fd], [], [])
                os.waitid(os.P_PIDFD, fd, os.WEXITED)
            finally:
                os.close(fd)
    finally:
        os.close(null)
    return {"latency_ms": latencies_ms(records(rec)), "note": ""}


# (label, toy arguments after the record file); the realistic one first
LIFETIMES = [("0.3 s + jitter", ["0.3", "0.3"]), ("0.3 s", ["0.3"]), ("0.05 s", ["0.05"]),
             ("0 s", [])]


def ours(k: int, toy: list[str], workdir: str, cap_s: float, spawn: str | None = None
         ) -> dict:
    rec = os.path.join(workdir, f"ours-{spawn}-{'-'.join(toy)}")  # one per row
    with Ours(spawn=spawn) as d:
        d.client.create_service(TOY, [rec, *toy], name="toy", restart_times=k, cwd="/",
                                output="null")
        done = wait_until(lambda: d.status("toy")["status"] == "CRASHED", cap_s, 0.02)
        restarts = d.status("toy")["restarts"]
    lat = latencies_ms(records(rec))
    return {"latency_ms": lat, "journald": d.journald, "note": "" if done else
            f"stopped after {cap_s:g} s with {restarts} of {k} restarts"}


def peer(kind: str, opts: dict, k: int, toy: list[str], workdir: str, cap_s: float
         ) -> tuple[str, dict]:
    rec = os.path.join(workdir, f"{kind}-{opts.get('check_delay', '')}-{'-'.join(toy)}")
    with make_peer(kind, [("toy", [TOY, rec, *toy])], **opts) as d:
        label = d.label
        done = wait_until(lambda: _starts(rec) > k, cap_s, 0.02)
    lat = latencies_ms(records(rec))
    note = "" if done else f"{len(lat)} restarts within the {cap_s:g} s window"
    return label, {"latency_ms": lat, "note": note}


FALLBACK = "ours, fallback spawn"
REALISTIC = LIFETIMES[0]


def _quiet(n: int) -> list[tuple[str, list[str]]]:
    return [(f"q{i}", ["/bin/sleep", "100000"]) for i in range(n)]


def beside_ours(n: int, k: int, workdir: str, cap_s: float) -> dict:
    _label, toy = REALISTIC
    rec = os.path.join(workdir, f"beside-ours-{n}")
    with Ours() as d:
        failed = [x for x in d.create(_quiet(n)) if isinstance(x, Exception)]
        if failed:
            raise RuntimeError(f"{len(failed)} of {n} quiet services not created: {failed[0]}")
        d.client.create_service(TOY, [rec, *toy], name="toy", restart_times=k, cwd="/",
                                output="null")
        cpu0 = cpu_ns(d.pid)  # the create's own CPU left out: the restarts' from here
        done = wait_until(lambda: d.status("toy")["status"] == "CRASHED", cap_s, 0.5)
        cpu = cpu_ns(d.pid) - cpu0
        restarts = d.status("toy")["restarts"]
    lat = latencies_ms(records(rec))
    return {"latency_ms": lat, "cpu_ms_per_restart": cpu / 1e6 / restarts if restarts else None,
            "restarts": restarts,
            "note": "" if done else f"stopped after {cap_s:g} s with {restarts} of {k}"}


def beside_peer(kind: str, opts: dict, n: int, k: int, workdir: str, cap_s: float,
                ready_s: float) -> tuple[str, dict]:
    _, toy = REALISTIC
    rec = os.path.join(workdir, f"beside-{kind}-{opts.get('check_delay', '')}-{n}")
    quiet = _quiet(n)
    with make_peer(kind, [("toy", [TOY, rec, *toy]), *quiet], **opts) as d:
        label = d.label
        names = [name for name, _ in quiet]
        if not wait_until(lambda: d.all_running(names), ready_s, 0.5):
            raise RuntimeError(f"{label}: {n} quiet services not all running in {ready_s:g} s")
        t0, cpu0 = time.time_ns(), cpu_ns(d.pid)
        before = _starts(rec)
        done = wait_until(lambda: _starts(rec) - before > k, cap_s, 0.5)
        cpu = cpu_ns(d.pid) - cpu0
    recs = [(kind_, t) for kind_, t in records(rec) if t >= t0]
    lat = latencies_ms(recs)
    restarts = sum(1 for kind_, _ in recs if kind_ == "s")
    note = "" if done else f"{len(lat)} restarts within the {cap_s:g} s window"
    return label, {"latency_ms": lat,
                   "cpu_ms_per_restart": cpu / 1e6 / restarts if restarts else None,
                   "restarts": restarts, "note": note}


def floor_beside(n: int, k: int, workdir: str) -> list[float]:
    """The floor on a machine that holds N other processes (the harness's own ``sleep``s):
    a machine of 10,000 processes restarts a toy more slowly whoever does it."""
    _, toy = REALISTIC
    env = dict(os.environ)
    pids = [os.posix_spawn("/bin/sleep", ["sleep", "100000"], env, setsid=True)
            for _ in range(n)]
    try:
        sub = tempfile.mkdtemp(prefix=f"floor-{n}-", dir=workdir)
        return floor(k, toy, sub)["latency_ms"]
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        for pid in pids:
            os.waitpid(pid, 0)


def beside(cfg, workdir: str, realistic: dict) -> dict:
    """{N: {daemon: result}}: the realistic toy restarted beside N quiet services; and
    under "floor", the floor with N other processes on the machine."""
    out: dict = {}
    floors: dict[str, list[float]] = {}
    for n in cfg.beside_ours:
        log(f"restart beside {n} quiet services: the floor with {n} processes beside it")
        floors[str(n)] = floor_beside(n, cfg.beside_restarts, workdir)
        per = out.setdefault(str(n), {})
        log(f"restart beside {n} quiet services: ours, {cfg.beside_restarts} restarts")
        per["ours"] = beside_ours(n, cfg.beside_restarts, workdir,
                                  cfg.restart_cap + cfg.beside_restarts * 0.7)
        if n not in cfg.beside_peers:
            continue
        for kind, opts in peer_kinds(cfg.smoke):
            log(f"restart beside {n} quiet services: {kind} {opts or ''} (up to "
                f"{cfg.beside_restarts} restarts or {cfg.restart_cap:g} s)")
            name, res = beside_peer(kind, opts, n, cfg.beside_restarts, workdir,
                                    cfg.restart_cap, cfg.cold_cap)
            per[name] = res
    for n, per in out.items():
        low = summary(floors[n])["median"]
        for res in per.values():
            res["over_floor_ms"] = [x - low for x in res["latency_ms"]]
    return {"daemons": out, "floor_ms": floors,
            "floor_alone_ms": realistic["floor_ms"]}


def run(cfg) -> dict:
    workdir = tempfile.mkdtemp(prefix="svbr-", dir="/tmp")
    try:
        log("restart: bare start-up of the toy")
        startup, tail = bare(cfg.restart_bare, workdir)
        base = summary(startup)["median"]
        results = {"bare_startup_ms": startup, "crash_tail_ms": tail, "lifetimes": {}}
        for label, toy in LIFETIMES:
            life = float(toy[0]) + (float(toy[1]) / 2 if len(toy) > 1 else 0) if toy else 0
            k = max(10, min(cfg.restart_ours, int(cfg.restart_window / max(life, 0.05))))
            cap = cfg.restart_cap + k * (life + 0.1)
            daemons = {}
            log(f"restart, toy lives {label}: the floor (the harness restarts it), {k} "
                "restarts")
            least = floor(k, toy, workdir)
            log(f"restart, toy lives {label}: ours, {k} restarts")
            daemons["ours"] = ours(k, toy, workdir, cap)
            log(f"restart, toy lives {label}: {FALLBACK}, {k} restarts")
            daemons[FALLBACK] = ours(k, toy, workdir, cap, spawn="fallback")
            for kind, opts in peer_kinds(cfg.smoke):
                log(f"restart, toy lives {label}: {kind} {opts or ''} (up to "
                    f"{cfg.restart_peers} restarts or {cfg.restart_cap:g} s)")
                name, res = peer(kind, opts, cfg.restart_peers, toy, workdir,
                                 cfg.restart_cap)
                daemons[name] = res
            low = summary(least["latency_ms"])["median"]
            for res in daemons.values():
                res["share_ms"] = [x - base for x in res["latency_ms"]]
                res["over_floor_ms"] = [x - low for x in res["latency_ms"]]
            results["lifetimes"][label] = {"daemons": daemons, "floor_ms": least["latency_ms"]}
        results["beside"] = beside(cfg, workdir, results["lifetimes"][REALISTIC[0]])
        return results
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
