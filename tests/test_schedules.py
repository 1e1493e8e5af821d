"""Schedules (--at, --every, --cron) and restart policies (--restart, --restart-delay,
--start-limit) with real timers and real processes."""

from __future__ import annotations

import datetime
import itertools
import json
import math
import statistics
import subprocess
import sys
import time
import uuid

import pytest
from conftest import ROOT, fd_count, kill_daemon, wait_until
from journald import journal_mark, wait_for_entry
from timeouts import TIMEOUT

STAMP = "date +%s.%N >> {file}"  # each start writes its wall-clock start time


def _starts(path) -> list[float]:
    return [float(x) for x in path.read_text().split()] if path.exists() else []


def test_every_fires_on_time_without_drift(sup, tmp_path):
    log = tmp_path / "starts"
    interval, firings = 0.25, 12
    svc = sup.json("create-service", "--every", "250ms", "-o", "null", "-n", "tick",
                   "/bin/sh", "--", "-c", STAMP.format(file=log))
    assert svc["next_start"] is not None
    wait_until(lambda: len(_starts(log)) >= firings, timeout=TIMEOUT + firings * interval,
               what=f"{firings} firings")
    starts = _starts(log)[:firings]
    base = min(s - k * interval for k, s in enumerate(starts))  # the grid, as best seen
    lateness = [s - (base + k * interval) for k, s in enumerate(starts)]
    print(f"\n--every 250ms: lateness per firing vs the first (ms): "
          f"{[round(x * 1000, 1) for x in lateness]}")
    # anchored firings: none early, no drift (the late ones are the toy's own start-up, on
    # a machine that runs other tests at the same time: one stall is not a drift)
    assert statistics.median(lateness) < 0.010 and max(lateness) < 0.100, lateness
    half = firings // 2
    drift = statistics.median(lateness[half:]) - statistics.median(lateness[:half])
    assert abs(drift) < 0.010, lateness
    between = sup.status("tick")
    assert between["status"] in ("PENDING", "EXITED", "RUNNING")
    assert between["next_start"] > time.time() - 0.05


def test_a_start_due_while_the_last_run_runs_is_skipped(sup, tmp_path):
    mark = journal_mark()
    log = tmp_path / "starts"
    name = f"slow-{uuid.uuid4().hex[:6]}"
    sup.ok("create-service", "--every", "200ms", "-o", "null", "-n", name, "/bin/sh", "--",
           "-c", f"{STAMP.format(file=log)}; sleep 0.5")
    wait_until(lambda: len(_starts(log)) >= 3, what="three runs")
    skipped = wait_for_entry(None, TIMEOUT, since=mark, SERVICE_NAME=name,
                             SUPERVISOR_EVENT="skipped")
    assert "still runs" in skipped["MESSAGE"]
    starts = _starts(log)
    assert all(b - a >= 0.5 for a, b in itertools.pairwise(starts))
    cancelled = sup.json("supervisor-cancel", name)  # ends the schedule
    assert cancelled["removed"] is (cancelled["status"] == "PENDING")
    if not cancelled["removed"]:  # it was running: that run ends, no other starts
        # (its stamp may come after the cancel: counted once it has ended)
        svc = sup.wait_status(name, "EXITED")
        count = len(_starts(log))
        assert svc["next_start"] is None
        time.sleep(0.5)  # a measurement window: more than two of its 200 ms periods
        assert sup.status(name)["status"] == "EXITED" and len(_starts(log)) == count


def test_at_fires_at_the_right_wall_clock_second(sup, tmp_path):
    log = tmp_path / "starts"
    target = math.ceil(time.time()) + 2
    when = datetime.datetime.fromtimestamp(target).strftime("%H:%M:%S")
    svc = sup.json("create-service", "--at", when, "-o", "null", "/bin/sh", "--", "-c",
                   STAMP.format(file=log))
    assert svc["status"] == "PENDING" and svc["next_start"] == target
    wait_until(lambda: _starts(log), what="the start")
    started = _starts(log)[0]
    print(f"\n--at {when}: started {1000 * (started - target):.1f} ms after the second")
    assert target <= started < target + 0.1


