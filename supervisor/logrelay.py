"""supervisor-logrelay: carries services' output into the journal, with their fields.

A journal stream fd (``/run/systemd/journal/stdout``, what systemd's
``StandardOutput=journal`` hands a service) can carry a ``SYSLOG_IDENTIFIER`` but no
fields of our own, so the daemon cannot give one to a child and still have its lines carry
``SUPERVISOR_INSTANCE`` and ``SERVICE_NAME``. Instead each instance has one relay process:
the daemon makes a pipe per service process, hands the write end to the child and the read
end to the relay (``SCM_RIGHTS`` over the relay's stdin, a ``SOCK_SEQPACKET`` socket), and
keeps neither. The daemon is not in the data path: its CPU time does not grow with what
services print.

Each line becomes one entry: ``MESSAGE``, ``PRIORITY`` (6 for stdout, 3 for stderr, as
docker's journald driver does), ``SYSLOG_IDENTIFIER=<service>``, ``SYSLOG_PID=<its pid>``
(what ``journalctl -t <service>`` shows in brackets), ``SUPERVISOR_INSTANCE``,
``SERVICE_NAME``, ``SERVICE_PID``, ``SERVICE_STREAM`` (stdout or stderr). A line longer
than :data:`LINE_MAX` is cut into several entries, as journald does.

The relay exits once the daemon has hung up and every pipe has reached EOF.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import selectors
import socket
import sys

from systemd._journal import sendv  # systemd.journal.sendv, without its Python half

LINE_MAX = 48 * 1024  # journald's default LineMax


PRIORITY = {"stdout": 6, "stderr": 3}


class Stream:
    __slots__ = ("buf", "fd", "fields", "name", "pid")

    def __init__(self, fd: int, name: str, pid: int, instance: int, label: str) -> None:
        self.fd = fd
        self.name = name
        self.pid = pid
        self.buf = b""
        self.fields = (f"PRIORITY={PRIORITY.get(label, 6)}", f"SYSLOG_IDENTIFIER={name}",
                       f"SYSLOG_PID={pid}", f"SUPERVISOR_INSTANCE={instance}",
                       f"SERVICE_NAME={name}", f"SERVICE_PID={pid}",
                       f"SERVICE_STREAM={label}")


class Relay:
    def __init__(self, control: socket.socket, instance: int) -> None:
        self.control = control
        self.instance = instance
        self.sel = selectors.DefaultSelector()
        self.sel.register(control, selectors.EVENT_READ, self._on_control)
        self.streams = 0  # pipes still open
        self.hung_up = False

    def run(self) -> None:
        while not (self.hung_up and self.streams == 0):
            for key, _mask in self.sel.select():
                key.data()
        self.sel.close()

    def _on_control(self) -> None:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(self.control, 4096, 16)
        except (BlockingIOError, InterruptedError):
            return
        if not msg and not fds:
            self.sel.unregister(self.control)
            self.control.close()
            self.hung_up = True
            return
        try:
            meta = json.loads(msg)
            name, pid = str(meta["name"]), int(meta["pid"])
            labels = [str(x) for x in meta.get("streams", ())]
            labels += ["stdout"] * (len(fds) - len(labels))
        except (ValueError, KeyError, TypeError):
            for fd in fds:
                os.close(fd)
            return
        for fd, label in zip(fds, labels, strict=False):
            os.set_blocking(fd, False)
            stream = Stream(fd, name, pid, self.instance, label)
            self.sel.register(fd, selectors.EVENT_READ,
                              functools.partial(self._on_output, stream))
            self.streams += 1

    def _on_output(self, stream: Stream) -> None:
        try:
            data = os.read(stream.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            if stream.buf:
                self._emit(stream, stream.buf)
            self.sel.unregister(stream.fd)
            os.close(stream.fd)
            self.streams -= 1
            return
        buf = stream.buf + data
        *lines, rest = buf.split(b"\n")
        for line in lines:
            self._emit(stream, line)
        while len(rest) > LINE_MAX:
            self._emit(stream, rest[:LINE_MAX])
            rest = rest[LINE_MAX:]
        stream.buf = rest

    def _emit(self, stream: Stream, line: bytes) -> None:
        try:
            # sendv with the fields given: journal.send() would walk the stack for CODE_*
            # on every line, which costs more than the line itself
            sendv("MESSAGE=" + line.decode(errors="replace"), *stream.fields)
        except OSError:
            pass  # journald is gone: the line is lost, the service is not hurt


def main() -> int:
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        print("usage: python -m supervisor.logrelay <instance>  (stdin: the daemon's socket)",
              file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    control = socket.socket(fileno=os.dup(0))
    control.setblocking(True)  # the daemon's end is non-blocking, ours waits
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    Relay(control, int(sys.argv[1])).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
