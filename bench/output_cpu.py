"""CPU cost of service output: the daemon's and the log relay's CPU seconds while one
service prints N MB (default 50) through the journal.

    .venv/bin/python bench/output_cpu.py [--mb 50]

Needs a running journald (as root on a machine without one, start
/lib/systemd/systemd-journald first; the test suite's tests/journald.py shows how).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from supervisor.client import Client, close_instance, init


def cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def relay_of(daemon: int) -> int:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if ppid == daemon and b"supervisor.logrelay" in cmd:
                return int(entry)
    raise RuntimeError("no log relay")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=50)
    mb = ap.parse_args().mb
    rundir = tempfile.mkdtemp(prefix="svo-", dir="/tmp")
    os.environ["SUPERVISOR_RUNTIME_DIR"] = rundir
    try:
        info, _ = init(0)
        daemon = info["pid"]
        with Client(0) as c:
            c.create_service("/bin/sleep", ["600"], name="warm-up")
            relay = relay_of(daemon)
            d0, r0, t0 = cpu(daemon), cpu(relay), time.monotonic()
            c.create_service("/bin/sh", ["-c", f"head -c {mb * 1_000_000} /dev/zero | "
                                               "tr '\\0' x | fold -w 99"], name="loud")
            while c.service_status("loud")["status"] != "EXITED":
                time.sleep(0.5)
            last = -1.0
            while cpu(relay) != last:  # until the relay has drained the pipe
                last = cpu(relay)
                time.sleep(1.0)
            d1, r1 = cpu(daemon), cpu(relay)
        close_instance(0)
    finally:
        shutil.rmtree(rundir, ignore_errors=True)
    lines = mb * 1_000_000 // 99
    print(f"{mb} MB of output ({lines} lines) in {time.monotonic() - t0:.1f} s: "
          f"daemon CPU {d1 - d0:.2f} s, log relay CPU {r1 - r0:.2f} s "
          f"(the daemon's figure includes ~2 status requests/s of this script)")


if __name__ == "__main__":
    main()
