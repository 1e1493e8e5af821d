"""The journal contract (docs/reference.md, "Journal"), against the real systemd-journald.

Every command the daemon receives and its answer, and every lifecycle event, is one entry
with ``SYSLOG_IDENTIFIER=supervisor`` and structured fields; ``journalctl -t supervisor``
shows them; with no journald the entries go to stderr, one line each.

Each test takes a ``journal_mark()`` first and reads only entries after it, names its
services uniquely and matches the daemon's own ``_PID``, so entries of other tests (or of
earlier runs) never match. Waiting is done with ``wait_for_entry`` (inotify, deadline
``TIMEOUT``), never with fixed sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import systemd.journal
from conftest import TEST_RESTART, Supervisor, alive, wait_until
from journald import journal_mark, read_entries, wait_for_entry
from timeouts import TIMEOUT

import supervisor.journal
from supervisor.client import Client, RemoteError

IDENT = "supervisor"
LIFECYCLE = {"started", "stopped", "continued", "crashed", "restarted", "killed", "exited",
             "removed"}


# ---- fixtures and helpers -------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def inst(rundir):
    """A running instance with a random number (1-99) in a private runtime directory."""
    n = uuid.uuid4().int % 99 + 1
    s = Supervisor(rundir, n)
    s.ok("init", "-i", str(n))
    s.daemon_pid = s.pid
    yield s
    if alive(s.daemon_pid):
        s.run("close", "-i", str(n), timeout=TIMEOUT + 10)
    if alive(s.daemon_pid):  # the test broke it: do not leave it behind
        os.kill(s.daemon_pid, signal.SIGKILL)
        raise AssertionError("the daemon did not close")


@pytest.fixture
def strays():
    """Start processes the daemon did not create (for open-service); killed and reaped after."""
    procs: list[subprocess.Popen] = []

    def start() -> int:
        proc = subprocess.Popen(["/bin/sleep", "600"])
        procs.append(proc)
        return proc.pid

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=TIMEOUT)


def wait_entry(predicate: Callable[[dict], bool] | None = None, *, since: str | None,
               **match: Any) -> dict:
    return wait_for_entry(predicate, TIMEOUT, since=since, **match)


def entry(inst: Supervisor, since: str | None,
          predicate: Callable[[dict], bool] | None = None, **match: Any) -> dict:
    """The first entry of this instance's daemon (after ``since``) matching the fields."""
    return wait_entry(predicate, since=since, SYSLOG_IDENTIFIER=IDENT,
                      SUPERVISOR_INSTANCE=inst.instance, _PID=inst.daemon_pid, **match)


def event(inst: Supervisor, since: str | None, what: str, name: str,
          pid: int | None = None) -> dict:
    """The first lifecycle entry ``what`` of service ``name`` (of ``pid`` if given)."""

    def of_that_pid(e: dict) -> bool:
        return pid is None or e.get("SERVICE_PID") == str(pid)

    return entry(inst, since, of_that_pid, SUPERVISOR_EVENT=what, SERVICE_NAME=name)


def settled(inst: Supervisor, since: str | None, **match: Any) -> list[dict]:
    """Every entry of the daemon after ``since`` matching the fields, once everything the
    daemon wrote so far is surely in the journal: a sentinel sent from here after the
    daemon's answers sits behind them in journald's one socket queue, so once it is
    readable, so are they."""
    tag = uuid.uuid4().hex
    systemd.journal.send("sentinel", SYSLOG_IDENTIFIER="supervisor-tests", TEST_SENTINEL=tag)
    wait_entry(since=since, SYSLOG_IDENTIFIER="supervisor-tests", TEST_SENTINEL=tag)
    return read_entries(0, count=0, since=since, SYSLOG_IDENTIFIER=IDENT,
                        SUPERVISOR_INSTANCE=inst.instance, _PID=inst.daemon_pid, **match)


