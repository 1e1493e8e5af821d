"""Crash recovery after kill -9 of the daemon, and live re-exec in place."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from conftest import (
    TEST_RESTART,
    Supervisor,
    alive,
    children_of,
    fd_targets,
    kill_daemon,
    marked,
    read_state,
    state,
    wait_until,
    write_state,
)
from journald import journal_mark, wait_for_entry
from timeouts import TIMEOUT

from supervisor.client import Client, NotRunning
from supervisor.process import comm
from supervisor.process import proc_stat as process_stat
from supervisor.state import start_ticks


def test_services_come_back_after_kill_9(sup, tmp_path):
    # doomed and once end while no daemon watches: a failure (restarted by its policy) and
    # a success (EXITED) -- the same whether the next daemon can learn how they ended or not
    go = tmp_path / "go"
    os.mkfifo(go)
    keep = sup.create("/bin/sleep", ["600"], name="keep", restart_times=3)
    doomed = sup.create("/bin/sh", ["-c", f"read x < {go}; exit 3"], name="doomed",
                        restart_times=2)
    once = sup.create("/bin/sh", ["-c", f"read x < {go}; exit 0"], name="once")
    later = sup.create("/bin/sleep", ["600"], name="later", delay=6)  # (after the listing)
    sup.create("/bin/sh", ["-c", "exit 4"], name="failed")
    sup.wait_status("failed", "CRASHED")
    sup.ok("suspend-service", "keep")
    old = kill_daemon(sup.pid)
    assert alive(keep["pid"])  # services outlive their supervisor
    with open(go, "w") as f:  # die while nobody watches
        f.write("go\ngo\n")
    wait_until(lambda: not alive(doomed["pid"]) and not alive(once["pid"]), what="deaths")
    start = time.monotonic()
    sup.ok("init", "-i", "0")
    listing = {s["name"]: s for s in sup.json("list-supervisor")["services"]}
    recovery = time.monotonic() - start
    print(f"\nrecovery after kill -9: {recovery * 1000:.0f} ms (init to full listing)")
    assert sup.pid != old
    assert set(listing) == {"keep", "doomed", "once", "later", "failed"}
    assert listing["keep"]["pid"] == keep["pid"]  # re-adopted, not restarted
    assert listing["keep"]["status"] == "STOPPED"  # read from /proc
    assert listing["keep"]["restarts"] == 0
    assert listing["doomed"]["restarts"] == 1  # its policy restarts it
    assert listing["doomed"]["status"] == "RUNNING"
    assert listing["doomed"]["pid"] != doomed["pid"]
    assert listing["once"]["status"] == "EXITED"  # a success: not restarted
    assert listing["failed"]["status"] == "CRASHED"
    assert listing["failed"]["exit_code"] == 4
    assert listing["later"]["status"] == "PENDING"
    assert abs(listing["later"]["next_start"] - later["next_start"]) < 0.01
    # the re-adopted process is watched again: resume it, make it crash from outside (not
    # our child any more, yet known to have crashed: restarted by its policy)
    sup.ok("resume-service", "keep")
    wait_until(lambda: state(keep["pid"]) != "T", what="the resume")
    os.kill(keep["pid"], signal.SIGSEGV)
    back = wait_until(lambda: (s := sup.status("keep"))["restarts"] == 1 and s,
                      what="the restart of the re-adopted service")
    assert back["status"] == "RUNNING" and back["pid"] != keep["pid"]
    sup.wait_status("later", "RUNNING")


def test_a_reused_pid_is_never_taken_for_ours(sup):
    svc = sup.create("/bin/sleep", ["600"], name="victim", restart_times=1)
    stranger = subprocess.Popen(["sleep", "600"])
    try:
        kill_daemon(sup.pid)
        state_file = _whole_state(sup)
        with open(state_file) as f:
            doc = json.load(f)
        [entry] = doc["services"]
        # pretend the service's pid now belongs to another process: same pid number, a
        # different start time (what a reused pid looks like)
        entry["pid"] = entry["pids"][-1] = stranger.pid
        entry["start_ticks"] = start_ticks(stranger.pid) - 100  # ours started 1 s earlier
        with open(state_file, "w") as f:
            json.dump(doc, f)
        sup.ok("init", "-i", "0")
        now = sup.status("victim")
        assert now["pid"] != stranger.pid and now["restarts"] == 1
        assert stranger.poll() is None  # never signalled, never adopted
        sup.ok("close-service", "victim")
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
        if alive(svc["pid"]):
            os.kill(svc["pid"], signal.SIGKILL)


def test_clean_close_leaves_nothing_to_recover(rundir):
    s = Supervisor(rundir, 2)
    s.ok("init", "-i", "2")
    s.create("/bin/sleep", ["600"], name="x")
    assert os.path.exists(os.path.join(rundir, "2.state.json"))
    s.ok("close", "-i", "2")
    assert not os.path.exists(os.path.join(rundir, "2.state.json"))
    s.ok("init", "-i", "2")
    assert s.json("list-supervisor", "-i", "2")["services"] == []
    s.ok("close", "-i", "2")


def _hand_pid_over(sup, old: str, new: str) -> int:
    """Start ``old`` and stop it, then start ``new`` until the kernel hands it the pid
    ``old``'s process had (the last pid given out set just below it): that pid. Another
    process may take the pid first and keep it (seen: a kernel worker thread,
    ``[kworker/0:0]``, made right then; 50 tries in a row missed it, once in ~50 runs of
    the fallback suite): then all again with ``old``'s next pid."""
    with sup.client() as c:
        for _ in range(20):
            pid = c.start_service(old)["services"][0]["pid"]
            c.stop_service(old)
            for _ in range(10):
                with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                    f.write(str(pid - 1))
                if c.start_service(new)["services"][0]["pid"] == pid:
                    return pid
                c.stop_service(new)
                if os.path.exists(f"/proc/{pid}"):
                    break  # another process has it now: a new pid of old's
    pytest.fail(f"{new} never got a pid {old} had")


