"""Fixtures for the integration tests: a real journald, real daemons, the real CLI."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from journald import ensure_journald
from timeouts import TIMEOUT

from supervisor import process
from supervisor import state as supervisor_state
from supervisor.client import Client, NotRunning

ROOT = Path(__file__).resolve().parent.parent
TOYS = ROOT / "toy_services"
PARROT = str(TOYS / "parrot_service")
TEST_RESTART = str(TOYS / "test_restart")


def wait_until(predicate: Callable[[], object], timeout: float = TIMEOUT,
               what: str | Callable[[], str] = "condition", every: float = 0.002):
    """Poll ``predicate`` every ``every`` s until it returns something truthy, or fail
    after ``timeout`` saying ``what`` was awaited (a callable: asked then, so that it can
    tell what was last seen)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g} s waiting for {said}")
        time.sleep(every)


def make_a_directory_at(path: str, what: str) -> None:
    """Put a directory where a running daemon keeps ``what`` (its socket, its state file):
    it makes the file again as soon as it is removed, so removed and made until it sticks."""
    def made() -> bool:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(path)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path)
        return os.path.isdir(path)
    wait_until(made, what=f"a directory at the path of {what}")


class Result:
    def __init__(self, proc: subprocess.CompletedProcess) -> None:
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def json(self):
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"Result(rc={self.rc}, out={self.out!r}, err={self.err!r})"


class Supervisor:
    """One instance in a private runtime directory, driven through the real CLI."""

    def __init__(self, rundir: str, instance: int = 0) -> None:
        self.rundir = rundir
        self.instance = instance
        self.env = {**os.environ, "SUPERVISOR_RUNTIME_DIR": rundir}

    def run(self, *args: str, timeout: float = TIMEOUT) -> Result:
        """``supervisor <args>`` as a user types it."""
        return Result(subprocess.run([sys.executable, "-m", "supervisor", *map(str, args)],
                                     env=self.env, capture_output=True, text=True,
                                     timeout=timeout, cwd=ROOT))

    def ok(self, *args: str) -> Result:
        result = self.run(*args)
        assert result.rc == 0, result
        assert result.err == "", result
        return result

    def json(self, *args: str):
        return self.ok(args[0], "--json", *args[1:]).json()

    def client(self) -> Client:
        return Client(self.instance, runtime_dir=self.rundir, timeout=TIMEOUT)

    def status(self, svc) -> dict:
        with self.client() as c:
            return c.service_status(svc)

    def wait_status(self, svc, status: str, timeout: float = TIMEOUT) -> dict:
        last = {}

        def reached():
            last.update(self.status(svc))
            return last["status"] == status

        wait_until(reached, timeout, lambda: f"{svc} to be {status} (last: {last})")
        return last

    @property
    def pid(self) -> int:
        with self.client() as c:
            return c.info()["pid"]

    def create(self, *args, **kw) -> dict:
        with self.client() as c:
            return c.create_service(*args, **kw)


def assert_one_line_error(result: Result, rc: int, *needles: str) -> None:
    assert result.rc == rc, result
    assert result.out == "", result
    lines = result.err.splitlines()
    assert len(lines) == 1, result
    assert lines[0].startswith("supervisor: "), result
    assert "Traceback" not in result.err
    for needle in needles:
        assert needle in lines[0], result