def check_common(e: dict, inst: Supervisor) -> None:
    assert e["SYSLOG_IDENTIFIER"] == IDENT, e
    assert e["SUPERVISOR_INSTANCE"] == str(inst.instance), e
    assert e["_PID"] == inst.daemon_pid, e
    assert isinstance(e["PRIORITY"], int) and 0 <= e["PRIORITY"] <= 7, e
    assert e.get("MESSAGE"), e


def check_event(e: dict, inst: Supervisor, what: str, name: str, pid: int, status: str,
                priorities: tuple[int, ...]) -> None:
    check_common(e, inst)
    assert e["SUPERVISOR_EVENT"] == what, e
    assert e["SERVICE_NAME"] == name, e
    assert e["SERVICE_PID"] == str(pid), e
    assert e["SERVICE_STATUS"] == status, e
    assert e["PRIORITY"] in priorities, e
    assert "SUPERVISOR_COMMAND" not in e, e
    assert name in e["MESSAGE"], e


# ---- 1. commands ----------------------------------------------------------------------------
# Each scenario does what its command needs, then sends that command exactly once.
# It returns the command's answer and the service the answer is about (None: not one).


def _create(c: Client, name: str, strays, inst) -> tuple[dict, str | None]:
    return c.create_service("/bin/sleep", ["600"], name=name), name


def _status(c, name, strays, inst):
    _create(c, name, strays, inst)
    return c.service_status(name), name


def _suspend(c, name, strays, inst):
    _create(c, name, strays, inst)
    return c.suspend_service(name), name


def _resume(c, name, strays, inst):
    _create(c, name, strays, inst)
    c.suspend_service(name)
    return c.resume_service(name), name


def _close(c, name, strays, inst):
    _create(c, name, strays, inst)
    return c.close_service(name), name


def _remove(c, name, strays, inst):
    _create(c, name, strays, inst)
    return c.remove_service(name), name


def _cancel(c, name, strays, inst):
    pending = c.create_service("/bin/sleep", ["600"], name=name, delay=3600)
    assert pending["status"] == "PENDING" and pending["pid"] is None
    return c.supervisor_cancel(name), name


def _open(c, name, strays, inst):
    return c.open_service(strays(), name=name), name


def _list(c, name, strays, inst):
    _create(c, name, strays, inst)
    return c.list_supervisor(), None


def _freelist(c, name, strays, inst):
    c.create_service("/bin/sleep", ["600"], name=name)
    c.create_service("/bin/sleep", ["600"], name=name + "-b")
    return c.supervisor_freelist([name, name + "-b"]), None


def _stop(c, name, strays, inst):
    _create(c, name, strays, inst)
    return c.stop_service(name), None


def _start(c, name, strays, inst):
    _create(c, name, strays, inst)
    c.stop_service(name)
    return c.start_service(name), None


def _restart(c, name, strays, inst):
    _create(c, name, strays, inst)
    return c.restart_service(name), None


def _signal(c, name, strays, inst):
    _create(c, name, strays, inst)
    return c.signal_service("USR1", name), None


def _show(c, name, strays, inst):
    _create(c, name, strays, inst)
    return c.show_service(name), None


def _shutdown(c, name, strays, inst):
    answer = c.shutdown()
    wait_until(lambda: not alive(inst.daemon_pid), what="the daemon to exit")
    return answer, None


