"""Services' output where no journald runs: ``<runtime dir>/<N>.<service>.out``.

The log relay (``supervisor/logrelay.py``) writes them, the CLI's ``logs`` reads them; this
module owns their format. One line of output is one line of the file::

    2026-12-05T23:44:55.123456Z stdout 1234 the line as the service wrote it

(when the relay read it, in UTC; the stream; the pid of the process that wrote it.) A file
is rotated at :data:`MAX_BYTES`: it becomes ``<N>.<service>.out.1`` (the older one is
dropped), so a service's output takes at most twice that, whatever it prints. The files
outlive their service (its output is what one reads after it crashed); ``logs`` shows
them after the service is removed, as journalctl would, with the services' lifecycle
entries from the daemon's own log (``<N>.log``, see ``supervisor/journal.py``).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime

MAX_BYTES = 8 * 1024 * 1024  # a service's output file is rotated beyond this
PRIORITY = {"stdout": 6, "stderr": 3}
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW


def name_of(instance: int, service: str) -> str:
    return f"{instance}.{service}.out"


def _when(text: str) -> float:
    """The epoch seconds of a stamp (ValueError: not one)."""
    if not text.endswith("Z"):
        raise ValueError(text)
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC).timestamp()


def stamp(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Writer:
    """One service's file, appended to by the relay (``dir_fd``: the runtime directory).
    It is opened (made) at the first line: a service that never prints has none."""

    __slots__ = ("dir_fd", "fd", "lost", "name", "refs", "size", "why")

    def __init__(self, dir_fd: int, instance: int, service: str) -> None:
        self.dir_fd = dir_fd
        self.name = name_of(instance, service)
        self.refs = 0  # pipes that write here
        self.fd = -1
        self.size = 0
        self.lost = 0  # lines that could not be written (a full disk), said once it can
        self.why = ""

    def open(self) -> None:
        self.fd = os.open(self.name, _FLAGS, 0o640, dir_fd=self.dir_fd)
        self.size = os.fstat(self.fd).st_size

    def write(self, when: float, stream: str, pid: int, lines: list[bytes]) -> None:
        """Append ``lines``; OSError when they could not be (a full disk): they are
        counted, and the first write that can says how many were lost, as journald says
        what it suppressed."""
        head = f"{stamp(when)} {stream} {pid} ".encode()
        data = b"".join(head + line + b"\n" for line in lines)
        if self.lost:
            data = (f"{stamp(when)} stderr {pid} supervisor: {self.lost} lines of output "
                    f"lost before this one ({self.why})\n").encode() + data
        view = memoryview(data)
        try:
            if self.fd < 0:
                self.open()
            if self.size and self.size + len(data) > MAX_BYTES:
                self.rotate()
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:  # a full disk: whole lines only, never one glued to the next
            if self.fd >= 0:
                with contextlib.suppress(OSError):
                    os.ftruncate(self.fd, self.size)
            self.lost += len(lines)
            self.why = exc.strerror or str(exc)
            raise
        self.size += len(data)
        self.lost = 0

    def rotate(self) -> None:
        try:
            os.rename(self.name, self.name + ".1", src_dir_fd=self.dir_fd,
                      dst_dir_fd=self.dir_fd)
        except FileNotFoundError:  # removed by hand: a new one, as if rotated
            pass
        os.close(self.fd)
        self.fd = -1
        self.open()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def parse(line: str, service: str) -> dict:
    """An entry (the shape of ``journal._as_json``) from one line of a file. A line not in
    the format (written straight by a service while no relay could run) is the message
    itself, with no time."""
    when = stream = pid = None
    message = line
    parts = line.split(" ", 3)
    if len(parts) >= 3 and parts[1] in PRIORITY and parts[2].isdigit():
        with contextlib.suppress(ValueError):
            when = _when(parts[0])
            stream, pid = parts[1], int(parts[2])
            message = parts[3] if len(parts) == 4 else ""
    return {"time": when, "identifier": service, "pid": pid, "message": message,
            "event": None, "priority": PRIORITY.get(stream, 6), "service": service,
            "stream": stream}


def services(rundir: str, instance: int) -> list[str]:
    """The services of ``instance`` with an output file in ``rundir``."""
    prefix = f"{instance}."
    try:
        names = os.listdir(rundir)
    except OSError:
        return []
    return sorted({n[len(prefix):-len(".out")] for n in names
                   if n.startswith(prefix) and n.endswith(".out") and len(n) > len(prefix) + 4})


def _opened(path: str, at: dict | None, key: str):
    """(the file ``path`` open, its size now) -- where it ends is ``at[key]``, for
    :func:`follow` -- or None where there is no file."""
    try:
        f = open(path, "rb")  # noqa: SIM115 (the callers close it, also when stopped early)
    except OSError:
        return None
    st = os.fstat(f.fileno())
    if at is not None:
        at[key] = (st.st_ino, st.st_size)
    return f, st.st_size


def _backwards(path: str, at: dict | None = None, key: str = "") -> Iterator[bytes]:
    """The lines of a file, the last first (read from its end in blocks: ``logs -n 10``
    of a file of 8 MiB reads its end, not all of it). ``at[key]``: where it ends now, for
    :func:`follow`. Nothing where there is no file."""
    opened = _opened(path, at, key)
    if opened is None:
        return
    f, size = opened
    with f:
        pos, rest = size, b""
        while pos > 0:
            step = min(1 << 16, pos)
            pos -= step
            f.seek(pos)
            *lines, = (f.read(step) + rest).split(b"\n")
            rest = lines[0]
            for line in reversed(lines[1:]):
                if line:
                    yield line
        if rest:
            yield rest


def _forwards(path: str, at: dict | None = None, key: str = "") -> Iterator[bytes]:
    """The lines of a file, the first first, up to where it ends now (``at[key]``, for
    :func:`follow`), read in blocks: nothing of it is held but a block."""
    opened = _opened(path, at, key)
    if opened is None:
        return
    f, left = opened
    with f:
        rest = b""
        while left > 0:
            block = f.read(min(1 << 16, left))
            if not block:
                break
            left -= len(block)
            *lines, rest = (rest + block).split(b"\n")
            yield from (line for line in lines if line)
        if rest:
            yield rest


def _kept(entries: Iterator[dict | None], since: float | None,
          priority: int | None) -> Iterator[dict]:
    for entry in entries:
        if entry is None or (since is not None and (entry["time"] is None
                                                     or entry["time"] < since)):
            continue
        if priority is None or entry["priority"] <= priority:
            yield entry


def stream(rundir: str, instance: int, names: list[str], lifecycle_of: list[str] | None,
           *, since: float | None = None, priority: int | None = None,
           at: dict | None = None) -> Iterator[dict]:
    """Every entry since ``since`` (of ``priority`` or more urgent) of the services
    ``names``' output files and of ``lifecycle_of``'s lifecycle entries (None: every
    service's), oldest first, merged by time as they are read: what :func:`read` and
    :func:`lifecycle` give with ``lines=None``, without holding them (files of 8 MiB a
    service, for many services, are many entries). ``at``: as there."""
    import heapq

    sources = []
    for service in names:
        path = os.path.join(rundir, name_of(instance, service))
        raw = itertools.chain(_forwards(path + ".1"), _forwards(path, at, service))
        sources.append(_kept((parse(r.decode(errors="replace"), service) for r in raw),
                             since, priority))
    path = os.path.join(rundir, f"{instance}.log")
    one = _lifecycle_line(lifecycle_of)
    raw = itertools.chain(_forwards(path + ".1"), _forwards(path, at, ""))
    sources.append(_kept((one(r) for r in raw), since, priority))
    return heapq.merge(*sources, key=lambda e: e["time"] or 0.0)


def newest(rundir: str, instance: int, names: list[str]) -> float:
    """When the newest of the services' files was last written to (0: none is there)."""
    times = [0.0]
    for service in names:
        with contextlib.suppress(OSError):
            times.append(os.stat(os.path.join(rundir, name_of(instance, service))).st_mtime)
    return max(times)


def _last(lines_back: Iterator[bytes], parse_one, lines: int | None, since: float | None,
          priority: int | None) -> list[dict]:
    """The last ``lines`` entries (oldest first) among lines given the last first."""
    got: list[dict] = []
    if lines == 0:  # none: but started, so that where each file ends is noted (follow)
        next(lines_back, None)
        return got
    for raw in lines_back:
        entry = parse_one(raw)
        if entry is None:
            continue
        if since is not None and (entry["time"] is None or entry["time"] < since):
            if entry["time"] is not None:
                break  # all before it are older still
            continue
        if priority is not None and entry["priority"] > priority:
            continue
        got.append(entry)
        if lines is not None and len(got) >= lines:
            break
    got.reverse()
    return got


def read(rundir: str, instance: int, names: list[str], *, lines: int | None = 10,
         since: float | None = None, priority: int | None = None,
         at: dict | None = None, events: list[dict] = ()) -> list[dict]:
    """The last ``lines`` entries (None: all) of the services ``names``, oldest first,
    with ``events`` (their lifecycle entries, :func:`lifecycle`) among them: those since
    ``since`` and of ``priority`` or more urgent, where given. ``at`` (a dict) gets where
    each file was read up to, for :func:`follow`. One entry a ``\\n``: a line holding a
    carriage return (a progress bar) stays one entry."""
    entries = list(events)
    for service in names:
        path = os.path.join(rundir, name_of(instance, service))
        back = itertools.chain(_backwards(path, at, service), _backwards(path + ".1"))
        entries += _last(back, lambda raw, s=service: parse(raw.decode(errors="replace"), s),
                         lines, since, priority)
    if len(names) > 1 or events:  # one stream of time, as the journal's (a stable sort)
        entries.sort(key=lambda e: e["time"] or 0.0)
    return entries[-lines:] if lines else ([] if lines == 0 else entries)


_DAEMON_LINE = re.compile(
    r"(\S+Z) supervisor\[\d+\] <([0-7])> (.*?)((?:  |$)(?:[A-Z_]+=\S*(?: |$))*)$")
_FIELD = re.compile(r"([A-Z_]+)=(\S*)")


def parse_daemon(line: str) -> dict | None:
    """A lifecycle entry (the shape of ``journal._as_json``) from a line of the daemon's
    own log (``journal.Journal`` without journald), or None: not about a service, a
    command's, or not such a line."""
    match = _DAEMON_LINE.match(line)
    if match is None:
        return None
    fields = dict(_FIELD.findall(match[4]))
    if "SERVICE_NAME" not in fields or "SUPERVISOR_COMMAND" in fields:
        return None
    try:
        when = _when(match[1])
    except ValueError:
        return None
    pid = fields.get("SERVICE_PID")
    return {"time": when, "identifier": "supervisor",
            "pid": int(pid) if pid and pid.isdigit() else None, "message": match[3],
            "event": fields.get("SUPERVISOR_EVENT"), "priority": int(match[2]),
            "service": fields["SERVICE_NAME"], "stream": None}


def lifecycle(rundir: str, instance: int, names: list[str] | None, at: dict | None = None,
              *, lines: int | None = None, since: float | None = None,
              priority: int | None = None) -> list[dict]:
    """The last ``lines`` lifecycle entries (None: all) of the services ``names`` (None:
    all) in the daemon's own log (``<N>.log`` and ``<N>.log.1``), oldest first, those
    since ``since`` and of ``priority`` or more urgent; ``at[""]``: where it was read up
    to."""
    path = os.path.join(rundir, f"{instance}.log")
    back = itertools.chain(_backwards(path, at, ""), _backwards(path + ".1"))
    return _last(back, _lifecycle_line(names), lines, since, priority)


def _lifecycle_line(names: list[str] | None):
    """A line of the daemon's log as a lifecycle entry of one of ``names`` (None: any
    service's), or None."""
    wanted = None if names is None else {f"SERVICE_NAME={n}".encode() for n in names}

    def one(raw: bytes) -> dict | None:
        if b"SERVICE_NAME=" not in raw or b"SUPERVISOR_COMMAND=" in raw:
            return None  # most lines, at a glance
        entry = parse_daemon(raw.decode(errors="replace"))
        if entry is None or (wanted is not None
                             and f"SERVICE_NAME={entry['service']}".encode() not in wanted):
            return None
        return entry
    return one


def _tail(path: str, ino: int, offset: int) -> bytes:
    """What the file ``ino`` (now at ``path``) holds beyond ``offset``."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_ino != ino:
                return b""
            f.seek(offset)
            return f.read()
    except OSError:
        return b""


def _more(path: str, key: str, at: dict, held: dict) -> bytes | None:
    """What the file at ``path`` got since the last look, its lines of all files it was
    rotated through meanwhile in order. The file being followed is held open (``held``):
    it can be read to its end after it is rotated away, and its inode is never given to
    a new file meanwhile (rotated twice, the first one gone, the new one could have its
    number). The first look starts where :func:`read` stopped (``at[key]``: inode,
    offset). None: no file."""
    f = held.get(key)
    if f is None:
        try:
            f = open(path, "rb")  # noqa: SIM115 (held: closed by follow or at rotation)
        except OSError:
            return None
        st = os.fstat(f.fileno())
        ino, offset = at.get(key, (st.st_ino, 0))
        older = b""
        if ino != st.st_ino:  # rotated since read(): what the old one got last, then this
            older, offset = _tail(f"{path}.1", ino, offset), 0
        elif st.st_size < offset:  # cut short (truncated): from its start
            offset = 0
        f.seek(offset)
        held[key] = f
        return older + f.read()
    data = f.read()
    mine = os.fstat(f.fileno())
    if _ino(path) == mine.st_ino:
        if mine.st_size < f.tell():  # cut short (truncated): from its start again
            f.seek(0)
            data += f.read()
        return data
    # rotated away: ours read to its end; the one between, if it was rotated twice; the new
    between = b""
    if _ino(f"{path}.1") not in (None, mine.st_ino):
        between = _tail(f"{path}.1", _ino(f"{path}.1"), 0)
    f.close()
    del held[key]
    new = _more(path, key, {}, held)
    return data + between + (new or b"")


def _ino(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def follow(rundir: str, instance: int, names: list[str] | None, at: dict, *,
           priority: int | None = None) -> Iterator[dict]:
    """Entries written after :func:`read` read the files (``at``: where it stopped, by
    service, and ``""`` for the daemon's log; ``names`` None: of every service, new ones
    too), their lifecycle entries among them, as ``tail -F`` does, a rotated file read
    from its start: woken by inotify on the runtime directory (the CLI waits; the daemon
    is not involved)."""
    import select

    from supervisor.native import Inotify

    rest: dict[str, bytes] = collections.defaultdict(bytes)
    held: dict = {}  # the files followed, open
    daemon_log = os.path.join(rundir, f"{instance}.log")

    def wanted(entry: dict | None) -> bool:
        return entry is not None and (priority is None or entry["priority"] <= priority) \
            and (names is None or entry["service"] in names)

    with Inotify(rundir) as watch, contextlib.ExitStack() as closing:
        closing.callback(lambda: [f.close() for f in held.values()])
        # the first look at every file (what came between the read and the watch); then
        # at those inotify named (with many services, the others are not opened again)
        keys = [*(names if names is not None else services(rundir, instance)), ""]
        prefix = f"{instance}."
        while True:
            for key in keys:
                path = os.path.join(rundir, name_of(instance, key)) if key else daemon_log
                data = _more(path, key, at, held)
                if not data:
                    continue
                *done, rest[key] = (rest[key] + data).split(b"\n")
                for raw in done:
                    line = raw.decode(errors="replace")
                    entry = parse(line, key) if key else parse_daemon(line)
                    if wanted(entry):
                        yield entry
            select.select([watch], [], [])
            keys = []
            for changed in watch.drain():
                if changed == f"{instance}.log":
                    keys.append("")
                elif changed.startswith(prefix) and changed.endswith(".out"):
                    service = changed[len(prefix):-len(".out")]
                    if service and (names is None or service in names):
                        keys.append(service)