def children_of(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of every process whose parent is ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = process.proc_stat(int(entry))
            if fields is not None and int(fields[1]) == pid:
                out.append((int(entry), fields[0]))
    return out


def fd_targets(pid: int) -> list[str]:
    """What each open fd of ``pid`` points at; fds closed while we look are left out (a
    daemon opens and closes some of its own every turn)."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            pass
    return out


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def state(pid: int) -> str | None:
    """The state letter of ``/proc/<pid>/stat`` (R, S, T, Z...), None when gone."""
    fields = process.proc_stat(pid)
    return None if fields is None else fields[0]


def alive(pid: int) -> bool:
    fields = process.proc_stat(pid)
    return fields is not None and fields[0] != "Z"


def kill_daemon(pid: int) -> int:
    """A crash of the daemon ``pid``: SIGKILL, and its end awaited (its lock and socket
    gone), so that the next ``init`` starts a new one instead of finding it."""
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), what=f"the daemon {pid} to die")
    return pid


def read_state(rundir: str, instance: int = 0) -> dict:
    """The state a daemon left in ``rundir``: its state file's document brought up to date
    with the file's log, as the next daemon reads it (``supervisor/state.py``)."""
    path = os.path.join(rundir, f"{instance}.state.json")
    with open(path, "rb") as f:
        doc = supervisor_state.parse(f.read())
    with contextlib.suppress(FileNotFoundError), open(supervisor_state.log_name(path), "rb") as f:
        _applied, trouble = supervisor_state.replay(doc, f.read())
        assert trouble is None, trouble
    return doc


def write_state(rundir: str, doc: dict, instance: int = 0) -> None:
    """``doc`` as the whole state of ``rundir``'s daemon: the state file, with no log (for a
    test that changes what a daemon left before the next one reads it)."""
    path = os.path.join(rundir, f"{instance}.state.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(supervisor_state.log_name(path))


def marked(token: str) -> list[int]:
    """Pids of the living processes whose command line holds ``token``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if token.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                continue
    return [p for p in found if alive(p)]


@pytest.fixture(scope="session", autouse=True)
def no_config_of_the_machine():
    """Daemons started by tests read their config files from an empty dir of their own,
    never /etc/supervisor or ~/.config/supervisor of the machine (tests/test_declared.py
    gives theirs)."""
    path = tempfile.mkdtemp(prefix="sv-conf-", dir="/tmp")
    before = os.environ.get("SUPERVISOR_CONFIG_DIR")
    os.environ["SUPERVISOR_CONFIG_DIR"] = path
    yield path
    if before is None:
        del os.environ["SUPERVISOR_CONFIG_DIR"]
    else:
        os.environ["SUPERVISOR_CONFIG_DIR"] = before
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def config_dir_of_its_own(monkeypatch, tmp_path_factory):
    """Each test's daemons get a config dir of their own: one test's `save` (the random
    requests of tests/test_hostile.py send it too) never declares services for another."""
    path = tmp_path_factory.mktemp("conf")
    monkeypatch.setenv("SUPERVISOR_CONFIG_DIR", str(path))
    return path


@pytest.fixture(scope="session", autouse=True)
def journald():
    with ensure_journald() as available:
        yield available


@pytest.fixture
def other_user():
    """A fresh system user (tests/users.py), deleted with its processes afterwards."""
    from users import make_user

    with make_user() as user:
        yield user


@pytest.fixture
def rundir():
    # short: a unix socket path must fit in 108 bytes
    path = tempfile.mkdtemp(prefix="sv-", dir="/tmp")
    yield path
    try:
        for sock in Path(path).glob("*.sock"):  # whatever a test started and left running
            if sock.stem.isdigit():
                close_instance(Supervisor(path, int(sock.stem)))
    finally:  # (a directory the test made unsafe cannot be talked to: killed all the same)
        _kill_unreachable_daemons(path)
        shutil.rmtree(path, ignore_errors=True)


def _kill_unreachable_daemons(rundir: str) -> None:
    """A daemon of this directory that no socket leads to any more (a test that failed
    left it unreachable): killed with its processes, never left behind for the next tests
    (or a benchmark) to share the machine with."""
    marker = f"SUPERVISOR_RUNTIME_DIR={rundir}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if b"supervisor.daemon" not in f.read():
                    continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker not in f.read().split(b"\0"):
                    continue
        except OSError:
            continue
        pid = int(entry)
        for child, _state in children_of(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def sup(rundir):
    """A running instance 0 in a private runtime directory; closed (and checked) after."""
    s = Supervisor(rundir)
    s.ok("init", "-i", "0")
    yield s
    close_instance(s)


def close_instance(s: Supervisor) -> None:
    """Close whatever daemon serves the instance now (a test may have replaced the first)."""
    try:
        pid = s.pid
    except NotRunning:
        return
    s.run("close", "-i", str(s.instance), timeout=TIMEOUT + 10)
    if alive(pid):  # the test broke it: do not leave it behind
        os.kill(pid, signal.SIGKILL)
        raise AssertionError("the daemon did not close")