COMMANDS = {
    "create-service": _create,
    "service-status": _status,
    "suspend-service": _suspend,
    "resume-service": _resume,
    "close-service": _close,
    "remove-service": _remove,
    "supervisor-cancel": _cancel,
    "open-service": _open,
    "list-supervisor": _list,
    "supervisor-freelist": _freelist,
    "stop-service": _stop,
    "start-service": _start,
    "restart-service": _restart,
    "signal-service": _signal,
    "show-service": _show,
    "shutdown": _shutdown,
}
# queries change nothing: journaled at debug, so that a monitor polling them does not
# bury what happened under what was asked
QUERIES = {"service-status", "list-supervisor", "show-service"}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_command_and_its_answer_is_one_entry(inst, strays, command):
    mark = journal_mark()
    name = unique("cmd")
    with inst.client() as c:
        answer, about = COMMANDS[command](c, name, strays, inst)

    e = entry(inst, mark, SUPERVISOR_COMMAND=command)
    check_common(e, inst)
    assert e["SUPERVISOR_COMMAND"] == command
    # info: the command was done; debug: it only read
    assert e["PRIORITY"] == (7 if command in QUERIES else 6), e
    assert "ERROR_CODE" not in e, e
    assert command in e["MESSAGE"], e
    assert e["PEER_PID"] == str(os.getpid()), e  # who sent it
    assert e["PEER_UID"] == str(os.getuid()), e
    if about is not None:  # a command about one service: the service as answered
        assert e["SERVICE_NAME"] == about == answer["name"], e
        assert e["SERVICE_STATUS"] == answer["status"], e
        if answer["status"] == "PENDING":  # supervisor-cancel: never ran, no pid to name
            assert "SERVICE_PID" not in e, e
        elif answer["pid"] is None:  # ended (close-service): the pid it had
            assert e["SERVICE_PID"].isdigit(), e
        else:
            assert e["SERVICE_PID"] == str(answer["pid"]), e
    if command == "supervisor-freelist":  # several services: the request names them
        assert name in e["MESSAGE"] and name + "-b" in e["MESSAGE"], e
    # one entry, not two: count once everything the daemon wrote is readable
    assert len(settled(inst, mark, SUPERVISOR_COMMAND=command)) == 1


REFUSALS = {
    # command: (setup and refused call, the error code the client got)
    "service-status": (lambda c, n: c.service_status(n), "no-such-service"),
    "remove-service": (lambda c, n: c.remove_service(n), "no-such-service"),
    "suspend-service": (lambda c, n: c.suspend_service(4194304), "no-such-service"),
    "resume-service": (lambda c, n: (c.create_service("/bin/sleep", ["600"], name=n),
                                     c.resume_service(n)), "bad-state"),
    "supervisor-cancel": (lambda c, n: (c.create_service("/bin/sleep", ["600"], name=n),
                                        c.supervisor_cancel(n)), "bad-state"),
    "create-service": (lambda c, n: c.create_service("/etc/passwd", name=n), "not-executable"),
    "open-service": (lambda c, n: c.open_service(4194304), "no-such-process"),
}


@pytest.mark.parametrize("command", list(REFUSALS))
def test_a_refused_command_is_a_warning_with_its_error_code(inst, command):
    mark = journal_mark()
    name = unique("refused")
    call, code = REFUSALS[command]
    with inst.client() as c, pytest.raises(RemoteError) as refused:
        call(c, name)
    assert refused.value.code == code

    e = entry(inst, mark, SUPERVISOR_COMMAND=command, ERROR_CODE=code)
    check_common(e, inst)
    assert e["PRIORITY"] == 4, e  # warning
    assert refused.value.message in e["MESSAGE"], e
    assert e["PEER_PID"] == str(os.getpid()), e
    assert len(settled(inst, mark, SUPERVISOR_COMMAND=command)) == 1


def test_a_refused_command_on_an_existing_service_names_that_service(inst):
    """A refusal about an existing service is an entry of that service: it carries its
    SERVICE_NAME/SERVICE_PID/SERVICE_STATUS, so `journalctl SERVICE_NAME=<name>` shows it."""
    mark = journal_mark()
    name = unique("busy")
    with inst.client() as c:
        svc = c.create_service("/bin/sleep", ["600"], name=name)
        with pytest.raises(RemoteError) as refused:
            c.resume_service(name)
    assert refused.value.code == "bad-state"

    e = entry(inst, mark, SUPERVISOR_COMMAND="resume-service", ERROR_CODE="bad-state")
    assert e["PRIORITY"] == 4, e
    assert e.get("SERVICE_NAME") == name, e
    assert e.get("SERVICE_PID") == str(svc["pid"]), e
    assert e.get("SERVICE_STATUS") == "RUNNING", e


