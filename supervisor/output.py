"""Where services' stdout and stderr go (``create-service --output``).

* ``journal`` (the default): a pipe per process whose read end goes to the instance's
  log relay (``supervisor/logrelay.py``), which writes each line as a journal entry with
  ``SYSLOG_IDENTIFIER=<service>``, ``SUPERVISOR_INSTANCE``, ``SERVICE_NAME``,
  ``SERVICE_PID``. The daemon keeps no end of the pipe and never reads it. Without a
  journald this falls back to the file ``<runtime dir>/<N>.<service>.out``.
* ``null``: ``/dev/null``. ``inherit``: the daemon's own stdout/stderr.
* an absolute path: that file, appended to (created 0640 if missing).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable

from supervisor import process

KEYWORDS = ("journal", "null", "inherit")
JOURNAL_SOCKET = "/run/systemd/journal/socket"
_FILE_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
# in the runtime directory, a link planted at the name is never followed
_OURS_FLAGS = _FILE_FLAGS | os.O_NOFOLLOW


def check(spec: str) -> str | None:
    """Why ``spec`` is no valid output, or None."""
    if spec in KEYWORDS:
        return None
    if not os.path.isabs(spec) or "\0" in spec:
        return f"output must be journal, null, inherit or an absolute path, not {spec!r}"
    try:
        os.close(os.open(spec, _FILE_FLAGS, 0o640))
    except (OSError, ValueError) as exc:
        return f"cannot write output file {spec}: {getattr(exc, 'strerror', None) or exc}"
    return None


def journald_answers(path: str = JOURNAL_SOCKET) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


class Handoff:
    """The fds made for one spawn: ``fd`` goes to the child as stdout and stderr; after the
    spawn, :meth:`Outputs.done` passes the pipe's read end on and closes the rest."""

    __slots__ = ("close", "fd", "relay_end")

    def __init__(self, fd: int, close: tuple[int, ...] = (), relay_end: int = -1) -> None:
        self.fd = fd
        self.close = close
        self.relay_end = relay_end


class Outputs:
    def __init__(self, instance: int, rundir: str, watcher, env: dict[str, str],
                 log: Callable[[str, int], None]) -> None:
        self.instance = instance
        self.rundir = rundir
        self.watcher = watcher  # supervisor.watcher.PidfdWatcher
        self.env = env
        self.log = log
        self.null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        self.relay: process.Proc | None = None
        self.control: socket.socket | None = None
        self._no_journald_until = 0.0  # time.monotonic() until which not to probe again

    def prepare(self, name: str, spec: str) -> Handoff:
        if spec == "inherit":
            return Handoff(1)
        if spec == "null":
            return Handoff(self.null)
        if spec != "journal":
            fd = os.open(spec, _FILE_FLAGS, 0o640)
            return Handoff(fd, (fd,))
        if self._relay_ready():
            r, w = os.pipe2(os.O_CLOEXEC)
            return Handoff(w, (w, r), relay_end=r)
        fd = os.open(os.path.join(self.rundir, f"{self.instance}.{name}.out"), _OURS_FLAGS,
                     0o640)
        return Handoff(fd, (fd,))

    def done(self, handoff: Handoff, name: str, pid: int | None) -> None:
        """After the spawn (``pid`` None: it failed): hand the read end to the relay, close
        the daemon's copies."""
        try:
            if handoff.relay_end >= 0 and pid is not None and self.control is not None:
                try:
                    socket.send_fds(self.control, [json.dumps({"name": name, "pid": pid})
                                                   .encode()], [handoff.relay_end])
                except OSError as exc:
                    self.log(f"cannot hand {name}'s output to the log relay: {exc}", 3)
        finally:
            for fd in handoff.close:
                os.close(fd)

    def _relay_ready(self) -> bool:
        if self.relay is not None:
            return True
        now = time.monotonic()
        if now < self._no_journald_until:
            return False
        if not journald_answers():
            # probed again at most once a second, not on every start of a busy batch
            self._no_journald_until = now + 1.0
            return False
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            ours.settimeout(5)  # a relay that stops reading must not hang the daemon for long
            self.relay = process.spawn(
                [sys.executable, "-m", "supervisor.logrelay", str(self.instance)],
                env=self.env, stdin=theirs.fileno(), stdout=2, stderr=2)
        except OSError as exc:
            ours.close()
            self.log(f"cannot start the log relay: {exc}", 3)
            return False
        finally:
            theirs.close()
        self.control = ours
        self.watcher.watch(self.relay, self._relay_exited)
        self.log(f"log relay started with pid {self.relay.pid}", 6)
        return True

    def _relay_exited(self, relay: process.Proc, code: int | None, signo: int | None) -> None:
        self.relay = None
        if self.control is not None:
            self.control.close()
            self.control = None
        self.log(f"log relay (pid {relay.pid}) ended (code {code}, signal {signo}); "
                 "the next service start begins a new one", 3)

    def carry(self) -> dict | None:
        """What a re-exec must carry over: the relay's pid, pidfd and socket."""
        if self.relay is None or self.control is None:
            return None
        return {"pid": self.relay.pid, "pidfd": self.relay.pidfd,
                "control": self.control.fileno()}

    def restore(self, carried: dict | None) -> None:
        if not carried:
            return
        for fd in (carried["pidfd"], carried["control"]):
            os.set_inheritable(fd, False)
        self.relay = process.Proc(carried["pid"], carried["pidfd"], child=True)
        self.control = socket.socket(fileno=carried["control"])
        self.watcher.watch(self.relay, self._relay_exited)

    def close(self) -> None:
        """Hang up on the relay: it drains the pipes it has and exits by itself."""
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.relay is not None:
            # not reaped here: it outlives us briefly, then init reaps it
            self.watcher.release(self.relay)
            self.relay = None
        os.close(self.null)