@pytest.mark.parametrize("how", ["reload", "kill -9"])
def test_a_pid_given_out_again_names_the_service_that_has_it_after_recovery(sup, how):
    # "later" once had pid X; "first" (taken back before it: made first) has X now
    sup.create("/bin/sleep", ["600"], name="first")
    sup.ok("stop-service", "first")
    sup.create("/bin/sleep", ["600"], name="later")
    sup.ok("stop-service", "later")
    x = _hand_pid_over(sup, "later", "first")
    assert sup.status(x)["name"] == "first"
    if how == "reload":
        sup.ok("reload", "-i", "0")
    else:
        kill_daemon(sup.pid)
        sup.ok("init", "-i", "0")
    assert sup.status(x)["name"] == "first"
    assert sup.status("first")["pid"] == x  # re-adopted, not restarted
    sup.ok("signal-service", str(x), "TERM")  # acts on the one that has it
    assert sup.wait_status("first", "KILLED")["signal"] == "SIGTERM"
    assert sup.status("later")["status"] == "EXITED"


def test_a_daemon_started_with_a_relative_runtime_dir_keeps_it_across_a_reload(rundir):
    """supervisor-daemon run by hand in the directory that holds its relative
    SUPERVISOR_RUNTIME_DIR: it goes to "/" after binding, and a reload (a re-exec there)
    must not take the relative path from "/" (it made /<dir> and wrote its state there)."""
    name = os.path.basename(rundir)  # not a directory of "/": sv-XXXXXXXX
    assert not os.path.exists(os.path.join("/", name))
    sup = Supervisor(rundir)
    daemon = subprocess.Popen([sys.executable, "-m", "supervisor.daemon", "-i", "0"],
                              cwd=os.path.dirname(rundir),
                              env={**os.environ, "SUPERVISOR_RUNTIME_DIR": name},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: os.path.exists(os.path.join(rundir, "0.sock")),
                   what="the daemon's socket")
        wait_until(lambda: sup.run("service-status", "x").rc == 1, what="it to answer")
        sup.create("/bin/sleep", ["600"], name="kept")
        sup.ok("reload", "-i", "0")
        sup.ok("reload", "-i", "0")  # the re-exec'd one re-executes again
        assert not os.path.exists(os.path.join("/", name))
        assert sup.status("kept")["status"] == "RUNNING"
        # saved where it runs
        assert [s["name"] for s in read_state(rundir)["services"]] == ["kept"]
    finally:
        sup.run("close", "-i", "0")
        daemon.wait(TIMEOUT)
        shutil.rmtree(os.path.join("/", name), ignore_errors=True)  # the bug's, if any


def test_reload_keeps_pid_services_and_children(sup):
    daemon = sup.pid
    kid = sup.create("/bin/sleep", ["600"], name="kid")
    sup.create("/bin/sleep", ["600"], name="later", delay=2)
    out = sup.ok("reload", "-i", "0").out
    assert f"re-executed (pid {daemon}, generation 1" in out
    after = sup.status("kid")
    assert after["pid"] == kid["pid"] and after["restarts"] == 0
    # still our child, alive (asleep, or still starting under load), not a zombie
    assert dict(children_of(daemon)).get(kid["pid"]) in ("S", "R")
    os.kill(kid["pid"], signal.SIGTERM)
    gone = sup.wait_status("kid", "KILLED")
    assert gone["signal"] == "SIGTERM"  # a child's exit status, so known
    os.kill(daemon, signal.SIGHUP)  # SIGHUP does the same
    wait_until(lambda: sup.json("list-supervisors")["supervisors"][0]["generation"] == 2,
               what="the second re-exec")
    assert sup.wait_status("later", "RUNNING")["restarts"] == 0
    def fds():
        """The daemon's fds but client connections (sockets come and go with clients)."""
        return sorted(link.split(":")[0] for link in fd_targets(daemon))

    before = fds()
    sup.ok("reload", "-i", "0")
    assert [k for k in fds() if k != "socket"] == [k for k in before if k != "socket"]
    # sockets: the listener, the relay's, the journal's; clients gone once they hang up
    wait_until(lambda: fds().count("socket") <= before.count("socket"),
               what=f"no more sockets than {before}")


def test_clients_see_no_failed_request_across_reloads(sup):
    sup.create("/bin/sleep", ["600"], name="steady")
    failures: list[str] = []
    answered = [0]
    stop = threading.Event()

    def hammer(one_connection: bool) -> None:
        c = Client(0, runtime_dir=sup.rundir, timeout=TIMEOUT)
        try:
            while not stop.is_set():
                try:
                    if not one_connection:
                        c.close()
                    assert c.service_status("steady")["status"] == "RUNNING"
                    answered[0] += 1
                except (NotRunning, AssertionError, OSError) as exc:
                    failures.append(repr(exc))
        finally:
            c.close()

    threads = [threading.Thread(target=hammer, args=(flag,)) for flag in (True, False)]
    for t in threads:
        t.start()
    try:
        for generation in range(1, 6):
            before = answered[0]
            wait_until(lambda b=before: answered[0] > b + 20, what="requests flowing")
            with Client(0, runtime_dir=sup.rundir, timeout=TIMEOUT) as c:
                assert c.reload()["generation"] == generation
    finally:
        stop.set()
        for t in threads:
            t.join(TIMEOUT)
    print(f"\n{answered[0]} requests across 5 re-execs, {len(failures)} failed")
    assert failures == []
    assert sup.status("steady")["restarts"] == 0


