"""The daemon's memory under pipelining clients: C clients, each pipelining R
``list-supervisor`` requests to an instance with N services, all at once; the daemon's
peak RSS (``VmHWM`` of /proc/<pid>/status) before and after.

    .venv/bin/python bench/pipeline_rss.py [--clients 20] [--requests 1000] [--services 100]

Each answer lists every service (~250 bytes a service), so a client that sends before it
reads has the daemon hold its answers until it reads them: what bounds that memory is the
daemon's backpressure (docs/design.md, "Control socket").
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from supervisor.client import Client, close_instance, init


def status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--services", type=int, default=100)
    a = ap.parse_args()
    rundir = tempfile.mkdtemp(prefix="sv-rss-", dir="/tmp")
    info, _ = init(0, runtime_dir=rundir)
    pid = info["pid"]
    try:
        with Client(0, runtime_dir=rundir) as c:
            c.pipeline([("create-service", {"path": "/bin/sleep", "args": ["3600"],
                                            "name": f"s{i}", "output": "null"})
                        for i in range(a.services)])
            size = len(str(c.list_supervisor()))
        before = status_kib(pid, "VmRSS")
        answers = [0] * a.clients

        def client(k: int) -> None:
            with Client(0, runtime_dir=rundir, timeout=120) as c:
                answers[k] = len(c.pipeline([("list-supervisor", {})] * a.requests))

        start = time.monotonic()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(a.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.monotonic() - start
        peak, after = status_kib(pid, "VmHWM"), status_kib(pid, "VmRSS")
        print(f"{a.clients} clients x {a.requests} list-supervisor ({a.services} services, "
              f"~{size // 1000} KB an answer), {sum(answers)} answers in {took:.1f} s: "
              f"daemon RSS {before / 1024:.1f} MB before, peak {peak / 1024:.1f} MB, "
              f"{after / 1024:.1f} MB after")
    finally:
        close_instance(0, runtime_dir=rundir)
        os.system(f"rm -rf {rundir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