def test_at_hh_mm_is_in_the_zone_of_the_command(sup):
    """--at 08:00 is 08:00 where the command runs (its TZ), whatever the daemon's zone."""
    zone = datetime.timezone(datetime.timedelta(hours=14))  # far from any test machine's
    now = datetime.datetime.now(zone)
    due = now.replace(hour=8, minute=0, second=0, microsecond=0)
    if due <= now:
        due += datetime.timedelta(days=1)
    result = subprocess.run([sys.executable, "-m", "supervisor", "create-service", "--json",
                             "--at", "08:00", "-o", "null", "/bin/true"],
                            env={**sup.env, "TZ": "UTC-14"}, capture_output=True, text=True,
                            timeout=TIMEOUT, cwd=ROOT)
    assert result.returncode == 0, result
    assert json.loads(result.stdout)["next_start"] == due.timestamp()


@pytest.mark.slow
def test_cron_fires_at_the_right_wall_clock_second(sup, tmp_path):
    log = tmp_path / "starts"
    svc = sup.json("create-service", "--cron", "* * * * *", "-o", "null", "/bin/sh", "--",
                   "-c", STAMP.format(file=log))
    assert svc["status"] == "PENDING"
    due = svc["next_start"]
    assert due % 60 == 0 and 0 < due - time.time() <= 60
    wait_until(lambda: _starts(log), timeout=TIMEOUT + 60, what="the cron firing")
    started = _starts(log)[0]
    print(f"\n--cron '* * * * *': started {1000 * (started - due):.1f} ms after the minute")
    assert due <= started < due + 0.1
    assert sup.status(svc["name"])["next_start"] == due + 60


def test_start_limit_stops_a_crash_loop(sup):
    mark = journal_mark()
    name = f"loop-{uuid.uuid4().hex[:6]}"
    sup.ok("create-service", "--restart", "always", "--start-limit", "3/10s", "-o", "null",
           "-n", name, "/bin/sh", "--", "-c", "exit 1")
    svc = sup.wait_status(name, "CRASHED")
    # 3 starts (the first and 2 restarts) within 10 s: a 4th start is one too many
    assert svc["restarts"] == 2
    entry = wait_for_entry(None, TIMEOUT, since=mark, SERVICE_NAME=name,
                           SUPERVISOR_EVENT="crashed", PRIORITY=3)
    assert "start limit" in entry["MESSAGE"]


def test_unlimited_restarts_get_the_default_start_limit(sup):
    sup.ok("create-service", "--restart", "on-failure", "-o", "null", "-n", "loop",
           "/bin/sh", "--", "-c", "exit 2")
    svc = sup.wait_status("loop", "CRASHED")
    assert svc["restarts"] == 4  # DEFAULT_START_LIMIT: 5 starts in 10 s


def test_restart_back_off_grows(sup, tmp_path):
    log = tmp_path / "starts"
    sup.ok("create-service", "-r", "4", "--restart-delay", "0.1", "-o", "null", "-n", "b",
           "/bin/sh", "--", "-c", f"{STAMP.format(file=log)}; exit 1")
    svc = sup.wait_status("b", "CRASHED")
    assert svc["restarts"] == 4
    starts = _starts(log)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    print(f"\nback-off gaps (s): {[round(g, 3) for g in gaps]}")
    for gap, expected in zip(gaps, (0.1, 0.2, 0.4, 0.8), strict=True):
        # never early; late by less than the next step of the back-off (a loaded VM
        # stalled one start by 0.35 s once: a noisy neighbour, not a wrong delay)
        assert expected <= gap < expected * 2


def test_restart_always_restarts_after_success_and_pending_shows_next_start(sup):
    svc = sup.json("create-service", "--restart", "always", "-r", "2", "--restart-delay",
                   "0.5", "-o", "null", "/bin/true")
    pending = sup.wait_status(svc["name"], "PENDING")
    assert pending["next_start"] > time.time() - 0.1
    done = sup.wait_status(svc["name"], "EXITED")
    assert done["restarts"] == 2