def test_kill_9_during_mutations_loses_nothing_and_leaves_no_orphan(sup):
    """50 rounds: a client creates and removes services as fast as it can, the daemon is
    killed (-9) after a random number of its answers, `init` starts the next one. No
    acknowledged service is lost, none acknowledged as removed comes back, and no process
    of ours runs that no service claims (one spawned before its state was saved is found
    in its cgroup and killed at start). See docs/design.md, "Crash recovery"."""
    import random

    rng = random.Random(11)
    token = str(10**11 + rng.randrange(10**11))  # in every service's command line
    expected: set[str] = set()  # acknowledged, not acknowledged as removed
    lost = orphans = 0
    serial = itertools.count()
    for _round in range(50):
        stop, answers, removing = threading.Event(), itertools.count(), set()
        worker = threading.Thread(target=_mutate, args=(sup, token, serial, expected, stop,
                                                        answers, removing, rng.random()))
        worker.start()
        at = rng.randrange(1, 12)
        wait_until(lambda at=at, answers=answers, worker=worker:
                   _peek(answers) >= at or not worker.is_alive(), what="the client's answers")
        kill_daemon(sup.pid)
        stop.set()
        worker.join(TIMEOUT)
        sup.ok("init", "-i", "0")
        listing = {s["name"]: s for s in sup.json("list-supervisor")["services"]}
        lost += len(expected - set(listing) - removing)  # a remove in flight may have run
        # in-flight creates may or may not have made it; their processes must not outlive
        # them unclaimed
        claimed = {s["pid"] for s in listing.values()}
        with contextlib.suppress(AssertionError):
            wait_until(lambda claimed=claimed: set(marked(token)) <= claimed,
                       what="unclaimed processes to be killed")
        orphans += len(set(marked(token)) - claimed)
        expected &= set(listing)  # in-flight removes may have made it too
    print(f"\n50 kill -9 rounds during create/remove: {lost} acknowledged services lost, "
          f"{orphans} orphan processes")
    assert lost == 0 and orphans == 0
    sup.ok("close", "-i", "0")
    wait_until(lambda: not marked(token), what="close to end every service")


def _peek(counter: itertools.count) -> int:
    """How far an itertools.count has gone, without moving it."""
    return int(repr(counter)[6:-1])


def _mutate(sup, token, serial, expected, stop, answers, removing, seed) -> None:
    """Create and remove services until ``stop`` or the daemon dies; every answer counts
    in ``answers``; ``expected`` holds what was acknowledged and not removed, ``removing``
    the service whose removal was asked and not yet answered."""
    import random

    from supervisor.client import SupervisorError

    rng = random.Random(seed)
    try:
        with sup.client() as c:
            while not stop.is_set():
                name = f"m{next(serial)}"
                c.create_service("/bin/sleep", ["3600", f"0.{token}"], name=name,
                                 output="null")
                expected.add(name)
                next(answers)
                if rng.random() < 0.5:
                    victim = rng.choice(sorted(expected))
                    removing.add(victim)
                    c.remove_service(victim)
                    expected.discard(victim)
                    removing.discard(victim)
                    next(answers)
    except SupervisorError:
        pass  # the daemon died under us


def _whole_state(sup: Supervisor) -> str:
    """The path of the state file a killed daemon left, made to hold its whole state (its
    log folded in, and removed): for a test that changes it before the next daemon."""
    write_state(sup.rundir, read_state(sup.rundir))
    return os.path.join(sup.rundir, "0.state.json")


def _init_on(sup, path: str, data: bytes) -> dict:
    """A new daemon started on the state file ``data``: its state-error journal entry."""
    with open(path, "wb") as f:
        f.write(data)
    mark = journal_mark()
    sup.ok("init", "-i", "0")
    return wait_for_entry(since=mark, SYSLOG_IDENTIFIER="supervisor",
                          SUPERVISOR_EVENT="state-error")


def test_another_runtime_directorys_state_file_is_set_aside_not_taken(sup, tmp_path):
    """A state file copied from another runtime directory (same instance, same boot) names
    that daemon's services, with pids and start times that match: set aside, never taken
    back -- before, this daemon adopted them (two daemons supervising one pid) and its
    close killed them."""
    other_dir = tempfile.mkdtemp(prefix="sv-", dir="/tmp")
    other = Supervisor(other_dir)
    try:
        other.ok("init", "-i", "0")
        theirs = other.create("/bin/sleep", ["600"], name="theirs")
        kill_daemon(sup.pid)
        shutil.copyfile(os.path.join(other_dir, "0.state.json"),
                        os.path.join(sup.rundir, "0.state.json"))
        mark = journal_mark()
        sup.ok("init", "-i", "0")
        entry = wait_for_entry(since=mark, SYSLOG_IDENTIFIER="supervisor",
                               SUPERVISOR_EVENT="state-error")
        assert "another runtime directory's" in entry["MESSAGE"], entry["MESSAGE"]
        assert sup.json("list-supervisor")["services"] == []
        assert other.status("theirs")["pid"] == theirs["pid"]
        assert alive(theirs["pid"])
    finally:
        other.run("close", "-i", "0", timeout=TIMEOUT + 10)
        shutil.rmtree(other_dir, ignore_errors=True)