def test_the_cli_s_commands_are_logged_too(inst):
    """The real CLI, not only the client library: same entries."""
    mark = journal_mark()
    name = unique("cli")
    n = str(inst.instance)
    created = inst.json("create-service", "-i", n, "-n", name, "/bin/sleep", "600")
    inst.ok("service-status", "-i", n, name)
    e = entry(inst, mark, SUPERVISOR_COMMAND="service-status", SERVICE_NAME=name)
    assert e["SERVICE_PID"] == str(created["pid"]), e
    assert e["SERVICE_STATUS"] == "RUNNING", e
    assert e["PRIORITY"] == 7, e  # a query: debug
    e = entry(inst, mark, SUPERVISOR_COMMAND="create-service", SERVICE_NAME=name)
    assert e["SERVICE_PID"] == str(created["pid"]), e


# ---- 2. lifecycle events --------------------------------------------------------------------


def events_of(inst: Supervisor, since: str | None, name: str) -> list[str]:
    return [e["SUPERVISOR_EVENT"] for e in settled(inst, since, SERVICE_NAME=name)
            if e.get("SUPERVISOR_EVENT") in LIFECYCLE]


def test_crash_restart_crash(inst):
    """test_restart really segfaults; with -r 1: started, crashed, restarted, crashed."""
    mark = journal_mark()
    name = unique("crashy")
    with inst.client() as c:
        first = c.create_service(TEST_RESTART, ["0.2"], name=name, restart_times=1)
    pid1 = first["pid"]

    e = event(inst, mark, "started", name, pid1)
    check_event(e, inst, "started", name, pid1, "RUNNING", (5, 6))
    assert "EXIT_CODE" not in e and "EXIT_SIGNAL" not in e, e

    e = event(inst, mark, "crashed", name, pid1)
    check_common(e, inst)
    assert e["SERVICE_PID"] == str(pid1), e
    assert e["EXIT_SIGNAL"] == "SIGSEGV", e
    assert "EXIT_CODE" not in e, e  # a signal death has no exit code
    assert e["PRIORITY"] <= 4, e  # at least a warning
    assert e["SERVICE_STATUS"] != "CRASHED", e  # a restart is left: not final

    restarted = entry(inst, mark, lambda e: e.get("SERVICE_PID") != str(pid1),
                      SUPERVISOR_EVENT="restarted", SERVICE_NAME=name)
    pid2 = int(restarted["SERVICE_PID"])
    check_event(restarted, inst, "restarted", name, pid2, "RUNNING", (5, 6))
    assert restarted["SERVICE_RESTARTS"] == "1", restarted
    assert "EXIT_SIGNAL" not in restarted, restarted  # a new process: no death yet

    e = event(inst, mark, "crashed", name, pid2)
    check_event(e, inst, "crashed", name, pid2, "CRASHED", (0, 1, 2, 3))  # final: error
    assert e["EXIT_SIGNAL"] == "SIGSEGV", e
    assert "EXIT_CODE" not in e, e

    assert events_of(inst, mark, name) == ["started", "crashed", "restarted", "crashed"]
    assert inst.status(name)["status"] == "CRASHED"


def test_suspend_resume_close_remove(inst):
    mark = journal_mark()
    name = unique("nap")
    with inst.client() as c:
        pid = c.create_service("/bin/sleep", ["600"], name=name)["pid"]
        check_event(event(inst, mark, "started", name), inst, "started", name, pid,
                    "RUNNING", (5, 6))
        c.suspend_service(name)
        check_event(event(inst, mark, "stopped", name), inst, "stopped", name, pid,
                    "STOPPED", (5, 6))
        c.resume_service(name)
        check_event(event(inst, mark, "continued", name), inst, "continued", name, pid,
                    "RUNNING", (5, 6))
        c.close_service(name)
        check_event(event(inst, mark, "killed", name), inst, "killed", name, pid,
                    "KILLED", (4, 5, 6))
        c.remove_service(name)
        e = event(inst, mark, "removed", name)
        check_event(e, inst, "removed", name, pid, "KILLED", (5, 6))
    assert events_of(inst, mark, name) == ["started", "stopped", "continued", "killed",
                                           "removed"]