def test_bad_schedule_options_are_usage_errors(sup):
    for args, needle in ((["--every", "0s"], "interval"), (["--every", "5x"], "interval"),
                         # a floor, so that a schedule can never spin the daemon
                         (["--every", "0.000000000000000000001s"], "from 10ms"),
                         (["--every", "1ms"], "from 10ms"),
                         (["--cron", "61 * * * *"], "cron"),
                         (["--at", "2001-01-01T00:00:00"], "past"),
                         (["--at", "25:00"], "25:00"),
                         (["--restart", "sometimes"], "restart"),
                         (["--start-limit", "x/y"], "start limit"),
                         (["--every", "1s", "--cron", "@daily"], "one of"),
                         (["--restart", "never", "-r", "3"], "never")):
        r = sup.run("create-service", *args, "/bin/true")
        assert r.rc == 2, (args, r)
        assert needle in r.err.lower(), (args, r)
        assert r.err.count("\n") == 1
    assert sup.json("list-supervisor")["services"] == []


def test_10000_pending_schedules_cost_no_fds_and_no_wakeups(sup):
    daemon = sup.pid
    with sup.client() as c:
        c.ping()
        before = fd_count(daemon)
        far = time.time() + 3600
        answers = c.pipeline([("create-service", {"path": "/bin/true", "at": far + i,
                                                  "output": "null", "name": f"s{i}"})
                              for i in range(10_000)])
        assert all(a["status"] == "PENDING" for a in answers)
    # one timerfd per clock, made at start; the client's connection is gone once closed
    wait_until(lambda: fd_count(daemon) <= before - 1, what="no per-schedule fd")

    def switches() -> int:
        with open(f"/proc/{daemon}/status") as f:
            return sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)

    def asleep() -> bool:  # no switch over a 0.2 s look: its last turn (the close) is done
        seen = switches()
        time.sleep(0.2)
        return switches() == seen
    wait_until(asleep, what="the daemon to sleep")
    first = switches()
    time.sleep(2.0)  # a measurement window: nothing is due, nobody talks to the daemon
    assert switches() - first == 0


def test_schedules_survive_a_daemon_crash(sup, tmp_path):
    log = tmp_path / "starts"
    sup.ok("create-service", "--every", "300ms", "-o", "null", "-n", "tick", "/bin/sh", "--",
           "-c", STAMP.format(file=log))
    wait_until(lambda: len(_starts(log)) >= 2, what="two firings")
    kill_daemon(sup.pid)
    sup.ok("init", "-i", "0")
    count = len(_starts(log))
    wait_until(lambda: len(_starts(log)) >= count + 2, what="firings after recovery")
    assert sup.status("tick")["next_start"] is not None


@pytest.mark.parametrize("schedule", [
    ["--every", "2s"],
    pytest.param(["--cron", "* * * * *"], marks=pytest.mark.slow),  # minutes: the slow ones
])
def test_a_start_missed_while_no_daemon_ran_is_skipped_not_caught_up(sup, tmp_path,
                                                                       schedule):
    """The daemon is down (kill -9) across a start of a repeating job: the daemon taken
    back runs it at its next start on the grid, not at once as well (two runs 0.8 s apart
    on a 2 s interval, as cron would not)."""
    log = tmp_path / "starts"
    sup.ok("create-service", *schedule, "-o", "null", "-n", "job", "/bin/sh", "--", "-c",
           STAMP.format(file=log))
    wait_until(lambda: len(_starts(log)) >= 1 and sup.status("job")["status"] == "PENDING",
               timeout=TIMEOUT + 60, what="a first run, ended")
    missed = sup.status("job")["next_start"]
    kill_daemon(sup.pid)
    count = len(_starts(log))
    wait_until(lambda: time.time() > missed + 0.3, timeout=TIMEOUT + 60,
               what="the start to be missed")
    sup.ok("init", "-i", "0")
    after = sup.status("job")
    assert after["next_start"] > time.time()  # the next on the grid, to come
    interval = 2.0 if schedule[0] == "--every" else 60.0
    assert missed < after["next_start"] <= missed + interval + 0.05
    assert len(_starts(log)) == count  # and none now
    wait_until(lambda: len(_starts(log)) == count + 1, timeout=TIMEOUT + interval,
               what="the next start")
    assert _starts(log)[-1] == pytest.approx(after["next_start"], abs=0.5)
    # on the grid it had (an --every's is on CLOCK_BOOTTIME: the wall clock's next start
    # after now put it off its grid)
    phase = (_starts(log)[-1] - _starts(log)[0]) % interval
    assert min(phase, interval - phase) < 0.3, _starts(log)


