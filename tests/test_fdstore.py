"""Identity across a crash through the service manager's fd store (docs/design.md,
"Crash recovery").

PID 1 is not systemd here, so the test plays systemd's part exactly as sd_notify(3) and
sd_listen_fds(3) describe it: a datagram ``NOTIFY_SOCKET`` that takes ``FDSTORE=1`` /
``FDNAME=`` / ``FDSTOREREMOVE=1`` messages with their fds (SCM_RIGHTS) and keeps the fds,
and, when it starts the daemon again, hands them back as ``LISTEN_FDS`` from fd 3 with
``LISTEN_FDNAMES`` and ``LISTEN_PID`` set to the new daemon's pid. The daemon is the real
one; its services are real processes.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import tempfile
import time

from conftest import Supervisor, alive, wait_until
from journald import journal_mark, wait_for_entry
from timeouts import TIMEOUT

LAUNCH = """
import fcntl, os, sys
fds = [int(x) for x in sys.argv[1].split(",") if x]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 1000) for fd in fds]  # out of the way of 3, 4...
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i)                        # inheritable
    os.close(fd)
if fds:
    os.environ["LISTEN_FDS"] = str(len(fds))
    os.environ["LISTEN_PID"] = str(os.getpid())  # exec keeps the pid
os.execv(sys.executable, [sys.executable, "-m", "supervisor.daemon", "-i", "0"])
"""


class FakeManager:
    """The part of systemd the daemon talks to: notifications and the fd store."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(path)
        self.store: dict[str, int] = {}  # FDNAME -> the fd it keeps
        self.ready = False
        self.daemon: subprocess.Popen | None = None
        # the daemon's stderr, shown if it fails; closed in close()
        self.err = tempfile.TemporaryFile()  # noqa: SIM115

    def pump(self, timeout: float = 0) -> None:
        while select.select([self.sock], [], [], timeout)[0]:
            timeout = 0
            msg, fds, _flags, _addr = socket.recv_fds(self.sock, 65536, 64)
            fields = dict(line.split("=", 1) for line in msg.decode().splitlines() if line)
            if fields.get("READY") == "1":
                self.ready = True
            name = fields.get("FDNAME")
            if fields.get("FDSTORE") == "1" and name:
                for fd in fds:
                    if name in self.store:
                        os.close(self.store[name])
                    self.store[name] = fd
            else:
                for fd in fds:
                    os.close(fd)
            if fields.get("FDSTOREREMOVE") == "1" and name in self.store:
                os.close(self.store.pop(name))

    def start(self, rundir: str) -> subprocess.Popen:
        """Start the daemon (handing back what the store keeps) and wait for READY=1."""
        names = list(self.store)
        fds = [self.store[n] for n in names]
        env = {**os.environ, "NOTIFY_SOCKET": self.path, "SUPERVISOR_FDSTORE": "64",
               "SUPERVISOR_RUNTIME_DIR": rundir}
        if names:
            env["LISTEN_FDNAMES"] = ":".join(names)
        self.ready = False
        self.daemon = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, ",".join(map(str, fds))], env=env,
            pass_fds=fds, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd="/",
            stderr=self.err)
        deadline = time.monotonic() + TIMEOUT
        while not self.ready:
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                self.err.seek(0)
                raise AssertionError(f"no READY=1: {self.err.read()[-2000:]!r}")
            self.pump(0.05)
        return self.daemon

    def crash(self) -> None:
        self.daemon.kill()
        self.daemon.wait()

    def close(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.terminate()
            self.daemon.wait(TIMEOUT)
        for fd in self.store.values():
            os.close(fd)
        self.sock.close()
        self.err.close()


def _stored(manager: FakeManager, pid: int) -> bool:
    manager.pump()
    return f"svc-{pid}" in manager.store


def test_the_fd_store_keeps_identity_and_exit_status_across_a_crash(rundir, tmp_path):
    manager = FakeManager(os.path.join(rundir, "notify"))
    s = Supervisor(rundir)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    opened = subprocess.Popen(["/bin/sh", "-c", f"read x < {fifo}; exec sleep 601"])
    try:
        manager.start(rundir)
        fails = s.create("/bin/sh", ["-c", f"read x < {fifo}; exit 5"], name="fails",
                         output="null")
        keeps = s.create("/bin/sleep", ["600"], name="keeps", output="null")
        s.ok("open-service", str(opened.pid), "-n", "opened")
        for pid in (fails["pid"], keeps["pid"], opened.pid):
            wait_until(lambda pid=pid: _stored(manager, pid), what=f"pidfd of {pid} stored")
        manager.crash()
        # while no daemon runs: one service fails, the opened one becomes another program
        # (same process, a new command line: /proc alone would not recognise it)
        with open(fifo, "w") as f:
            f.write("go\ngo\n")
        wait_until(lambda: not alive(fails["pid"]), what="the failing service to end")
        wait_until(lambda: _cmdline(opened.pid) == ["sleep", "601"], what="the exec")
        manager.start(rundir)
        listing = {svc["name"]: svc for svc in s.json("list-supervisor")["services"]}
        assert listing["fails"]["status"] == "CRASHED"  # not "EXITED, not knowable"
        assert listing["fails"]["exit_code"] == 5
        assert listing["keeps"]["status"] == "RUNNING"
        assert listing["keeps"]["pid"] == keeps["pid"]
        assert listing["opened"]["status"] == "RUNNING"  # the very process, re-adopted
        assert listing["opened"]["pid"] == opened.pid
        # the store lets go of what is of no more use, and keeps the rest
        wait_until(lambda: not _stored(manager, fails["pid"]), what="the store to drop it")
        assert _stored(manager, keeps["pid"]) and _stored(manager, opened.pid)
        s.ok("close-service", "opened")
        wait_until(lambda: not _stored(manager, opened.pid), what="the store to drop it")
    finally:
        with contextlib.suppress(Exception):
            s.run("close", "-i", "0")
        manager.close()
        if opened.poll() is None:
            opened.kill()
        opened.wait()


def _cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [p.decode() for p in f.read().split(b"\0") if p]


def test_a_service_found_with_no_state_file_is_taken_back_through_the_fd_store(rundir):
    """The state file gone after a crash: the service found running in its cgroup is
    taken back through the pidfd the store kept (the very process), and the store keeps
    it; before, that pidfd was let go as matching no service."""
    manager = FakeManager(os.path.join(rundir, "notify"))
    s = Supervisor(rundir)
    try:
        manager.start(rundir)
        keeps = s.create("/bin/sleep", ["600"], name="keeps", output="null")
        wait_until(lambda: _stored(manager, keeps["pid"]), what="its pidfd stored")
        manager.crash()
        os.unlink(os.path.join(rundir, "0.state.json"))
        mark = journal_mark()
        manager.start(rundir)
        wait_for_entry(lambda e: "through the fd store" in e["MESSAGE"], since=mark,
                       SUPERVISOR_EVENT="recovered", SERVICE_NAME="keeps")
        [back] = s.json("list-supervisor")["services"]
        assert (back["name"], back["pid"], back["opened"]) == ("keeps", keeps["pid"], True)
        assert _stored(manager, keeps["pid"])
        s.ok("stop-service", "keeps")  # opened: a close would leave it running
        wait_until(lambda: not alive(keeps["pid"]), what="it to stop")
        wait_until(lambda: not _stored(manager, keeps["pid"]), what="the store to drop it")
    finally:
        with contextlib.suppress(Exception):
            s.run("close", "-i", "0")
        manager.close()
        if alive(keeps["pid"]):
            os.kill(keeps["pid"], 9)