def test_create_stopped_starts_as_stopped(inst):
    mark = journal_mark()
    name = unique("held")
    with inst.client() as c:
        pid = c.create_service("/bin/sleep", ["600"], name=name, create_stopped=True)["pid"]
        check_event(event(inst, mark, "started", name), inst, "started", name, pid,
                    "STOPPED", (5, 6))
        c.resume_service(name)
        check_event(event(inst, mark, "continued", name), inst, "continued", name, pid,
                    "RUNNING", (5, 6))


def test_non_zero_exit_is_crashed_with_its_exit_code(inst):
    mark = journal_mark()
    name = unique("three")
    with inst.client() as c:
        pid = c.create_service("/bin/sh", ["-c", "exit 3"], name=name)["pid"]
    e = event(inst, mark, "crashed", name, pid)
    check_event(e, inst, "crashed", name, pid, "CRASHED", (0, 1, 2, 3))
    assert e["EXIT_CODE"] == "3", e
    assert "EXIT_SIGNAL" not in e, e
    assert events_of(inst, mark, name) == ["started", "crashed"]


def test_zero_exit_is_exited_with_code_0(inst):
    mark = journal_mark()
    name = unique("zero")
    with inst.client() as c:
        pid = c.create_service("/bin/sh", ["-c", "exit 0"], name=name)["pid"]
    e = event(inst, mark, "exited", name, pid)
    check_event(e, inst, "exited", name, pid, "EXITED", (5, 6))
    assert e["EXIT_CODE"] == "0", e
    assert "EXIT_SIGNAL" not in e, e
    assert events_of(inst, mark, name) == ["started", "exited"]


def test_stop_continue_and_kill_from_outside(inst):
    mark = journal_mark()
    name = unique("poked")
    with inst.client() as c:
        pid = c.create_service("/bin/sleep", ["600"], name=name)["pid"]
    event(inst, mark, "started", name, pid)

    os.kill(pid, signal.SIGSTOP)
    e = event(inst, mark, "stopped", name, pid)
    check_event(e, inst, "stopped", name, pid, "STOPPED", (5, 6))
    assert "outside" in e["MESSAGE"], e

    os.kill(pid, signal.SIGCONT)
    e = event(inst, mark, "continued", name, pid)
    check_event(e, inst, "continued", name, pid, "RUNNING", (5, 6))
    assert "outside" in e["MESSAGE"], e

    os.kill(pid, signal.SIGKILL)
    e = event(inst, mark, "killed", name, pid)
    check_event(e, inst, "killed", name, pid, "KILLED", (4, 5, 6))
    assert e["EXIT_SIGNAL"] == "SIGKILL", e
    assert "EXIT_CODE" not in e, e
    assert events_of(inst, mark, name) == ["started", "stopped", "continued", "killed"]


def test_an_opened_process_that_exits(inst, strays):
    """An adopted process's end is logged as exited, with how it ended (the kernel tells
    it for a process that is not our child: PIDFD_INFO_EXIT, or its zombie's status)."""
    mark = journal_mark()
    name = unique("adopted")
    pid = strays()
    with inst.client() as c:
        assert c.open_service(pid, name=name)["opened"] is True
    os.kill(pid, signal.SIGKILL)
    e = event(inst, mark, "exited", name, pid)
    check_event(e, inst, "exited", name, pid, "EXITED", (5, 6))
    assert "EXIT_CODE" not in e and e["EXIT_SIGNAL"] == "SIGKILL", e
    assert e["SERVICE_OPENED"] == "1", e


def test_remove_of_a_running_service_and_freelist(inst):
    mark = journal_mark()
    a, b = unique("fa"), unique("fb")
    with inst.client() as c:
        pa = c.create_service("/bin/sleep", ["600"], name=a)["pid"]
        pb = c.create_service("/bin/sleep", ["600"], name=b)["pid"]
        c.supervisor_freelist([a, b])
    for name, pid in ((a, pa), (b, pb)):
        e = event(inst, mark, "removed", name, pid)
        check_event(e, inst, "removed", name, pid, "RUNNING", (5, 6))
        assert events_of(inst, mark, name) == ["started", "removed"]


