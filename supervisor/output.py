"""Where services' stdout and stderr go (``create-service --output``).

* ``journal`` (the default): two pipes per process (stdout, stderr) whose read ends go to
  the instance's log relay (``supervisor/logrelay.py``), which writes each line as a
  journal entry with ``SYSLOG_IDENTIFIER=<service>``, ``SYSLOG_PID=<its pid>``,
  ``SUPERVISOR_INSTANCE``, ``SERVICE_NAME``, ``SERVICE_PID``, ``SERVICE_STREAM`` (stdout
  or stderr) and ``PRIORITY`` 6 for stdout, 3 for stderr. The daemon keeps a read end of
  each and never reads it (see :class:`Outputs`). Without a journald (when the relay
  starts) the relay writes the lines to ``<runtime dir>/<N>.<service>.out`` instead, with
  their time, stream and pid, rotated to stay bounded (``supervisor/outfiles.py``); only
  where no relay can be started at all does the service write to that file itself.
* ``null``: ``/dev/null``. ``inherit``: the daemon's own stdout/stderr.
* an absolute path: that file, appended to (created 0640 if missing).
"""

from __future__ import annotations

import collections
import fcntl
import functools
import json
import os
import selectors
import signal
import socket
import struct
import sys
import termios
import time
from collections.abc import Callable

from supervisor import process

KEYWORDS = ("journal", "null", "inherit")
JOURNAL_SOCKET = "/run/systemd/journal/socket"
# O_NONBLOCK: a FIFO without a reader must not block the daemon (it fails with ENXIO);
# cleared again before the fd goes to a service
_FILE_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK
# in the runtime directory, a link planted at the name is never followed
_OURS_FLAGS = _FILE_FLAGS | os.O_NOFOLLOW


def open_output(path: str, flags: int = _FILE_FLAGS) -> int:
    """An output file opened for a service, without ever blocking the daemon."""
    fd = os.open(path, flags, 0o640)
    os.set_blocking(fd, True)
    return fd


def check(spec: str, rundir: str | None = None) -> str | None:
    """Why ``spec`` is no valid output, or None. ``rundir``: the daemon's runtime
    directory, whose files (its state, its log, other services' output) are the daemon's
    own: never a service's output."""
    if spec in KEYWORDS:
        return None
    if not os.path.isabs(spec) or "\0" in spec:
        return f"output must be journal, null, inherit or an absolute path, not {spec!r}"
    if rundir is not None and (os.path.dirname(os.path.realpath(spec)) ==
                               os.path.realpath(rundir) or _linked_into(spec, rundir)):
        return f"output {spec}: a file of the daemon's runtime directory, {rundir} (its " \
               "state, its log), cannot be a service's output"
    try:
        os.close(open_output(spec))
    except (OSError, ValueError) as exc:
        return f"cannot write output file {spec}: {getattr(exc, 'strerror', None) or exc}"
    return None


def _linked_into(path: str, directory: str) -> bool:
    """Whether the file at ``path`` is one of ``directory``'s (a hard link to it)."""
    try:
        st = os.stat(path)
        if st.st_nlink < 2:  # a file of one name: that name is not in the directory
            return False
        names = os.listdir(directory)
    except OSError:
        return False
    for name in names:
        try:
            other = os.stat(os.path.join(directory, name), follow_symlinks=False)
        except OSError:
            continue
        if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
            return True
    return False


def journald_answers(path: str = JOURNAL_SOCKET) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def _unread(stream: tuple[str, int, int]) -> bool:
    """Whether a service's pipes (our read ends) still hold bytes no relay has read."""
    return any(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
               for fd in stream[1:])


class Handoff:
    """The fds made for one spawn: ``out`` and ``err`` go to the child as stdout and
    stderr; after the spawn, :meth:`Outputs.done` keeps the pipes' read ends
    (``streams``, stdout's and stderr's) and closes the rest (``close``)."""

    __slots__ = ("close", "err", "out", "streams")

    def __init__(self, out: int, err: int | None = None, close: tuple[int, ...] = (),
                 streams: tuple[int, int] | None = None) -> None:
        self.out = out
        self.err = out if err is None else err
        self.close = close
        self.streams = streams


