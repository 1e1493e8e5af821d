"""Where our time goes: our daemon (or CLI) under cProfile, on one benchmark workload.

    .venv/bin/python bench/profile_ours.py throughput [--no-journald] [--top 25]
    .venv/bin/python bench/profile_ours.py cold --n 1000
    .venv/bin/python bench/profile_ours.py list --n 10000
    .venv/bin/python bench/profile_ours.py restart --n 300 [--others 1000]
    .venv/bin/python bench/profile_ours.py cli

Daemon workloads start ``python -m cProfile -o <file> -m supervisor.daemon`` in a private
runtime directory, run the workload through the Python client, close the instance (the
profile is written as the daemon exits) and print the top functions by own time and by
cumulative time. ``--no-journald`` runs the daemon in a private mount namespace where
``/run/systemd/journal`` is empty, so it logs to stderr as it does without journald.
``PROFILE_KEEP=<path>`` keeps the raw profile there (for ``pstats``' callers, say).
``cli`` profiles ``supervisor service-status`` in-process (imports included) and prints
the slowest imports from ``-X importtime``.
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import OUR_BIN, REPO, wait_until

SLEEP = ["/bin/sleep", "100000"]
TOY = os.path.join(REPO, "bench", "toys", "crash_toy")


def _print_stats(path: str, top: int) -> None:
    keep = os.environ.get("PROFILE_KEEP")  # a path: the raw profile is copied there
    if keep:
        shutil.copyfile(path, keep)
    for key in ("tottime", "cumulative"):
        out = io.StringIO()
        stats = pstats.Stats(path, stream=out)
        stats.strip_dirs().sort_stats(key).print_stats(top)
        text = out.getvalue()
        print(f"==== by {key} ====")
        print(text[text.find("   ncalls"):] if "   ncalls" in text else text)


def daemon(workload: str, n: int, top: int, no_journald: bool, others: int = 0) -> None:
    from supervisor.client import Client

    rundir = tempfile.mkdtemp(prefix="svbp-", dir="/tmp")
    prof = os.path.join(rundir, "daemon.prof")
    env = {**os.environ, "SUPERVISOR_RUNTIME_DIR": rundir}
    for key in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID"):
        env.pop(key, None)
    cmd = [os.path.join(OUR_BIN, "python"), "-m", "cProfile", "-o", prof, "-m",
           "supervisor.daemon", "-i", "0"]
    if no_journald:
        cmd = ["unshare", "-m", "sh", "-c",
               "mount -t tmpfs none /run/systemd/journal 2>/dev/null || true; exec \"$@\"",
               "sh", *cmd]
    log = open(os.path.join(rundir, "daemon.log"), "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, cwd="/",
                            start_new_session=True)
    try:
        sock_path = os.path.join(rundir, "0.sock")

        def up():
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(sock_path)
                return True
            except OSError:
                return False
        if not wait_until(up, 20):
            raise SystemExit("the daemon did not come up (see its log in " + rundir + ")")
        with Client(0, runtime_dir=rundir) as c:
            t = time.perf_counter()
            if workload == "throughput":
                c.create_service(SLEEP[0], SLEEP[1:], name="q1", cwd="/")
                batch = [("service-status", {"service": "q1"})] * n
                t = time.perf_counter()
                c.pipeline(batch)
                dt = time.perf_counter() - t
                print(f"{n:,} pipelined service-status in {dt:.3f} s: {n / dt:,.0f}/s "
                      "(under cProfile)")
            elif workload in ("cold", "list"):
                calls = [("create-service", {"path": SLEEP[0], "args": SLEEP[1:],
                                             "name": f"q{i}", "cwd": "/", "output": "null"})
                         for i in range(n)]  # not logged, as the benchmark's services
                c.pipeline(calls)
                print(f"create pipeline of {n:,}: {time.perf_counter() - t:.3f} s "
                      "(under cProfile)")
                if workload == "list":
                    for _ in range(5):
                        t = time.perf_counter()
                        c.list_supervisor()
                        print(f"list-supervisor of {n:,}: "
                              f"{(time.perf_counter() - t) * 1000:.0f} ms (under cProfile)")
            elif workload == "restart":
                if others:
                    c.pipeline([("create-service", {"path": SLEEP[0], "args": SLEEP[1:],
                                                    "name": f"q{i}", "cwd": "/", "output": "null"})
                                for i in range(others)])
                    t = time.perf_counter()
                rec = os.path.join(rundir, "rec")
                c.create_service(TOY, [rec], name="toy", restart_times=n, cwd="/")
                wait_until(lambda: c.service_status("toy")["status"] == "CRASHED", 120, 0.05)
                print(f"{n} restarts beside {others} quiet services in "
                      f"{time.perf_counter() - t:.2f} s (under cProfile)")
            c.call("shutdown")
        proc.wait(60)
        _print_stats(prof, top)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
        shutil.rmtree(rundir, ignore_errors=True)


def cli(top: int) -> None:
    from supervisor.client import close_instance, init

    rundir = tempfile.mkdtemp(prefix="svbp-", dir="/tmp")
    env = {**os.environ, "SUPERVISOR_RUNTIME_DIR": rundir}
    try:
        init(0, runtime_dir=rundir)
        from supervisor.client import Client

        with Client(0, runtime_dir=rundir) as c:
            c.create_service(SLEEP[0], SLEEP[1:], name="q1", cwd="/")
        exe = os.path.join(OUR_BIN, "supervisor")
        out = subprocess.run([os.path.join(OUR_BIN, "python"), "-X", "importtime", exe,
                              "service-status", "q1"], env=env, capture_output=True,
                             text=True, timeout=60)
        rows = []
        for line in out.stderr.splitlines():
            parts = line.split("|")
            if len(parts) == 3 and parts[1].strip().isdigit():
                rows.append((int(parts[1]), int(parts[0].split(":")[1]), parts[2].rstrip()))
        print("==== -X importtime: slowest imports (cumulative us, self us, module) ====")
        for cum, own, mod in sorted(rows, reverse=True)[:top]:
            print(f"{cum:8d} {own:8d} {mod}")
        prof = os.path.join(rundir, "cli.prof")
        subprocess.run([os.path.join(OUR_BIN, "python"), "-m", "cProfile", "-o", prof, exe,
                        "service-status", "q1"], env=env, check=True, timeout=60,
                       stdout=subprocess.DEVNULL)
        _print_stats(prof, top)
        close_instance(0, runtime_dir=rundir)
    finally:
        shutil.rmtree(rundir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workload", choices=["throughput", "cold", "list", "restart", "cli"])
    ap.add_argument("--n", type=int, default=None, help="requests / services / restarts")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--no-journald", action="store_true")
    ap.add_argument("--others", type=int, default=0,
                    help="restart: this many quiet services beside the crashing toy")
    args = ap.parse_args()
    defaults = {"throughput": 50000, "cold": 1000, "list": 10000, "restart": 300}
    if args.workload == "cli":
        cli(args.top)
    else:
        daemon(args.workload, args.n or defaults[args.workload], args.top, args.no_journald,
               args.others)


if __name__ == "__main__":
    main()