# ---- 3. journalctl --------------------------------------------------------------------------


def journalctl(mark: str | None, *matches: str) -> list[dict]:
    """The real journalctl's JSON entries from ``mark`` on.

    ``--cursor``, not ``--after-cursor``: journalctl (seen with systemd 252) given matches
    and ``--after-cursor`` at an entry that does not match them skips the first entry that
    does. The mark entry itself never matches a unique service name.
    """
    argv = ["journalctl", "-q", "--no-pager", "-o", "json", *matches]
    if mark is not None:
        argv += ["--cursor", mark]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_journalctl_shows_a_service_s_entries(inst):
    mark = journal_mark()
    n = str(inst.instance)
    name, other = unique("shown"), unique("other")
    created = inst.json("create-service", "-i", n, "-n", name, "/bin/sleep", "600")
    inst.ok("create-service", "-i", n, "-n", other, "/bin/sleep", "600")
    inst.ok("suspend-service", "-i", n, name)
    inst.ok("resume-service", "-i", n, name)
    inst.ok("close-service", "-i", n, name)
    inst.ok("remove-service", "-i", n, name)
    entry(inst, mark, SUPERVISOR_COMMAND="remove-service", SERVICE_NAME=name)  # the last
    settled(inst, mark)

    entries = journalctl(mark, "-t", IDENT, f"SUPERVISOR_INSTANCE={n}",
                         f"SERVICE_NAME={name}")
    assert entries, "journalctl showed nothing"
    for e in entries:
        assert e["SYSLOG_IDENTIFIER"] == IDENT, e
        assert e["SUPERVISOR_INSTANCE"] == n, e
        assert e["SERVICE_NAME"] == name, e
        assert e["_PID"] == str(inst.daemon_pid), e
        assert e["SERVICE_PID"] == str(created["pid"]), e
        assert "PRIORITY" in e and "SERVICE_STATUS" in e, e
    events = [e["SUPERVISOR_EVENT"] for e in entries if "SUPERVISOR_EVENT" in e]
    commands = [e["SUPERVISOR_COMMAND"] for e in entries if "SUPERVISOR_COMMAND" in e]
    assert events == ["started", "stopped", "continued", "killed", "removed"]
    assert commands == ["create-service", "suspend-service", "resume-service",
                        "close-service", "remove-service"]
    assert len(entries) == len(events) + len(commands)

    # the other service is in the journal, but not among this service's entries
    theirs = journalctl(mark, "-t", IDENT, f"SUPERVISOR_INSTANCE={n}", f"SERVICE_NAME={other}")
    assert [e["SUPERVISOR_EVENT"] for e in theirs if "SUPERVISOR_EVENT" in e] == ["started"]
    # and `journalctl -t supervisor` alone shows both
    everything = {e.get("SERVICE_NAME") for e in journalctl(mark, "-t", IDENT)}
    assert {name, other} <= everything


# ---- 4. no journald: stderr -----------------------------------------------------------------


@pytest.fixture
def no_journald(monkeypatch, tmp_path):
    monkeypatch.setattr(supervisor.journal, "JOURNAL_SOCKET", str(tmp_path / "no-socket"))