class Outputs:
    """Where services' output goes, and the instance's log relay.

    The relay cannot take services down: for each service process whose output goes to
    the journal the daemon keeps the read end of its pipe (and never reads it), so the
    pipe always has a reader and a write never raises SIGPIPE; the relay gets its own copy
    (``SCM_RIGHTS``). When the relay dies it is started again (at once; after 1 s, 2 s...
    up to 60 s when it keeps dying within a second of its start) and handed every pipe
    again; meanwhile output waits in the pipes.

    Nor can it hold the daemon up: its socket is non-blocking; pipes it does not take at
    once wait in a queue, sent when the socket is writable again; a relay that takes none
    for :data:`STUCK` seconds (stopped, hung) is killed, and the next one is handed all.
    """

    STUCK = 10.0

    def __init__(self, instance: int, rundir: str, watcher, env: dict[str, str],
                 log: Callable[[str, int], None], timers=None) -> None:
        self.instance = instance
        self.rundir = rundir
        self.watcher = watcher  # supervisor.watcher.PidfdWatcher
        self.timers = timers  # supervisor.timers.Timers (CLOCK_BOOTTIME), for back-off
        self.env = env
        self.log = log
        self.null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        self.relay: process.Proc | None = None
        self.control: socket.socket | None = None
        # pid -> (service, read end of its stdout pipe, of its stderr pipe)
        self.streams: dict[int, tuple[str, int, int]] = {}
        # of those, the pids gone (in order) whose pipes still hold what they wrote
        self.ended: dict[int, None] = {}
        self._drained = None  # the timer of the next look at them
        self._queue: collections.deque[int] = collections.deque()  # pids to hand over
        self._sent = 0  # pipes handed so far (progress, for the stuck check)
        self._stuck = None  # the timer of the stuck check, while pipes wait
        self._no_relay_until = 0.0  # time.monotonic() until which not to try a relay again
        self._started = 0.0  # when the relay last started (time.monotonic())
        self._backoff = 0.0  # seconds before the next restart, while it keeps dying
        self._restart = None  # the timer of a restart that waits
        # our stdout and stderr are init's log file, <N>.log: a service given them would
        # write into it past its rotation, lines looking like ours among them; its output
        # goes where journal's does instead
        self.inherit_as_journal = False

    def prepare(self, name: str, spec: str) -> Handoff:
        if spec == "inherit" and not self.inherit_as_journal:
            return Handoff(1, 2)
        if spec == "null":
            return Handoff(self.null)
        if spec not in ("journal", "inherit"):
            fd = open_output(spec)
            return Handoff(fd, close=(fd,))
        if self._restart is not None or self._relay_ready():
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            try:
                err_r, err_w = os.pipe2(os.O_CLOEXEC)
            except OSError:
                os.close(out_r)
                os.close(out_w)
                raise
            return Handoff(out_w, err_w, close=(out_w, err_w), streams=(out_r, err_r))
        fd = open_output(os.path.join(self.rundir, f"{self.instance}.{name}.out"), _OURS_FLAGS)
        return Handoff(fd, close=(fd,))

    def done(self, handoff: Handoff, name: str, pid: int | None) -> None:
        """After the spawn (``pid`` None: it failed): keep the read ends and hand copies to
        the relay; close the daemon's copies of the write ends."""
        for fd in handoff.close:
            os.close(fd)
        if handoff.streams is None:
            return
        if pid is None:
            for fd in handoff.streams:
                os.close(fd)
            return
        if pid in self.streams:  # an ended process's, kept unread: its pid is given out again
            self.log(f"{self.streams[pid][0]}'s last output (pid {pid}) is lost: no log relay "
                     "read it before its pid was given to another process", 4)
            self._close_stream(pid)
        self.streams[pid] = (name, *handoff.streams)
        self._hand(pid)

    MAX_ENDED = 256  # ended services' pipes kept for a relay to come (two fds each)
    DRAINED = 1.0  # seconds between looks at whether a relay drained ended pipes

    def release(self, pid: int) -> None:
        """The process ``pid`` is gone: once its pipes are empty, they need no reader of
        ours any more. While they hold what it wrote last (no relay runs, one is being
        started again, or the one that has them has not read them yet: it may die
        first), they are kept for a relay to drain, looked at again every DRAINED s."""
        if pid not in self.streams:
            return
        if not _unread(self.streams[pid]):
            self._close_stream(pid)
            return
        self.ended[pid] = None
        if len(self.ended) > self.MAX_ENDED:  # the oldest's output is given up, and said
            oldest = next(iter(self.ended))
            self.log(f"{self.streams[oldest][0]}'s last output (pid {oldest}) is lost: no log "
                     f"relay took it, and {self.MAX_ENDED} more wait", 4)
            self._close_stream(oldest)
        self._look_later()

    def _look_later(self) -> None:
        if self._drained is None and self.ended and self.timers is not None:
            self._drained = self.timers.call_at(self.timers.now() + self.DRAINED,
                                                self._close_drained)

    def _close_drained(self) -> None:
        self._drained = None
        for pid in list(self.ended):
            if not _unread(self.streams[pid]):
                self._close_stream(pid)
        self._look_later()

    def _close_stream(self, pid: int) -> None:
        self.ended.pop(pid, None)
        if pid in self._queue:  # not handed yet, and never to be
            self._queue.remove(pid)
        _name, out, err = self.streams.pop(pid)
        os.close(out)
        os.close(err)

    def _hand(self, pid: int) -> None:
        if self.control is None:
            return  # the next relay gets it
        self._queue.append(pid)
        if len(self._queue) == 1:
            self._drain()

    def _drain(self, mask: int = 0) -> None:
        """Send the pipes that wait, while the relay's socket takes them."""
        queue = self._queue
        while queue and self.control is not None:
            stream = self.streams.get(queue[0])
            if stream is None:  # its process is gone meanwhile
                queue.popleft()
                continue
            name, out, err = stream
            try:
                socket.send_fds(self.control, [json.dumps(
                    {"name": name, "pid": queue[0], "streams": ["stdout", "stderr"]}
                ).encode()], [out, err])
            except BlockingIOError:
                break
            except OSError as exc:
                self.log(f"cannot hand {name}'s output to the log relay: {exc}", 3)
            queue.popleft()
            self._sent += 1
        self._want_writable(bool(queue) and self.control is not None)

    def _want_writable(self, want: bool) -> None:
        sel = self.watcher.sel
        registered = self.control is not None and self._stuck is not None
        if want and not registered:
            sel.register(self.control, selectors.EVENT_WRITE, self._drain)
            self._stuck = self.timers.call_at(self.timers.now() + self.STUCK,
                                              functools.partial(self._check, self._sent))
        elif not want and self._stuck is not None:
            if self.control is not None:
                sel.unregister(self.control)
            self.timers.cancel(self._stuck)
            self._stuck = None

    def _check(self, sent: int) -> None:
        """STUCK seconds after pipes began to wait: a relay that took none since is
        killed (the next one is handed every pipe)."""
        self._stuck = None
        if self.relay is None or self.control is None:
            return
        if self._sent == sent and self._queue:
            self.log(f"log relay (pid {self.relay.pid}) took no pipe for {self.STUCK:g} s: "
                     "killed", 3)
            self.watcher.sel.unregister(self.control)
            process.send(self.relay, signal.SIGKILL)
            return
        self._stuck = self.timers.call_at(self.timers.now() + self.STUCK,
                                          functools.partial(self._check, self._sent))

    def _relay_ready(self) -> bool:
        if self.relay is not None:
            return True
        now = time.monotonic()
        if now < self._no_relay_until:
            return False
        argv = [sys.executable, "-m", "supervisor.logrelay", str(self.instance)]
        where = "the journal"
        if not journald_answers():  # lines to files in the runtime directory, rotated
            argv.append(self.rundir)
            where = f"files in {self.rundir} (no journald answers)"
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            ours.setblocking(False)  # a relay that stops reading must not hang the daemon
            self.relay = process.spawn(argv, env=self.env, stdin=theirs.fileno(), stdout=2,
                                       stderr=2)
        except OSError as exc:
            ours.close()
            self.log(f"cannot start the log relay: {exc}", 3)
            # tried again at most once a second, not on every start of a busy batch
            self._no_relay_until = now + 1.0
            return False
        finally:
            theirs.close()
        self.control = ours
        self._started = now
        self.watcher.watch(self.relay, self._relay_exited)
        self.log(f"log relay started with pid {self.relay.pid}: output to {where}", 6)
        for pid in self.streams:  # after a restart: every live pipe
            self._hand(pid)
        return True

    def _relay_exited(self, relay: process.Proc, code: int | None, signo: int | None) -> None:
        self._want_writable(False)
        self._queue.clear()  # the next relay is handed every pipe
        self.relay = None
        if self.control is not None:
            self.control.close()
            self.control = None
        quick = time.monotonic() - self._started < 1.0
        self._backoff = min(max(self._backoff * 2, 1.0), 60.0) if quick else 0.0
        self.log(f"log relay (pid {relay.pid}) ended (code {code}, signal {signo}); "
                 + (f"starting another in {self._backoff:g} s" if self._backoff
                    else "starting another"), 3)
        if not self.streams:
            return  # the next service start begins a new one
        if self._backoff and self.timers is not None:
            self._restart = self.timers.call_at(self.timers.now() + self._backoff,
                                                self._restart_relay)
        else:
            self._relay_ready()

    def _restart_relay(self) -> None:
        self._restart = None
        if self.relay is None and self.streams:
            self._relay_ready()

    def moved(self, dir_fd: int) -> None:
        """The runtime directory was made again (``dir_fd``), and our stderr is a new file
        there: the relay is handed both, so its files go to the new directory (and its
        own lines where ours go); one that cannot take them at once is killed, and the
        next one starts there (one waiting out its back-off, as it could not start without
        the directory, starts now)."""
        if self.relay is None:
            if self._restart is not None and self.timers is not None:
                self.timers.cancel(self._restart)
                self._restart_relay()
            return
        if self.control is None:
            return
        try:
            socket.send_fds(self.control, [b'{"dir": true}'], [dir_fd, 2])
        except OSError:  # (it is ending, or its socket is full)
            process.send(self.relay, signal.SIGKILL)

    def relay_stopped(self, pid: int) -> bool:
        """Whether ``pid``, reported stopped, is the relay: a stopped relay reads no pipe,
        and every service would soon block in its writes; it is killed (and started
        again, handed every pipe, as after any end)."""
        if self.relay is None or self.relay.pid != pid:
            return False
        self.log(f"log relay (pid {pid}) was stopped: killed, and started again (stopped, "
                 "it would block every service's output)", 3)
        process.send(self.relay, signal.SIGKILL)
        return True

    @property
    def relay_pid(self) -> int | None:
        return self.relay.pid if self.relay is not None else None

    def carry(self) -> dict | None:
        """What a re-exec must carry over: the relay's pid, pidfd and socket, and the
        pipes' read ends."""
        relay = None
        if self.relay is not None and self.control is not None:
            relay = {"pid": self.relay.pid, "pidfd": self.relay.pidfd,
                     "control": self.control.fileno()}
        return {"relay": relay,
                "streams": [{"pid": pid, "name": name, "fd": out, "err": err}
                            for pid, (name, out, err) in self.streams.items()],
                "waiting": list(self._queue), "ended": list(self.ended)}

    def carried_fds(self, carried: dict) -> list[int]:
        relay = carried["relay"]
        return [*((relay["pidfd"], relay["control"]) if relay else ()),
                *(fd for s in carried["streams"] for fd in (s["fd"], s.get("err"))
                  if fd is not None)]

    def restore(self, carried: dict | None) -> None:
        if not carried:
            return
        if "streams" not in carried:  # from a version that carried the relay alone
            carried = {"relay": carried, "streams": []}
        for fd in self.carried_fds(carried):
            os.set_inheritable(fd, False)
        for entry in carried["streams"]:
            err = entry.get("err")
            if err is None:  # an older version's: one pipe for both
                err = os.dup(entry["fd"])
                os.set_inheritable(err, False)
            self.streams[entry["pid"]] = (entry["name"], entry["fd"], err)
        self.ended = dict.fromkeys(p for p in carried.get("ended", ()) if p in self.streams)
        relay = carried["relay"]
        if relay:
            self.relay = process.Proc(relay["pid"], relay["pidfd"], child=True)
            self.control = socket.socket(fileno=relay["control"])
            self._started = time.monotonic()
            self.watcher.watch(self.relay, self._relay_exited)
            for pid in carried.get("waiting", ()):  # pipes it had not taken yet
                if pid in self.streams:
                    self._hand(pid)
        elif self.streams:  # it was dead, its restart waiting: now
            self._relay_ready()
        self._look_later()

    def close(self) -> None:
        """Hang up on the relay: it drains the pipes it has and exits by itself."""
        if self._restart is not None and self.timers is not None:
            self.timers.cancel(self._restart)
            self._restart = None
        self._want_writable(False)
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.relay is not None:
            # not reaped here: it outlives us briefly, then init reaps it
            self.watcher.release(self.relay)
            self.relay = None
        for _name, out, err in self.streams.values():
            os.close(out)
            os.close(err)
        self.streams.clear()
        self.ended.clear()
        if self._drained is not None and self.timers is not None:
            self.timers.cancel(self._drained)
            self._drained = None
        os.close(self.null)
