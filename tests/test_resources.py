"""The daemon is idle when nothing happens, and leaks nothing across crash/restart cycles."""

from __future__ import annotations

import time

from conftest import children_of, fd_count, wait_until
from timeouts import TIMEOUT

QUIET = 100
IDLE_WINDOW = 10.0  # seconds: the measurement window of the issue, not a synchronisation
CYCLES = 200


def _ctx_switches(pid: int) -> int:
    total = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                total += int(line.split()[1])
            elif line.startswith("Threads:"):
                assert int(line.split()[1]) == 1, "the daemon is one thread"
    return total


def test_idle_with_100_quiet_services(sup):
    daemon = sup.pid
    with sup.client() as c:
        answers = c.pipeline([("create-service", {"path": "/bin/sleep", "args": ["100000"]})
                              for _ in range(QUIET)])
        assert all(a["status"] == "RUNNING" for a in answers)
        assert sum(s["status"] == "RUNNING" for s in c.list_supervisor()["services"]) == QUIET
    before = _ctx_switches(daemon)
    time.sleep(IDLE_WINDOW)  # measure: nobody talks to the daemon, nothing happens
    grew = _ctx_switches(daemon) - before
    print(f"\ncontext switches of the daemon over {IDLE_WINDOW:g} s with {QUIET} services: "
          f"{grew}")
    assert grew <= 2


def test_another_instance_at_work_in_the_same_directory_wakes_no_idle_one(sup):
    """Instances share their runtime directory (/run/supervisor): the busy one's state
    saves, log and files come and go there; the idle one sleeps through them all (its
    socket watch is on its socket file, not the directory)."""
    from conftest import Supervisor

    idle = Supervisor(sup.rundir, 1)
    idle.ok("init", "-i", "1")
    try:
        idle.ok("create-service", "-i", "1", "/bin/sleep", "600")
        daemon = idle.pid

        def asleep() -> bool:  # no switch over a 0.2 s look: its own last turns are done
            before = _ctx_switches(daemon)
            time.sleep(0.2)
            return _ctx_switches(daemon) == before
        wait_until(asleep, what="the idle instance to sleep")
        before = _ctx_switches(daemon)
        with sup.client() as c:  # 100 state saves, each a file made and renamed there
            for i in range(50):
                c.create_service("/bin/true", [], name=f"t{i}")
                c.remove_service(f"t{i}")
        grew = _ctx_switches(daemon) - before
        print(f"\ncontext switches of an idle instance beside 100 saves of another: {grew}")
        assert grew <= 2
    finally:
        idle.ok("close", "-i", "1")


def test_200_crash_restart_cycles_leak_nothing(sup):
    daemon = sup.pid
    with sup.client() as c:
        c.create_service("/bin/sleep", ["600"], name="first")  # the log relay starts with it
        relay = [pid for pid, _ in children_of(daemon) if pid != c.service_status("first")["pid"]]
        baseline = fd_count(daemon)
        c.create_service("/bin/sh", ["-c", "echo crash; kill -SEGV $$"], name="crashy",
                         restart_times=CYCLES)
        svc = wait_until(lambda: (s := c.service_status("crashy"))["status"] == "CRASHED" and s,
                         timeout=TIMEOUT * 3, what=f"{CYCLES} restarts")
        assert svc["restarts"] == CYCLES and svc["signal"] == "SIGSEGV"
        left = [p for p in children_of(daemon) if p[0] not in relay]
        assert left == [(c.service_status("first")["pid"], "S")]  # no zombie, no stray
        # every pidfd closed; each run's pipes once the relay has read them (the daemon
        # looks each second while some still hold what a run wrote last)
        wait_until(lambda: fd_count(daemon) == baseline,
                   what=f"the daemon's fds back to {baseline}")
        c.remove_service("crashy")
        assert fd_count(daemon) == baseline