def test_a_repeating_job_shows_the_restart_its_schedule_makes(sup, tmp_path):
    """--restart on-failure with --every: a failed run waits for the next start (the
    schedule's), and the service says it is not restarted, not on-failure."""
    log = tmp_path / "starts"
    svc = sup.json("create-service", "--every", "1h", "--restart", "on-failure", "-o",
                   "null", "-n", "job", "/bin/sh", "--", "-c",
                   STAMP.format(file=log) + "; exit 1")
    assert svc["restart"] == "never"
    after = wait_until(lambda: (s := sup.status("job"))["status"] == "PENDING"
                       and s["exit_code"] == 1 and s, what="the failed run to end")
    assert after["restarts"] == 0 and len(_starts(log)) == 1
    assert after["next_start"] == pytest.approx(_starts(log)[0] + 3600, abs=1)


def test_a_start_service_of_a_scheduled_job_leaves_its_schedule_where_it_was(sup, tmp_path):
    """start-service runs an --every job once more, now; its next start stays where the
    schedule put it -- also for the daemon that takes the service back after a crash
    (it re-arms from next_start: a next_start of "now" ran the job again at once)."""
    log = tmp_path / "starts"
    sup.ok("create-service", "--every", "1h", "-o", "null", "-n", "job", "/bin/sh", "--",
           "-c", STAMP.format(file=log))
    wait_until(lambda: len(_starts(log)) == 1 and sup.status("job")["status"] == "PENDING",
               what="the first run to end")
    scheduled = sup.status("job")["next_start"]
    assert scheduled == pytest.approx(_starts(log)[0] + 3600, abs=1)
    sup.ok("start-service", "job")
    wait_until(lambda: len(_starts(log)) == 2 and sup.status("job")["status"] == "PENDING",
               what="the extra run to end")
    assert sup.status("job")["next_start"] == pytest.approx(scheduled, abs=0.01)
    kill_daemon(sup.pid)
    sup.ok("init", "-i", "0")
    after = sup.status("job")
    assert after["status"] == "PENDING" and after["next_start"] == pytest.approx(scheduled,
                                                                                   abs=0.01)
    assert len(_starts(log)) == 2


def test_a_service_whose_starts_keep_failing_shows_why_not_an_old_exit_code(sup, tmp_path):
    prog = tmp_path / "once"
    prog.write_text("#!/bin/sh\nrm -- \"$0\"\nexit 3\n")  # runs once, then is gone
    prog.chmod(0o755)
    sup.ok("create-service", "-r", "5", "--start-limit", "2/60", "-o", "null", "-n", "once",
           str(prog))
    end = sup.wait_status("once", "CRASHED", timeout=TIMEOUT + 4)  # retried after 1 s
    assert end["exit_code"] is None and end["signal"] is None
    assert "No such file" in end["error"]
    assert "CRASHED (cannot start)" in sup.ok("list-supervisor").out


def test_a_restart_that_cannot_spawn_is_retried_until_it_can(sup, tmp_path):
    # the program disappears while its service waits to restart (a package upgrade, say):
    # the restart cannot spawn, yet the service is not CRASHED for good, whatever its
    # policy: it waits PENDING and retries with back-off until the program is back
    prog = tmp_path / "prog"
    prog.write_text("#!/bin/sh\nsleep 2\nexit 3\n")  # (ends once it is renamed away)
    prog.chmod(0o755)
    hidden = tmp_path / "prog.away"
    first = sup.json("create-service", "-r", "1", "-o", "null", "-n", "flaky", str(prog))
    prog.rename(hidden)
    seen = wait_until(lambda: (s := sup.status("flaky"))["restarts"] == 1
                      and s["status"] == "PENDING" and s, what="the failed restart")
    assert seen["next_start"] > time.time()  # a retry is armed
    hidden.rename(prog)
    back = sup.wait_status("flaky", "RUNNING", timeout=TIMEOUT + 8)
    assert back["pid"] != first["pid"] and back["restarts"] == 1
    assert sup.wait_status("flaky", "CRASHED", timeout=TIMEOUT)["exit_code"] == 3
