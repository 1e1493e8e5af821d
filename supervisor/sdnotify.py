"""Talking to the service manager: socket activation (``LISTEN_FDS``), ``sd_notify``
(READY, STATUS, STOPPING, WATCHDOG) and its fd store, through systemd-python's
``systemd.daemon``.

The fd store (``FDSTORE=1``) keeps the pidfd of every service while the daemon runs; when
the daemon crashes and systemd starts it again, the pidfds come back in ``LISTEN_FDS``
(named ``svc-<pid>``): each is the very process, whatever happened to its pid meanwhile,
and tells how it ended if it did. It is used where the manager says it keeps fds:
``$FDSTORE`` (systemd >= 254 sets it to ``FileDescriptorStoreMax=``) or
``$SUPERVISOR_FDSTORE`` (our unit sets it for older systemd).

Without a service manager (no ``NOTIFY_SOCKET``) every call is a no-op.
"""

from __future__ import annotations

import os
import socket

from systemd import daemon as _sd

PIDFD_NAME = "svc-"  # FDNAME of a service's pidfd in the fd store: svc-<pid>


def activated_fds() -> tuple[socket.socket | None, dict[int, int]]:
    """What systemd passed (``LISTEN_FDS``, checked against ``LISTEN_PID``): the listening
    socket, made non-inheritable (None when none was passed), and the pidfds its fd store
    kept, by pid. Unsets ``LISTEN_*``."""
    listener, pidfds = None, {}
    for fd, name in _sd.listen_fds_with_names(unset_environment=True).items():
        os.set_inheritable(fd, False)
        tail = name[len(PIDFD_NAME):]
        if name.startswith(PIDFD_NAME) and tail.isdigit():
            pidfds[int(tail)] = fd
        elif listener is None:
            listener = socket.socket(fileno=fd)
            if listener.family != socket.AF_UNIX or listener.type != socket.SOCK_STREAM:
                listener.close()
                for kept in pidfds.values():
                    os.close(kept)
                raise OSError(f"the passed fd {fd} is not a unix stream socket")
        else:
            os.close(fd)  # one instance, one control socket
    return listener, pidfds


class Notifier:
    """sd_notify for the daemon. ``watchdog_interval``: seconds between WATCHDOG=1 pings
    (half of ``WATCHDOG_USEC``), or None when the manager wants none."""

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self.watchdog_interval: float | None = None
        usec = os.environ.get("WATCHDOG_USEC")
        owner = os.environ.get("WATCHDOG_PID")
        if self.enabled and usec and usec.isdigit() and int(usec) > 0 \
                and (not owner or owner == str(os.getpid())):
            self.watchdog_interval = int(usec) / 2e6
        self._last_status: str | None = None
        limit = os.environ.get("FDSTORE") or os.environ.get("SUPERVISOR_FDSTORE") or ""
        self.fdstore = int(limit) if self.enabled and limit.isdigit() else 0
        self.stored: set[int] = set()  # pids whose pidfd the manager keeps

    def send(self, state: str, fds: list[int] | None = None) -> None:
        if not self.enabled:
            return
        try:
            if fds:
                _sd.notify(state, fds=fds)
            else:  # systemd-python 235 takes fds=None for a sequence
                _sd.notify(state)
        except OSError:  # the listener went away (an `init` that already returned)
            self.enabled = False

    def keep(self, pid: int, pidfd: int, *, sent: bool = False) -> None:
        """Have the manager keep a service's pidfd (``sent``: it has it already, from
        before a re-exec or a crash). FDPOLL=0: it must keep it after the process ends,
        that is when it matters."""
        if not self.fdstore or pid in self.stored:
            return
        if not sent:
            if len(self.stored) >= self.fdstore:
                return  # full: that service falls back to start time and cgroup
            self.send(f"FDSTORE=1\nFDNAME={PIDFD_NAME}{pid}\nFDPOLL=0", fds=[pidfd])
        self.stored.add(pid)

    def drop(self, pid: int) -> None:
        """The pidfd of ``pid`` is of no more use (reaped, released)."""
        if pid in self.stored:
            self.stored.discard(pid)
            self.send(f"FDSTOREREMOVE=1\nFDNAME={PIDFD_NAME}{pid}")

    def ready(self, status: str) -> None:
        self._last_status = status
        self.send(f"READY=1\nMAINPID={os.getpid()}\nSTATUS={status}")

    def status(self, status: str) -> None:
        if status != self._last_status:
            self._last_status = status
            self.send(f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1\nSTATUS=closing")

    def extend_stop(self, seconds: float) -> None:
        """The close takes up to ``seconds`` more (the services' own stop timeouts): the
        manager's stop timeout (TimeoutStopSec) is extended to that, not cut short."""
        self.send(f"EXTEND_TIMEOUT_USEC={max(1, round(seconds * 1e6))}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")
