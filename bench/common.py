"""Shared pieces of the benchmark harness: paths, statistics, /proc readers, clean-up.

The harness runs under our own venv (``.venv/bin/python``), so ``import supervisor`` is
ours. The peers (supervisord 4.3.0, circus 0.19.0) and matplotlib live in a separate venv,
``bench/.peers/venv``, built from the same base interpreter; its site-packages is appended
to ``sys.path`` (at the end, so it never shadows ours) only for ``zmq`` (to talk to circus)
and ``matplotlib`` (plots). supervisord is spoken to over plain XML-RPC from the stdlib.
"""

from __future__ import annotations

import ctypes
import glob
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
OUR_BIN = os.path.join(REPO, ".venv", "bin")
PEERS_VENV = os.path.join(BENCH, ".peers", "venv")
PEER_BIN = os.path.join(PEERS_VENV, "bin")
NEVER = math.inf  # a change the daemon never reported within the bounded wait


def log(*parts) -> None:
    print("[bench]", *parts, file=sys.stderr, flush=True)


# ---- the peers' venv --------------------------------------------------------------------


def use_peer_packages() -> None:
    """Make zmq and matplotlib importable from the peers' venv (appended, never first).

    supervisord's package is also called ``supervisor``, and our editable install is found
    by a meta-path finder that runs after ``sys.path``: so our package is imported first,
    and from then on every ``supervisor.*`` submodule resolves inside it."""
    import supervisor
    import supervisor.client
    import supervisor.paths
    import supervisor.process
    import supervisor.protocol

    if os.path.abspath(supervisor.__file__).startswith(PEERS_VENV):
        raise SystemExit(f"bench: `supervisor` resolves to {supervisor.__file__}: run the "
                         "harness with .venv/bin/python")
    libs = glob.glob(os.path.join(PEERS_VENV, "lib", "python3.*", "site-packages"))
    want = f"python{sys.version_info.major}.{sys.version_info.minor}"
    libs = [p for p in libs if want in p]
    if not libs:
        raise SystemExit(f"bench: no {want} site-packages in {PEERS_VENV}: run `make bench` "
                         "(it builds the peers' venv from bench/requirements-peers.txt)")
    for p in libs:
        if p not in sys.path:
            sys.path.append(p)


def peer_versions() -> dict[str, str]:
    out = subprocess.run([os.path.join(PEER_BIN, "python"), "-c",
                          "import importlib.metadata as m\n"
                          "for p in ('supervisor','circus','pyzmq','tornado','psutil',"
                          "'matplotlib'):\n"
                          "    print(p, m.version(p))"],
                         capture_output=True, text=True, timeout=60)
    return dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)


# ---- statistics -------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100); inf values sort last."""
    xs = sorted(values)
    if not xs:
        return math.nan
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    if xs[lo] == xs[hi]:
        return xs[lo]
    if math.isinf(xs[hi]):
        return math.inf
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(values: Iterable[float]) -> dict:
    xs = list(values)
    if not xs:
        return {"n": 0, "median": math.nan, "p95": math.nan, "min": math.nan,
                "max": math.nan, "mean": math.nan}
    finite = [x for x in xs if math.isfinite(x)]
    return {"n": len(xs), "median": percentile(xs, 50), "p95": percentile(xs, 95),
            "min": min(xs), "max": max(xs),
            "mean": statistics.fmean(finite) if finite else math.inf}


# ---- /proc --------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def cpu_ticks(pid: int) -> int:
    """utime + stime of the whole process (all threads), in clock ticks."""
    data = _read(f"/proc/{pid}/stat")
    fields = data[data.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def cpu_ns(pid: int) -> int:
    """Time on CPU of all threads in ns (schedstat: exact, not tick-sampled)."""
    total = 0
    for task in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        data = _read(task)
        if data:
            total += int(data.split()[0])
    return total


def cpus_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (not idle, not waiting for I/O), over
    all its CPUs, from the first line of /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / CLK_TCK


def ctx_switches(pid: int) -> int:
    """voluntary + nonvoluntary context switches summed over all threads."""
    total = 0
    for task in glob.glob(f"/proc/{pid}/task/*/status"):
        data = _read(task)
        if not data:
            continue
        for line in data.splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                total += int(line.split()[1])
    return total


def threads(pid: int) -> int:
    return len(glob.glob(f"/proc/{pid}/task/*"))


def rss_kb(pid: int) -> int:
    data = _read(f"/proc/{pid}/status") or ""
    for line in data.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, state) of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        data = _read(f"/proc/{entry}/stat")
        if not data:
            continue
        rest = data[data.rindex(")") + 2:].split()
        table[int(entry)] = (int(rest[1]), rest[0])
    return table


