"""Journal entries through systemd-python, with ``SYSLOG_IDENTIFIER=supervisor``.

Where no journald runs (or systemd-python is missing) entries go to stderr instead, one
line each (``<UTC time> supervisor[<instance>] <<priority>> <message>  <FIELD=value>...``);
the daemon never fails because it cannot log. Where that stderr is ``<runtime
dir>/<N>.log`` (the daemon ``init`` started), it is rotated beyond :data:`LOG_MAX` bytes
(to ``<N>.log.1``): a daemon logging every query cannot fill the runtime directory.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time

try:
    # the C half of systemd.journal (its sendv): the Python half imports logging, uuid and
    # more, a third of the daemon's start-up; it is imported only to read (service_log)
    from systemd import _journal
except ImportError:  # pragma: no cover - systemd-python is a dependency
    _journal = None

IDENTIFIER = "supervisor"
JOURNAL_SOCKET = "/run/systemd/journal/socket"
LOG_MAX = 8 * 1024 * 1024  # the daemon's own log file is rotated beyond this


def stamp(when: float) -> str:
    """A time at the head of a log line: ISO-8601 in UTC, to the millisecond."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class Journal:
    """Sends structured entries. Field names are upper-case journal fields."""

    def __init__(self, instance: int) -> None:
        self.instance = instance
        self.to_journal = _journal is not None and os.path.exists(JOURNAL_SOCKET)
        self._pending: list[str] = []  # stderr fallback lines not written yet
        self._log: tuple[int, str] | None = None  # (dir fd, name) of a log file we rotate

    @property
    def keeps_log(self) -> bool:
        """Whether our stderr is the log file ``init`` made (which we rotate)."""
        return self._log is not None

    def keep_log(self, dir_fd: int, name: str) -> None:
        """Our stderr is the file ``name`` in the directory ``dir_fd`` (``init`` made it):
        rotate it when it grows beyond :data:`LOG_MAX`."""
        try:
            ours, there = os.fstat(2), os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            return
        if (ours.st_dev, ours.st_ino) == (there.st_dev, there.st_ino):
            self._log = (dir_fd, name)

    def move_log(self, dir_fd: int) -> bool:
        """Files of the runtime directory were removed (``dir_fd``: it, made again or not):
        where our stderr was its log file and that is gone, a new one there becomes it.
        True when made again."""
        if self._log is None:
            return False
        self._log = (dir_fd, self._log[1])
        try:
            there = os.stat(self._log[1], dir_fd=dir_fd, follow_symlinks=False)
            ours = os.fstat(2)
            if (there.st_dev, there.st_ino) == (ours.st_dev, ours.st_ino):
                return False
        except OSError:
            pass
        try:
            self._reopen(*self._log)
        except OSError:
            return False
        return True

    def send(self, message: str, priority: int = 6, **fields) -> None:
        clean = {k: v for k, v in fields.items() if v is not None}
        if self.to_journal:
            # sendv with our own fields: journal.send() would walk the stack for CODE_*
            # on every entry, which costs more than the entry itself
            fields = [f"MESSAGE={message}", f"PRIORITY={priority}",
                      f"SYSLOG_IDENTIFIER={IDENTIFIER}", f"SUPERVISOR_INSTANCE={self.instance}",
                      *(f"{k}={v}" for k, v in clean.items())]
            try:
                try:
                    _journal.sendv(*fields)
                except UnicodeEncodeError:  # text from a name or argument that was not UTF-8
                    _journal.sendv(*(f.encode("utf-8", "backslashreplace") for f in fields))
                return
            except OSError:
                pass  # journald went away: fall back for this entry
        extra = " ".join(f"{k}={v}" for k, v in clean.items())
        line = f"{stamp(time.time())} supervisor[{self.instance}] <{priority}> {message}  " \
               f"{extra}".rstrip()
        self._pending.append(line.replace("\n", "\\n"))
        if len(self._pending) >= 256:
            self.flush()

    def flush(self) -> None:
        """Write the stderr lines gathered this turn of the loop, in one write."""
        if self._pending:
            text, self._pending = "\n".join(self._pending) + "\n", []
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(text)
                sys.stderr.flush()
            if self._log is not None:
                with contextlib.suppress(OSError):
                    if os.fstat(2).st_size > LOG_MAX:
                        self._rotate(*self._log)

    def _rotate(self, dir_fd: int, name: str) -> None:
        """<N>.log becomes <N>.log.1 (the older one dropped); a new one is our stderr."""
        os.rename(name, name + ".1", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        self._reopen(dir_fd, name)

    def _reopen(self, dir_fd: int, name: str) -> None:
        """The file ``name`` made anew (rotated, or removed) becomes our stderr, and our
        stdout where that was the same file (as ``init`` gives them)."""
        try:
            out, err = os.fstat(1), os.fstat(2)
            both = (out.st_dev, out.st_ino) == (err.st_dev, err.st_ino)
        except OSError:
            both = False
        fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        try:
            os.dup2(fd, 2)  # inheritable, as a stderr is: a live re-exec keeps it
            if both:
                os.dup2(fd, 1)
        finally:
            os.close(fd)


# ---- reading (supervisor logs) -----------------------------------------------------------


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` as a terminal may show it: control characters but the tab as ``\\xNN``. A
    service's output must not move the cursor, clear the screen or write a line of its own
    (``--json`` escapes them as JSON does)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _format(entry: dict) -> str:
    when = entry.get("__REALTIME_TIMESTAMP")
    stamp = when.astimezone().strftime("%Y-%m-%dT%H:%M:%S%z") if when else "-"
    ident = entry.get("SYSLOG_IDENTIFIER", "?")
    pid = entry.get("SERVICE_PID") if ident != IDENTIFIER else entry.get("_PID")
    message = entry.get("MESSAGE", "")
    if isinstance(message, bytes):  # not UTF-8: what it can be read as
        message = message.decode(errors="backslashreplace")
    return printable(f"{stamp} {ident}[{pid}]: {message}")


def _as_json(entry: dict) -> dict:
    when = entry.get("__REALTIME_TIMESTAMP")
    return {"time": when.timestamp() if when else None,
            "identifier": entry.get("SYSLOG_IDENTIFIER"),
            "pid": _int(entry.get("SERVICE_PID")), "message": entry.get("MESSAGE"),
            "event": entry.get("SUPERVISOR_EVENT"), "priority": _int(entry.get("PRIORITY")),
            "service": entry.get("SERVICE_NAME"), "stream": entry.get("SERVICE_STREAM")}


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def service_log(instance: int, name: str | None, *, lines: int | None = 10,
                follow: bool = False, as_json: bool = False, since: float | None = None,
                priority: int | None = None, timed: bool = False):
    """Yield the last ``lines`` entries (None: all) of a service's output and lifecycle, or
    of every service of the instance (``name`` None), formatted (a line of text, or a dict
    with ``as_json``): only those since ``since`` (epoch seconds) and of ``priority`` or
    more urgent, where given. With ``follow`` go on yielding new ones as they come, like
    ``journalctl -f``. Entries are matched by fields (``SUPERVISOR_INSTANCE``,
    ``SERVICE_NAME``), commands about services left out. ``timed``: each as (its time in
    epoch seconds, the entry formatted)."""
    if _journal is None:  # pragma: no cover - systemd-python is a dependency
        return
    import collections
    from datetime import datetime

    from systemd import journal as reading

    form = _as_json if as_json else _format
    render = form
    if timed:
        def render(entry: dict):
            when = entry.get("__REALTIME_TIMESTAMP")
            return (when.timestamp() if when else 0.0), form(entry)

    def wanted(entry: dict) -> bool:
        return "SUPERVISOR_COMMAND" not in entry and "SERVICE_NAME" in entry

    with reading.Reader() as reader:
        match = {"SUPERVISOR_INSTANCE": str(instance)}
        if name is not None:
            match["SERVICE_NAME"] = name
        reader.add_match(**match)
        if priority is not None:
            reader.log_level(priority)
        # entries are kept rendered (~0.2 KB, where the journal's dict of every field is
        # ~5 KB), and not at all where every one goes out in order: a journal of 250,000
        # matching entries took 1.2 GB before
        if since is not None:  # forwards from that time; the last ``lines`` of them
            reader.seek_realtime(datetime.fromtimestamp(since))
            if lines is None:
                while entry := reader.get_next():
                    if wanted(entry):
                        yield render(entry)
            else:
                last = collections.deque(maxlen=lines)
                while entry := reader.get_next():
                    if wanted(entry):
                        last.append(render(entry))
                yield from last
        else:
            reader.seek_tail()
            newest: list = []
            while (lines is None or len(newest) < lines) and (entry := reader.get_previous()):
                if wanted(entry):
                    newest.append(render(entry))
            yield from reversed(newest)
        if not follow:
            return
        reader.seek_tail()
        reader.get_previous()  # position on the newest entry, so get_next gives what follows
        cursor = None
        while True:
            got = False
            while entry := reader.get_next():
                got = True
                cursor = entry.get("__CURSOR", cursor)
                if wanted(entry):
                    yield render(entry)
            if reader.wait(0.5) == reading.NOP and not got and cursor:
                # A filtered reader may miss entries written in a burst (libsystemd 252);
                # seeking again makes it look afresh.
                reader.seek_cursor(cursor)
                reader.get_next()