def test_without_journald_each_entry_is_one_line_on_stderr(no_journald, capsys):
    journal = supervisor.journal.Journal(7)
    assert not journal.to_journal
    journal.send("svc started with pid 42", 6, SUPERVISOR_EVENT="started",
                  SERVICE_NAME="svc", SERVICE_PID=42, SERVICE_STATUS="RUNNING", EXIT_CODE=None)
    journal.send("resume-service -> service svc is RUNNING", 4,
                 SUPERVISOR_COMMAND="resume-service", ERROR_CODE="bad-state")
    journal.send("svc crashed", 3, SUPERVISOR_EVENT="crashed", EXIT_SIGNAL="SIGSEGV")
    assert capsys.readouterr().err == ""  # gathered for one write at the end of the turn
    journal.flush()
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 3, err
    first, second, third = lines
    assert "svc started with pid 42" in first
    for field in ("SUPERVISOR_EVENT=started", "SERVICE_NAME=svc", "SERVICE_PID=42",
                  "SERVICE_STATUS=RUNNING"):
        assert field in first, first
    assert "EXIT_CODE" not in first  # None: no field
    assert "7" in first and "6" in first  # the instance and the priority
    assert "resume-service -> service svc is RUNNING" in second
    assert "SUPERVISOR_COMMAND=resume-service" in second
    assert "ERROR_CODE=bad-state" in second
    assert "svc crashed" in third and "EXIT_SIGNAL=SIGSEGV" in third


def test_without_journald_a_multi_line_message_is_still_one_line(no_journald, capsys):
    """The daemon logs tracebacks (internal errors): still one line per entry."""
    journal = supervisor.journal.Journal(7)
    journal.send("internal error: boom\nTraceback (most recent call last):\n  x", 2,
                 SUPERVISOR_EVENT="internal-error")
    journal.send("next entry", 6)
    journal.flush()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    assert "internal error: boom" in lines[0] and "Traceback" in lines[0], lines
    assert "SUPERVISOR_EVENT=internal-error" in lines[0], lines
    assert "next entry" in lines[1], lines


def test_when_journald_goes_away_the_entry_falls_back_to_stderr(monkeypatch, capsys):
    journal = supervisor.journal.Journal(5)
    assert journal.to_journal  # the session's journald runs

    def gone(*args, **kw):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(supervisor.journal._journal, "sendv", gone)
    journal.send("still said", 5, SERVICE_NAME="x")
    journal.flush()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "still said" in lines[0] and "SERVICE_NAME=x" in lines[0]


def test_with_journald_the_journal_class_writes_structured_entries(capsys):
    mark = journal_mark()
    tag = unique("unit")
    journal = supervisor.journal.Journal(9)
    assert journal.to_journal
    journal.send("unit entry", 5, SERVICE_NAME=tag, SERVICE_PID=123, EXIT_CODE=None)
    e = wait_entry(since=mark, SYSLOG_IDENTIFIER=IDENT, SERVICE_NAME=tag)
    assert e["MESSAGE"] == "unit entry"
    assert e["PRIORITY"] == 5
    assert e["SUPERVISOR_INSTANCE"] == "9"
    assert e["SERVICE_PID"] == "123"
    assert "EXIT_CODE" not in e
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("lines", [None, 1_000_000])
def test_reading_a_large_journal_keeps_no_entry_whole(lines):
    """8,000 matching entries (as a chatty service leaves), read as `logs --since 1h` (every
    one, in order: streamed) and `logs -n 1000000` (the last ones: kept rendered, ~0.2 KB
    each). Kept as the journal's dicts of every field (~3-5 KB each) they took 25 MB here,
    and 1.2 GB for 250,000 entries. (The reader's RSS is mostly the journal files it maps:
    Python's own allocations are what is measured.)"""
    import time
    import tracemalloc

    name = unique("chatty")
    for i in range(8000):
        systemd.journal.sendv(f"MESSAGE=line {i} " + "x" * 80, f"SYSLOG_IDENTIFIER={name}",
                              "SUPERVISOR_INSTANCE=0", f"SERVICE_NAME={name}", "PRIORITY=6")
    assert len(read_entries(count=8000, SERVICE_NAME=name)) == 8000  # all written
    tracemalloc.start()
    try:
        shown = list(enumerate(supervisor.journal.service_log(
            0, name, lines=lines, since=time.time() - 3600)))[-1]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert shown[0] == 7999 and shown[1].endswith("line 7999 " + "x" * 80)
    assert peak < 6_000_000, f"{peak:,} bytes at the peak"
