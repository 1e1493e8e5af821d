"""Talking to the service manager: socket activation (``LISTEN_FDS``) and ``sd_notify``
(READY, STATUS, STOPPING, WATCHDOG), through systemd-python's ``systemd.daemon``.

Without a service manager (no ``NOTIFY_SOCKET``) every call is a no-op.
"""

from __future__ import annotations

import os
import socket

from systemd import daemon as _sd


def activated_listener() -> socket.socket | None:
    """The listening socket passed by systemd (``LISTEN_FDS``, checked against
    ``LISTEN_PID``), made non-inheritable; None when none was passed. Unsets ``LISTEN_*``."""
    fds = _sd.listen_fds(unset_environment=True)
    if not fds:
        return None
    for extra in fds[1:]:
        os.close(extra)  # one instance, one control socket
    sock = socket.socket(fileno=fds[0])
    sock.set_inheritable(False)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.close()
        raise OSError(f"the passed fd {fds[0]} is not a unix stream socket")
    return sock


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

    def send(self, state: str) -> None:
        if not self.enabled:
            return
        try:
            _sd.notify(state)
        except OSError:  # the listener went away (an `init` that already returned)
            self.enabled = False

    def ready(self, status: str) -> None:
        self._last_status = status
        self.send(f"READY=1\nMAINPID={os.getpid()}\nSTATUS={status}")

    def status(self, status: str) -> None:
        if status != self._last_status:
            self._last_status = status
            self.send(f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1\nSTATUS=closing")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")