@pytest.mark.parametrize("damage", ["truncated", "ill-typed", "not-a-state", "no-boot"])
def test_a_damaged_state_file_is_set_aside_and_the_daemon_starts(sup, damage):
    """A state file the daemon cannot trust is moved aside (kept for a look), journaled at
    err with the reason, and the daemon starts all the same. Not a word of it is used, but
    the services it described are not lost: each one's process, found in its cgroup, is
    taken back opened (watched, never started again: how to start it was in the file).
    Before, they were killed."""
    kept = sup.create("/bin/sleep", ["600"], name="kept", output="null")
    kill_daemon(sup.pid)
    path = _whole_state(sup)
    with open(path, "rb") as f:
        data = f.read()
    if damage == "truncated":
        data = data[:len(data) // 2]
    elif damage == "ill-typed":
        doc = json.loads(data)
        doc["services"][0]["restarts"] = "many"
        data = json.dumps(doc).encode()
    elif damage == "no-boot":  # which boot its pids are of, unknown
        doc = json.loads(data)
        del doc["boot_id"]
        data = json.dumps(doc).encode()
    else:
        data = b'{"hello": "world"}'
    entry = _init_on(sup, path, data)
    assert int(entry["PRIORITY"]) == 3
    assert "set aside" in entry["MESSAGE"]
    aside = [e for e in os.listdir(sup.rundir) if e.startswith("0.state.json.bad-")]
    assert len(aside) == 1
    with open(os.path.join(sup.rundir, aside[0]), "rb") as f:
        assert f.read() == data
    [back] = sup.json("list-supervisor")["services"]
    assert (back["name"], back["pid"], back["status"], back["opened"]) == \
        ("kept", kept["pid"], "RUNNING", True)
    assert back["command"] == ["/bin/sleep", "600"] and alive(kept["pid"])
    sup.ok("create-service", "-n", "fresh", "-o", "null", "/bin/sleep", "600")  # it works
    sup.ok("stop-service", "kept")  # and what was found is the daemon's to stop
    wait_until(lambda: not alive(kept["pid"]), what="the found service to stop")
    assert sup.status("kept")["status"] == "EXITED"


@pytest.mark.parametrize("damage", ["ill-typed", "claims-anothers-cgroup", "deep-definition",
                                    "deep-zone", "running-not-alive"])
def test_one_bad_service_entry_costs_only_that_service(sup, damage):
    """One entry of the state file that cannot be trusted is left out (its process, found
    in its cgroup, is taken back opened); the others are taken back as they were, the file
    is set aside for a look, and what was taken back is on disk again at once. An entry
    that claims another's cgroup must not get that other killed; one whose checks go
    deeper than Python's stack (a definition of [[[...]]], a time zone x/x/x/...) is as
    bad as any (before, the daemon could not start while it was there); one RUNNING with
    no process is a contradiction (before, taken back so: its process swept as unclaimed,
    and a stop-service of it never answered)."""
    good = sup.create("/bin/sleep", ["600"], name="good", output="null")
    bad = sup.create("/bin/sleep", ["601"], name="bad", output="null")
    kill_daemon(sup.pid)
    path = _whole_state(sup)
    with open(path) as f:
        doc = json.load(f)
    [entry] = [e for e in doc["services"] if e["name"] == "bad"]
    if damage == "ill-typed":
        entry["pid"], why = "not a pid", "'pid' is 'not a pid'"
    elif damage == "deep-definition":
        entry["definition"], why = "[" * 100_000 + "]" * 100_000, "'definition' is"
    elif damage == "deep-zone":
        entry["schedule"] = {"kind": "cron", "cron": "*/5 * * * *", "tz": "x/" * 2000 + "y"}
        why = "bad schedule"
    elif damage == "running-not-alive":
        entry["alive"], why = False, "RUNNING with no process"
    else:
        [theirs] = [e["cgroup"] for e in doc["services"] if e["name"] == "good"]
        assert theirs is not None  # the daemon made cgroups: the case to test
        entry["cgroup"], why = theirs, "claimed by another service too"
    data = json.dumps(doc).encode()
    error = _init_on(sup, path, data)
    assert "1 of 2 services cannot be trusted" in error["MESSAGE"]
    assert why in error["MESSAGE"] and "set aside" in error["MESSAGE"]
    back = sup.status("good")
    assert back["status"] == "RUNNING" and back["pid"] == good["pid"] and alive(good["pid"])
    listing = {s["name"]: s for s in sup.json("list-supervisor")["services"]}
    assert set(listing) == {"good", "bad"} and listing["good"]["opened"] is False
    assert (listing["bad"]["pid"], listing["bad"]["opened"]) == (bad["pid"], True)
    assert alive(bad["pid"])
    [aside] = [e for e in os.listdir(sup.rundir) if e.startswith("0.state.json.bad-")]
    with open(os.path.join(sup.rundir, aside), "rb") as f:
        assert f.read() == data
    assert sorted(e["name"] for e in read_state(sup.rundir)["services"]) == ["bad", "good"]
    sup.ok("stop-service", "bad")  # opened: a close would leave it running
    wait_until(lambda: not alive(bad["pid"]), what="the found service to stop")


def test_a_service_found_with_no_state_is_one_service_with_its_children(sup, tmp_path):
    """The state file removed while no daemon ran: the service's cgroup holds its shell
    and the child that shell started. One service is taken back, on the oldest process
    (the shell), opened, the child left running beside it; a second crash takes it back
    from the state file written at once; when the shell ends, the child goes too, as for
    any service."""
    left = tmp_path / "left"
    sup.create("/bin/sh", ["-c", f"sleep 600 & echo $! > {left}; wait"], name="tree",
               output="null")
    wait_until(lambda: left.exists() and left.read_text().strip(), what="the child")
    child, shell = int(left.read_text()), sup.status("tree")["pid"]
    kill_daemon(sup.pid)
    os.unlink(os.path.join(sup.rundir, "0.state.json"))
    sup.ok("init", "-i", "0")
    [back] = sup.json("list-supervisor")["services"]
    assert (back["name"], back["pid"], back["opened"]) == ("tree", shell, True)
    assert alive(child)
    kill_daemon(sup.pid)
    sup.ok("init", "-i", "0")
    [back] = sup.json("list-supervisor")["services"]
    assert (back["name"], back["pid"], back["opened"]) == ("tree", shell, True)
    os.kill(shell, signal.SIGKILL)
    wait_until(lambda: sup.status("tree")["status"] == "EXITED", what="the end seen")
    wait_until(lambda: not alive(child), what="what it left to be killed")


def test_a_service_restarted_into_a_new_cgroup_is_not_found_again(sup):
    """A partly bad state file: a service taken back from its good entry, whose cgroup is
    ``svc-web~2`` (it was restarted after a kill), is not also found there as an opened
    service (one process, two services: its end seen by one, the other stuck)."""
    web = sup.create("/bin/sh", ["-c", "sleep 600 & wait"], name="web", output="null",
                     restart="always")  # what it leaves, killed: its next cgroup is new
    sup.create("/bin/sleep", ["601"], name="db", output="null")
    wait_until(lambda: children_of(web["pid"]), what="web's child")
    os.kill(web["pid"], signal.SIGKILL)
    wait_until(lambda: sup.status("web")["pid"] not in (None, web["pid"]),
               what="web to restart")
    pid = sup.status("web")["pid"]
    kill_daemon(sup.pid)
    _edit_state(sup, lambda doc: [e.update(restarts=-1) for e in doc["services"]
                                  if e["name"] == "db"])
    sup.ok("init", "-i", "0")
    listing = {s["name"]: s for s in sup.json("list-supervisor")["services"]}
    assert set(listing) == {"web", "db"} and listing["web"]["pid"] == pid
    sup.ok("restart-service", "web")
    assert sup.status("web")["pid"] != pid
    sup.ok("stop-service", "db")


def test_a_service_named_like_a_later_cgroup_is_found_under_its_own_name(sup):
    """A service called ``web.2`` (no ``web``) has the cgroup ``svc-web.2``, which was
    also the name of web's second cgroup: found with no state, it comes back as web.2
    (web's later cgroups are ``svc-web~<k>`` now). Before, it came back as web."""
    svc = sup.create("/bin/sleep", ["600"], name="web.2", output="null")
    kill_daemon(sup.pid)
    os.unlink(os.path.join(sup.rundir, "0.state.json"))
    sup.ok("init", "-i", "0")
    [back] = sup.json("list-supervisor")["services"]
    assert (back["name"], back["pid"], back["opened"]) == ("web.2", svc["pid"], True)
    sup.ok("stop-service", "web.2")


def test_what_a_service_left_when_it_ended_with_no_daemon_is_not_found_as_it(sup, tmp_path):
    """The service's own process ended while no daemon ran, and its child lives on in the
    cgroup: with no state, that child is not taken for the service (it leads no session:
    the spawn's setsid made the service's process the leader) but killed, as the daemon
    would have killed it on seeing the end. Before, it came back as the service."""
    left = tmp_path / "left"
    svc = sup.create("/bin/sh", ["-c", f"sleep 600 & echo $! > {left}; wait"], name="tree",
                     output="null")
    wait_until(lambda: left.exists() and left.read_text().strip(), what="the child's pid")
    child = int(left.read_text())
    kill_daemon(sup.pid)
    os.kill(svc["pid"], signal.SIGKILL)
    wait_until(lambda: not alive(svc["pid"]), what="the service's process to end")
    assert alive(child)
    os.unlink(os.path.join(sup.rundir, "0.state.json"))
    mark = journal_mark()
    sup.ok("init", "-i", "0")
    assert sup.json("list-supervisor")["services"] == []
    wait_until(lambda: not alive(child), what="what it left to be killed")
    swept = wait_for_entry(since=mark, SYSLOG_IDENTIFIER="supervisor",
                           SUPERVISOR_EVENT="orphans-killed")
    assert "killed 1 processes" in swept["MESSAGE"], swept["MESSAGE"]


def test_the_service_a_cgroup_is_of():
    """``svc-web~2`` is the cgroup of web's start after a kill (``~`` is in no service's
    name), ``svc-web.2`` a service called web.2's; a name taken already, or no name at
    all, is not used."""
    from supervisor.found import name_of

    assert name_of("svc-web", set()) == "web"
    assert name_of("svc-web~2", set()) == "web"
    assert name_of("svc-web.2", set()) == "web.2"
    assert name_of("svc-web~2", {"web"}) is None
    assert name_of("svc-a.b~13", set()) == "a.b"
    assert name_of("svc-a~b", set()) is None  # no start of a service: not a name
    assert name_of("svc-12", set()) is None  # it would read as a pid
    assert name_of("svc-..", set()) is None


@pytest.mark.parametrize("ino", ["recorded", "unknown"])
@pytest.mark.parametrize("kind", ["created", "opened"])
def test_a_stranger_with_the_same_pid_and_start_time_is_not_adopted(sup, kind, ino):
    """What a pid namespace allows: after a crash of the daemon, an unrelated process has
    the service's pid *and* the same start time in 10 ms ticks. Its pidfs inode is not the
    one recorded; where none was (a kernel before 6.9, a document of an older version), a
    created service's process must also be in the service's cgroup, an opened one must
    have the same command line: the stranger is neither adopted nor signalled."""
    if kind == "created":
        svc = sup.create("/bin/sleep", ["600"], name="victim", restart_times=1,
                         output="null")
    else:
        mine = subprocess.Popen(["sleep", "601"])
        svc = sup.json("open-service", str(mine.pid), "-n", "victim")
    stranger = subprocess.Popen(["sleep", "602"])
    try:
        kill_daemon(sup.pid)
        state_file = _whole_state(sup)
        with open(state_file) as f:
            doc = json.load(f)
        [entry] = doc["services"]
        entry["pid"] = entry["pids"][-1] = stranger.pid
        entry["start_ticks"] = start_ticks(stranger.pid)  # the very same tick
        assert isinstance(entry["pidfd_ino"], int)
        if ino == "unknown":
            del entry["pidfd_ino"]
        with open(state_file, "w") as f:
            json.dump(doc, f)
        sup.ok("init", "-i", "0")
        now = sup.status("victim")
        assert now["pid"] != stranger.pid or now["status"] not in ("RUNNING", "STOPPED")
        if kind == "created":
            assert now["restarts"] == 1  # seen ended, restarted by its policy
            sup.ok("close-service", "victim")
        else:
            assert now["status"] == "EXITED"  # released, never adopted
            with contextlib.suppress(AssertionError):
                sup.ok("close-service", "victim")
        assert stranger.poll() is None  # never signalled
    finally:
        stranger.kill()
        stranger.wait()
        if kind == "opened":
            mine.kill()
            mine.wait()
        elif alive(svc["pid"]):
            os.kill(svc["pid"], signal.SIGKILL)


def test_re_adopted_services_end_as_they_really_ended(sup, tmp_path):
    """After a crash of the daemon its services are not its children any more, yet how
    they end is known (PIDFD_INFO_EXIT, or the zombie's status while their new parent has
    not reaped them), and their policies act on the truth: one killed with SIGKILL is
    KILLED (never restarted), one that exits 0 under on-failure is EXITED, one that fails
    is restarted."""
    fifos = {}
    for name in ("ok", "fails"):
        fifos[name] = tmp_path / name
        os.mkfifo(fifos[name])
    code = {"ok": 0, "fails": 3}
    for name in ("ok", "fails"):
        sup.create("/bin/sh", ["-c", f"read x < {fifos[name]}; exit {code[name]}"],
                   name=name, restart_times=2, output="null")
    killed = sup.create("/bin/sleep", ["600"], name="killed", restart_times=2, output="null")
    kill_daemon(sup.pid)
    sup.ok("init", "-i", "0")
    os.kill(killed["pid"], signal.SIGKILL)
    for name in ("ok", "fails"):
        fd = os.open(fifos[name], os.O_WRONLY)
        os.write(fd, b"go\n")
        os.close(fd)
    gone = sup.wait_status("killed", "KILLED")
    assert gone["signal"] == "SIGKILL" and gone["restarts"] == 0
    done = sup.wait_status("ok", "EXITED")
    assert done["exit_code"] == 0 and done["restarts"] == 0
    failed = wait_until(lambda: (s := sup.status("fails"))["restarts"] == 1 and s,
                        what="the failed one to be restarted")
    assert failed["status"] == "RUNNING"


@pytest.mark.parametrize("damage", [
    "next_start-1e19", "anchor--1e300", "instance-other", "version-1.0", "a-directory",
    "pid-4194305", "restarts-1e30", "signal-65", "restart_limit-1e12"])
def test_values_out_of_range_or_of_another_instance_are_set_aside(sup, damage):
    """More ways a state file may be wrong: times no clock reaches, another instance's
    document, a version that is not the integer 1, a directory at its path. Set aside, the
    daemon starts (and, the test of the cgroups path below, kills nothing of another's);
    the service the file described, found in its cgroup, is taken back opened."""
    kept = sup.create("/bin/sleep", ["600"], name="kept", output="null", every=3600)
    kill_daemon(sup.pid)
    path = _whole_state(sup)
    with open(path) as f:
        doc = json.load(f)
    what, _, value = damage.partition("-")
    if what == "next_start":
        doc["services"][0]["next_start"] = float(value)
    elif what == "anchor":
        doc["services"][0]["schedule"]["anchor"] = float(value)
    elif what in ("pid", "restarts", "signal", "restart_limit"):  # no kernel, or no count,
        doc["services"][0][what] = int(float(value))  # gets there
    elif what == "instance":
        doc["instance"] = 1
    elif what == "version":
        doc["version"] = 1.0
    os.unlink(path)
    if what == "a":
        os.mkdir(path)
    else:
        with open(path, "w") as f:
            json.dump(doc, f)
    sup.ok("init", "-i", "0")
    [back] = sup.json("list-supervisor")["services"]
    assert (back["name"], back["pid"], back["opened"]) == ("kept", kept["pid"], True)
    assert [e for e in os.listdir(sup.rundir) if e.startswith("0.state.json.bad-")]
    sup.ok("stop-service", "kept")


def test_a_state_file_cannot_point_the_daemon_at_processes_not_its_own(sup, tmp_path):
    """The tree of cgroups a state file names is only ever taken when it is this
    instance's, beside the daemon's own: a fake tree elsewhere (whose cgroup.procs lists a
    stranger) makes the daemon kill nothing."""
    stranger = subprocess.Popen(["sleep", "600"])
    try:
        fake = tmp_path / "tree"
        (fake / "svc-z").mkdir(parents=True)
        (tmp_path / "cgroup.procs").write_text("")
        (fake / "svc-z" / "cgroup.procs").write_text(f"{stranger.pid}\n")
        before = sup.create("/bin/sleep", ["600"], name="before", output="null")
        kill_daemon(sup.pid)
        path = _whole_state(sup)
        with open(path) as f:
            doc = json.load(f)
        doc["cgroups"] = str(fake)
        with open(path, "w") as f:
            json.dump(doc, f)
        sup.ok("init", "-i", "0")
        sup.ok("create-service", "-n", "after", "-o", "null", "/bin/sleep", "600")
        assert stranger.poll() is None
        # the file set aside, its service is found in its own cgroup: opened (a close
        # would leave it running)
        back = sup.status("before")
        assert (back["pid"], back["opened"]) == (before["pid"], True)
        sup.ok("stop-service", "before")
        wait_until(lambda: not alive(before["pid"]), what="the found service to stop")
    finally:
        stranger.kill()
        stranger.wait()


def test_what_a_service_left_behind_while_no_daemon_watched_is_killed(sup, tmp_path):
    """A service that ended while no daemon ran left a child in its cgroup (and a restart
    the dead daemon never saved would be the same): killed before the service's policy
    restarts it into that cgroup, so nothing runs unclaimed beside the new process."""
    go = tmp_path / "go"
    os.mkfifo(go)
    left = tmp_path / "left"
    sup.create("/bin/sh", ["-c", f"sleep 600 & echo $! > {left}; read x < {go}; exit 1"],
               name="g", restart_times=2, output="null")
    wait_until(lambda: left.exists() and left.read_text().strip(), what="the child")
    child = int(left.read_text())
    kill_daemon(sup.pid)
    with open(go, "w") as f:
        f.write("go\n")
    wait_until(lambda: state(child) is None or _parent_gone(sup, child), what="the exit")
    sup.ok("init", "-i", "0")
    wait_until(lambda: sup.status("g")["restarts"] == 1, what="the restart")
    wait_until(lambda: not alive(child), what="the leftover to be killed")


def _parent_gone(sup, pid: int) -> bool:
    fields = process_stat(pid)
    return fields is not None and int(fields[1]) != 0  # reparented, its service is gone


def _edit_state(sup: Supervisor, edit) -> None:
    path = _whole_state(sup)
    with open(path) as f:
        doc = json.load(f)
    edit(doc)
    with open(path, "w") as f:
        json.dump(doc, f)


def test_one_process_claimed_by_two_entries_is_re_adopted_once(sup):
    """A state file in which an opened service claims a created one's process (its pid,
    start time and command line): what open-service refuses ("already service x") a state
    file cannot make happen. The created one, whose cgroup proves the process its own, is
    re-adopted; the other is not; the instance still closes."""
    x = sup.create("/bin/sleep", ["600"], name="x", output="null")
    other = subprocess.Popen(["sleep", "603"], start_new_session=True)
    try:
        sup.json("open-service", str(other.pid), "-n", "o")
        kill_daemon(sup.pid)

        def claim_x(doc):
            entries = {e["name"]: e for e in doc["services"]}
            for key in ("pid", "pids", "start_ticks", "command"):
                entries["o"][key] = entries["x"][key]
        _edit_state(sup, claim_x)
        sup.ok("init", "-i", "0")
        listing = {s["name"]: s for s in sup.json("list-supervisor")["services"]}
        assert listing["x"]["status"] == "RUNNING" and listing["x"]["pid"] == x["pid"]
        assert listing["o"]["status"] not in ("RUNNING", "STOPPED")
        sup.ok("close")
        assert not alive(x["pid"])
    finally:
        other.kill()
        other.wait()


def test_a_state_file_cannot_make_the_daemon_adopt_init(sup):
    """An opened service's entry pointed at pid 1 with init's own start time and command
    line: open-service refuses pid 1, and so does recovery."""
    other = subprocess.Popen(["sleep", "604"], start_new_session=True)
    try:
        sup.json("open-service", str(other.pid), "-n", "o")
        kill_daemon(sup.pid)
        with open("/proc/1/cmdline", "rb") as f:
            init_cmd = [p.decode() for p in f.read().split(b"\0") if p]

        def point_at_init(doc):
            [entry] = doc["services"]
            entry.update(pid=1, pids=[1], start_ticks=start_ticks(1), command=init_cmd)
        _edit_state(sup, point_at_init)
        sup.ok("init", "-i", "0")
        now = sup.status("o")
        assert now["status"] not in ("RUNNING", "STOPPED")
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize("how", ["exits-on-term", "ignores-term"])
def test_a_stop_under_way_when_the_daemon_dies_goes_on_after_init(sup, tmp_path, how):
    """stop-service sent the stop signal, then the daemon died before the service ended:
    the next daemon neither forgets the stop (its restart policy must not start the
    service again) nor its SIGKILL at the stop timeout."""
    ready, termed = tmp_path / "ready", tmp_path / "termed"
    then = "sleep 2; exit 0" if how == "exits-on-term" else ":"
    script = f"trap 'touch {termed}; {then}' TERM; touch {ready}; while :; do sleep 0.1; done"
    svc = sup.create("/bin/sh", ["-c", script], name="s", restart="always",
                     stop_timeout=3, output="null")
    wait_until(ready.exists, what="the trap to be set")
    stopping = subprocess.Popen([sys.executable, "-m", "supervisor", "stop-service", "s"],
                                env=sup.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        wait_until(termed.exists, what="the stop signal")
        kill_daemon(sup.pid)  # before the service ends, and before its stop timeout
    finally:
        stopping.wait(TIMEOUT)
    sup.ok("init", "-i", "0")
    end = sup.wait_status("s", "EXITED" if how == "exits-on-term" else "KILLED")
    assert end["restarts"] == 0 and not alive(svc["pid"])


def test_setting_a_bad_state_file_aside_never_overwrites_an_earlier_one(sup):
    """Two bad state files within a second, or a name taken by anything else: each kept
    under a name of its own, and the daemon starts."""
    sup.create("/bin/sleep", ["600"], name="found", output="null")
    kill_daemon(sup.pid)
    path = os.path.join(sup.rundir, "0.state.json")
    now = int(time.time())
    for t in range(now, now + 2 * int(TIMEOUT)):  # the names of this second and the next
        taken = f"{path}.bad-{t}"
        os.makedirs(os.path.join(taken, "sub"))  # a directory rename(2) cannot replace
        os.makedirs(os.path.join(f"{taken}.2", "sub"))
    with open(path, "w") as f:
        f.write("garbage")
    sup.ok("init", "-i", "0")
    assert [s["name"] for s in sup.json("list-supervisor")["services"]] == ["found"]
    sup.ok("stop-service", "found")
    kept = [e for e in os.listdir(sup.rundir) if e.startswith("0.state.json.bad-")
            and os.path.isfile(os.path.join(sup.rundir, e))]
    assert len(kept) == 1 and kept[0].endswith(".3")
    with open(os.path.join(sup.rundir, kept[0])) as f:
        assert f.read() == "garbage"


def test_signals_of_no_meaning_here_are_ignored_not_fatal(sup):
    """An admin's `kill -USR1` (to reopen logs, elsewhere) and the like: by default each
    would end the daemon without a word. Ignored; the daemon and its services go on."""
    svc = sup.create("/bin/sleep", ["600"], name="on", output="null")
    daemon = sup.pid
    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGQUIT,
                signal.SIGVTALRM, signal.SIGPROF, signal.SIGXCPU, signal.SIGIO):
        os.kill(daemon, sig)
    assert sup.status("on")["pid"] == svc["pid"]  # answered after all eight
    assert sup.pid == daemon and alive(daemon)


def test_a_restart_is_one_line_of_the_log_not_the_whole_state_rewritten(sup):
    """A save writes what changed (``supervisor/state.py``: the state file's log): a
    restart of one service beside many others appends its entry; the document itself is
    left as it was. After a crash, the next daemon reads both."""
    sup.create("/bin/sleep", ["600"], name="quiet", output="null")
    doc_path = os.path.join(sup.rundir, "0.state.json")
    before = os.stat(doc_path)
    log_before = os.path.getsize(f"{doc_path}.log")
    sup.create(TEST_RESTART, ["0.05"], name="crashy", output="null", restart_times=3)
    wait_until(lambda: sup.status("crashy")["status"] == "CRASHED", what="three restarts")
    after = os.stat(doc_path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert os.path.getsize(f"{doc_path}.log") > log_before
    entries = {e["name"]: e for e in read_state(sup.rundir)["services"]}
    assert entries["crashy"]["restarts"] == 3 and entries["crashy"]["state"] == "CRASHED"
    kill_daemon(sup.pid)
    sup.ok("init", "-i", "0")
    back = sup.status("crashy")
    assert (back["status"], back["restarts"]) == ("CRASHED", 3)
    assert sup.status("quiet")["status"] == "RUNNING"


def test_a_wrong_line_in_the_log_costs_only_what_follows_it(sup):
    """The log's lines before a wrong one are used; the log is set aside with an error
    entry; a service whose line was lost is found in its cgroup and taken back opened."""
    first = sup.create("/bin/sleep", ["600"], name="first", output="null")
    second = sup.create("/bin/sleep", ["601"], name="second", output="null")
    kill_daemon(sup.pid)
    log = os.path.join(sup.rundir, "0.state.json.log")
    with open(log, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    [k] = [i for i, line in enumerate(lines) if b'"name":"second"' in line]
    damaged = b"".join(lines[:k]) + b"}{ not JSON\n" + b"".join(lines[k + 1:])
    with open(log, "wb") as f:
        f.write(damaged)
    mark = journal_mark()
    sup.ok("init", "-i", "0")
    error = wait_for_entry(since=mark, SYSLOG_IDENTIFIER="supervisor",
                           SUPERVISOR_EVENT="state-error")
    assert f"its log cannot be trusted from line {k + 1} (not valid JSON" in \
        error["MESSAGE"] and "set aside as" in error["MESSAGE"], error["MESSAGE"]
    [aside] = [e for e in os.listdir(sup.rundir) if e.startswith("0.state.json.log.bad-")]
    with open(os.path.join(sup.rundir, aside), "rb") as f:
        assert f.read() == damaged
    listing = {s["name"]: s for s in sup.json("list-supervisor")["services"]}
    assert (listing["first"]["pid"], listing["first"]["opened"]) == (first["pid"], False)
    assert (listing["second"]["pid"], listing["second"]["opened"]) == (second["pid"], True)
    # what was taken back is on disk at once: a second crash loses nothing
    kill_daemon(sup.pid)
    sup.ok("init", "-i", "0")
    again = {s["name"]: (s["pid"], s["opened"]) for s in sup.json("list-supervisor")["services"]}
    assert again == {"first": (first["pid"], False), "second": (second["pid"], True)}
    sup.ok("stop-service", "second")  # opened: a close would leave it running


def test_every_pid_a_service_had_names_it_after_a_crash(sup):
    """Its pid history comes back from the state file's log, where each restart wrote only
    its new pid (``pids_kept``: the rest are those on disk already)."""
    pids = [sup.create("/bin/sleep", ["600"], name="web", output="null")["pid"]]
    for _ in range(3):
        pids.append(sup.json("restart-service", "web")["pid"])
    with open(os.path.join(sup.rundir, "0.state.json.log"), "rb") as f:
        last = json.loads(f.read().splitlines()[-1])
    [entry] = [e for e in last["set"] if e["name"] == "web"]
    assert (entry["pids_kept"], entry["pids"]) == (3, pids[-1:])
    kill_daemon(sup.pid)
    sup.ok("init", "-i", "0")
    for pid in pids:
        assert sup.json("service-status", str(pid))["name"] == "web"
    assert sup.status("web")["pid"] == pids[-1]  # re-adopted
    sup.ok("stop-service", "web")


def test_an_opened_process_that_execd_is_taken_back_by_its_pidfs_inode(sup, tmp_path):
    """Its command line is not the one recorded any more (it exec'd after open-service),
    but its pidfd's inode, its own for the whole boot, says it is the very process."""
    go = tmp_path / "go"
    os.mkfifo(go)
    mine = subprocess.Popen(["/bin/sh", "-c", f"read x < {go}; exec sleep 600"],
                            start_new_session=True)
    try:
        sup.json("open-service", str(mine.pid), "-n", "shell")
        kill_daemon(sup.pid)
        with open(go, "w") as f:
            f.write("go\n")
        wait_until(lambda: comm(mine.pid) == "sleep", what="the exec")
        sup.ok("init", "-i", "0")
        now = sup.status("shell")
        assert (now["status"], now["pid"]) == ("RUNNING", mine.pid)
        sup.ok("stop-service", "shell")
        assert mine.wait(TIMEOUT) == -signal.SIGTERM
    finally:
        if mine.poll() is None:
            mine.kill()
            mine.wait()