def descendants(root: int, table: dict | None = None) -> list[int]:
    table = table if table is not None else process_table()
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _state) in table.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def count_children(pid: int, state: str | None = None) -> int:
    return sum(1 for p, (pp, st) in process_table().items()
               if pp == pid and (state is None or st == state))


# ---- process hygiene ----------------------------------------------------------------------


def become_subreaper() -> None:
    """Orphans of the daemons we start (after a daemon is killed) come back to us, so the
    final sweep finds and kills them: no stray process outlives the harness."""
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_CHILD_SUBREAPER = 36
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def kill_tree(pid: int) -> int:
    """SIGKILL ``pid`` and all its descendants; returns how many were signalled."""
    victims = [*descendants(pid), pid]
    for victim in victims:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(victims)


def reap_children(block_s: float = 2.0) -> int:
    """Reap whatever children of ours have exited (bounded); returns how many."""
    reaped = 0
    deadline = time.monotonic() + block_s
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            if not any(pp == os.getpid() and st == "Z" for pp, st in process_table().values()):
                break
            time.sleep(0.01)
            continue
        reaped += 1
    return reaped


def sweep(keep: Iterable[int] = ()) -> int:
    """Kill every descendant of the harness (but ``keep``) and reap them. Bounded."""
    keep = set(keep)
    killed = 0
    for _ in range(5):
        table = process_table()
        mine = [p for p in descendants(os.getpid(), table) if p not in keep]
        live = [p for p in mine if table.get(p, (0, "Z"))[1] != "Z"]
        for pid in live:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        reap_children(1.0)
        if not live:
            break
        time.sleep(0.05)
    return killed


def wait_until(pred: Callable[[], object], timeout: float, interval: float = 0.01):
    """Call ``pred`` until it returns a true value (returned) or ``timeout`` runs out (None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def stop_popen(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Signal a daemon we started, wait (bounded), then SIGKILL it and its whole tree."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_tree(proc.pid)
            proc.wait(5)


# ---- the machine ------------------------------------------------------------------------


# The one environment of a run: the harness sets it on itself, so every daemon it starts,
# every toy those start (circus with copy_env) and the bare toy of the restart figure run
# with the same variables. The toy's start-up depends on them (a UTF-8 LANG makes `date`
# load locale files), so the bare start-up is only subtracted fairly this way. LANG is
# set because a Python daemon started without one sets LC_CTYPE=C.UTF-8 for its children
# (PEP 538): with it, all start alike.
BENCH_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def use_bench_env() -> dict[str, str]:
    """Replace the harness's environment with :data:`BENCH_ENV`; returns it."""
    os.environ.clear()
    os.environ.update(BENCH_ENV)
    return dict(BENCH_ENV)


def hide_journald() -> str:
    """Give the harness (and so every daemon it starts) a private mount namespace in which
    /run/systemd/journal is an empty tmpfs: our daemon then logs to its stderr log file,
    as supervisord and circus log to theirs, whether or not a journald happens to run on
    the machine (the test suite starts one). Nothing changes outside the harness's own
    processes. Returns what was done."""
    libc = ctypes.CDLL(None, use_errno=True)
    CLONE_NEWNS, MS_REC, MS_PRIVATE = 0x00020000, 0x4000, 1 << 18
    path = "/run/systemd/journal"
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        return f"kept as is (cannot create {path}: {exc.strerror})"
    if libc.unshare(CLONE_NEWNS) != 0:
        return f"kept as is (unshare: {os.strerror(ctypes.get_errno())})"
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return f"kept as is (mount --make-rprivate /: {os.strerror(ctypes.get_errno())})"
    if libc.mount(b"tmpfs", path.encode(), b"tmpfs", 0, b"size=64k,mode=755") != 0:
        return f"kept as is (mount tmpfs: {os.strerror(ctypes.get_errno())})"
    return "hidden (private mount namespace, empty /run/systemd/journal): stderr log file"


def loadavg() -> list[str]:
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def journald_present() -> bool:
    """What our daemon checks at start: log to journald, or to stderr (its log file)."""
    return os.path.exists("/run/systemd/journal/socket")


def machine() -> dict:
    cpu = "?"
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    distro = "?"
    for line in (_read("/etc/os-release") or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            distro = line.split("=", 1)[1].strip('"')
    mem_kb = 0
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "distro": distro,
        "python": f"{platform.python_implementation()} {platform.python_version()} "
                  f"({sys.executable})",
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "nofile": f"{soft}/{hard}",
        "journald": journald_present(),
    }
