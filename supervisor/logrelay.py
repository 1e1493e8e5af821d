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

Where no journald answered when it started, the relay is given the runtime directory and
writes each line to the service's file there instead (``supervisor/outfiles.py``: with the
time, the stream and the pid; rotated, so that it stays bounded).

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
import time

from systemd._journal import sendv  # systemd.journal.sendv, without its Python half

from supervisor import outfiles

LINE_MAX = 48 * 1024  # journald's default LineMax


PRIORITY = {"stdout": 6, "stderr": 3}


class Stream:
    __slots__ = ("buf", "fd", "fields", "label", "name", "pid", "writer")

    def __init__(self, fd: int, name: str, pid: int, instance: int, label: str) -> None:
        self.fd = fd
        self.name = name
        self.pid = pid
        self.label = label
        self.buf = b""
        self.writer: outfiles.Writer | None = None  # its file, where no journald runs
        self.fields = (f"PRIORITY={PRIORITY.get(label, 6)}", f"SYSLOG_IDENTIFIER={name}",
                       f"SYSLOG_PID={pid}", f"SUPERVISOR_INSTANCE={instance}",
                       f"SERVICE_NAME={name}", f"SERVICE_PID={pid}",
                       f"SERVICE_STREAM={label}")


class Relay:
    def __init__(self, control: socket.socket, instance: int, dir_fd: int | None = None) -> None:
        """``dir_fd``: the runtime directory, where no journald runs: lines go to files
        there (one :class:`outfiles.Writer` a service, shared by its pipes)."""
        self.control = control
        self.instance = instance
        self.dir_fd = dir_fd
        self.writers: dict[str, outfiles.Writer] = {}
        self.sel = selectors.DefaultSelector()
        self.sel.register(control, selectors.EVENT_READ, self._on_control)
        self.streams = 0  # pipes still open
        self.hung_up = False
        self.lost = 0  # lines journald did not take while it did not answer

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
            if isinstance(meta, dict) and meta.get("dir") is True and len(fds) == 2:
                self._moved(*fds)
                return
            name, pid = str(meta["name"]), int(meta["pid"])
            labels = [str(x) for x in meta.get("streams", ())]
            labels += ["stdout"] * (len(fds) - len(labels))
        except (ValueError, KeyError, TypeError):
            for fd in fds:
                os.close(fd)
            return
        writer = None
        if self.dir_fd is not None:
            writer = self.writers.get(name)
            if writer is None:  # its file is made at its first line
                writer = self.writers[name] = outfiles.Writer(self.dir_fd, self.instance, name)
        for fd, label in zip(fds, labels, strict=False):
            os.set_blocking(fd, False)
            stream = Stream(fd, name, pid, self.instance, label)
            stream.writer = writer
            if writer is not None:
                writer.refs += 1
            self.sel.register(fd, selectors.EVENT_READ,
                              functools.partial(self._on_output, stream))
            self.streams += 1

    def _moved(self, dir_fd: int, stderr: int) -> None:
        """The daemon made the runtime directory again: its files there from now on (each
        one open is opened anew), and our own lines to its new stderr."""
        os.dup2(stderr, 2)
        os.close(stderr)
        if self.dir_fd is None:
            os.close(dir_fd)
            return
        os.close(self.dir_fd)
        self.dir_fd = dir_fd
        for name, writer in self.writers.items():
            was_open = writer.fd >= 0
            writer.close()
            writer.dir_fd = dir_fd
            if not was_open:
                continue  # made at its first line, as before
            try:
                writer.open()
            except OSError as exc:  # tried again at its next line (its lines counted lost)
                self._say(f"cannot open {name}'s output file again: {exc}")

    def _on_output(self, stream: Stream) -> None:
        try:
            data = os.read(stream.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            if stream.buf:
                self._emit(stream, [stream.buf])
            self.sel.unregister(stream.fd)
            os.close(stream.fd)
            self.streams -= 1
            self._done_with(stream)
            return
        buf = stream.buf + data
        *lines, rest = buf.split(b"\n")
        while len(rest) > LINE_MAX:
            lines.append(rest[:LINE_MAX])
            rest = rest[LINE_MAX:]
        stream.buf = rest
        if any(len(line) > LINE_MAX for line in lines):  # a long one ended in this read
            lines = [line[i:i + LINE_MAX] for line in lines
                     for i in range(0, max(len(line), 1), LINE_MAX)]
        if lines:
            self._emit(stream, lines)

    def _done_with(self, stream: Stream) -> None:
        writer = stream.writer
        if writer is not None:
            writer.refs -= 1
            if writer.refs == 0:  # no process of that service writes any more
                writer.close()
                del self.writers[stream.name]

    def _emit(self, stream: Stream, lines: list[bytes]) -> None:
        if self.dir_fd is not None:
            if stream.writer is not None:
                try:
                    stream.writer.write(time.time(), stream.label, stream.pid, lines)
                except OSError:
                    pass  # a full disk: the lines are lost, the service is not hurt
            return
        for line in lines:
            self._line(stream, line)

    def _line(self, stream: Stream, line: bytes) -> None:
        try:
            if self.lost:  # journald answers again: what it missed is said first
                sendv(f"MESSAGE=supervisor: {self.lost} lines of output lost while journald "
                      "did not answer", "PRIORITY=3", *stream.fields[1:])
                self._say(f"journald answers again; {self.lost} lines of output were lost")
                self.lost = 0
            # sendv with the fields given: journal.send() would walk the stack for CODE_*
            # on every line, which costs more than the line itself
            sendv("MESSAGE=" + line.decode(errors="replace"), *stream.fields)
        except OSError as exc:  # journald is gone: the line is lost, the service not hurt
            if not self.lost:
                self._say(f"journald does not answer ({exc.strerror or exc}): services' "
                          "output is lost until it does")
            self.lost += 1

    def _say(self, message: str) -> None:
        """A line as the daemon's own, where they both write (its stderr, <N>.log)."""
        print(f"{outfiles.stamp(time.time())} supervisor[{self.instance}] <3> log relay: "
              f"{message}", file=sys.stderr, flush=True)


def main() -> int:
    if len(sys.argv) not in (2, 3) or not sys.argv[1].isdigit():
        print("usage: python -m supervisor.logrelay <instance> [<runtime dir>]  (stdin: the "
              "daemon's socket; with the directory: lines to files there, not the journal)",
              file=sys.stderr)
        return 2
    dir_fd = None
    if len(sys.argv) == 3:
        try:
            dir_fd = os.open(sys.argv[2], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:  # the runtime directory is gone (the daemon makes it again)
            print(f"supervisor-logrelay: cannot open {sys.argv[2]}: {exc.strerror}",
                  file=sys.stderr)
            return 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    control = socket.socket(fileno=os.dup(0))
    control.setblocking(True)  # the daemon's end is non-blocking, ours waits
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    Relay(control, int(sys.argv[1]), dir_fd).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
