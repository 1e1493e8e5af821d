"""Changes made from outside show in the status within 100 ms (docs/reference.md,
"Statuses"), for created and for opened services: kill -STOP, kill -CONT, kill -9, a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from conftest import TEST_RESTART, state, wait_until

LIMIT = 0.100  # the spec's bar, in seconds


def _seen_after(sup, name: str, signo: int, pid: int, status: str) -> float:
    """Send ``signo`` to ``pid`` from outside; seconds until ``status`` shows."""
    with sup.client() as c:
        start = time.monotonic()
        os.kill(pid, signo)
        wait_until(lambda: c.service_status(name)["status"] == status,
                   what=f"{name} to show {status}")
        return time.monotonic() - start


@pytest.fixture
def stranger():
    """A process the daemon did not start."""
    proc = subprocess.Popen(["sleep", "120"])
    yield proc
    proc.kill()
    proc.wait()


def test_created_service_stop_continue_kill(sup):
    pid = sup.create("/bin/sleep", ["120"], name="c", restart_times=3)["pid"]
    assert _seen_after(sup, "c", signal.SIGSTOP, pid, "STOPPED") < LIMIT
    assert _seen_after(sup, "c", signal.SIGCONT, pid, "RUNNING") < LIMIT
    assert _seen_after(sup, "c", signal.SIGKILL, pid, "KILLED") < LIMIT
    svc = sup.status("c")
    assert svc["signal"] == "SIGKILL" and svc["restarts"] == 0  # killed: not restarted


def test_created_service_crash_from_outside_is_restarted(sup):
    pid = sup.create("/bin/sleep", ["120"], name="c", restart_times=1)["pid"]
    with sup.client() as c:
        start = time.monotonic()
        os.kill(pid, signal.SIGSEGV)
        svc = wait_until(lambda: (s := c.service_status("c"))["restarts"] == 1 and s,
                         what="the restart")
        took = time.monotonic() - start
    assert took < LIMIT
    assert svc["status"] == "RUNNING" and svc["pid"] != pid
    assert _seen_after(sup, "c", signal.SIGSEGV, svc["pid"], "CRASHED") < LIMIT
    assert sup.status("c")["signal"] == "SIGSEGV"


def test_created_service_real_segfault(sup):
    sup.create(TEST_RESTART, ["0.05"], name="segv")
    svc = sup.wait_status("segv", "CRASHED")
    assert svc["signal"] == "SIGSEGV"


def test_stopped_service_killed_from_outside(sup):
    pid = sup.create("/bin/sleep", ["120"], name="c")["pid"]
    assert _seen_after(sup, "c", signal.SIGSTOP, pid, "STOPPED") < LIMIT
    assert _seen_after(sup, "c", signal.SIGKILL, pid, "KILLED") < LIMIT


def test_opened_service_stop_continue_kill(sup, stranger):
    sup.ok("open-service", str(stranger.pid), "-n", "o")
    assert _seen_after(sup, "o", signal.SIGSTOP, stranger.pid, "STOPPED") < LIMIT
    assert _seen_after(sup, "o", signal.SIGCONT, stranger.pid, "RUNNING") < LIMIT
    # the exit shows through the pidfd even before the parent reaps it
    assert _seen_after(sup, "o", signal.SIGKILL, stranger.pid, "EXITED") < LIMIT
    gone = sup.status("o")
    assert gone["exit_code"] is None and gone["signal"] == "SIGKILL"


def test_opened_service_crash(sup, stranger):
    sup.ok("open-service", str(stranger.pid), "-n", "o")
    assert _seen_after(sup, "o", signal.SIGSEGV, stranger.pid, "EXITED") < LIMIT


def test_opened_service_suspend_resume_close_by_us(sup, stranger):
    sup.ok("open-service", str(stranger.pid), "-n", "o")
    assert sup.json("suspend-service", "o")["status"] == "STOPPED"
    wait_until(lambda: state(stranger.pid) == "T", what="the stop")
    assert sup.json("resume-service", "o")["status"] == "RUNNING"
    wait_until(lambda: state(stranger.pid) != "T", what="the continue")
    assert sup.json("close-service", "o")["status"] == "KILLED"
    assert stranger.wait(timeout=10) == -signal.SIGKILL
    assert sup.wait_status("o", "KILLED")["opened"] is True


def test_a_stop_whose_sigchld_was_lost_behind_an_end_is_seen(sup):
    """Signals of one kind do not queue: a child that stops while the SIGCHLD of another
    child's end is still pending sends none of its own. The daemon, which drains stops at
    once only for a SIGCHLD that says stop or continue (an end's is drained a moment
    later, off the path of the restart it starts: daemon.DRAIN_AFTER_END), still sees it."""
    ends = sup.create("/bin/sleep", ["120"], name="ends", output="null")["pid"]
    stops = sup.create("/bin/sleep", ["121"], name="stops", output="null")["pid"]
    daemon = sup.pid
    os.kill(daemon, signal.SIGSTOP)  # its SIGCHLD stays pending while it cannot read
    try:
        os.kill(ends, signal.SIGKILL)
        wait_until(lambda: state(ends) in ("Z", None), what="the end")
        os.kill(stops, signal.SIGSTOP)
        wait_until(lambda: state(stops) == "T", what="the stop")
    finally:
        os.kill(daemon, signal.SIGCONT)
    wait_until(lambda: sup.status("stops")["status"] == "STOPPED", what="the stop seen")
    assert sup.status("ends")["status"] == "KILLED"
    os.kill(stops, signal.SIGCONT)
    sup.ok("stop-service", "stops")
