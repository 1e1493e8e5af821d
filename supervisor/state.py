"""An instance's state document: what it holds, how it is written and read back.

The same document serves crash recovery (``<runtime dir>/<N>.state.json``, with the log
of the services changed since it was written beside it: :class:`StateFile`, saved at
most once per turn of the loop and before the answers of that turn go out) and live
re-exec (a memfd handed to the new program, with the fds it carries). Its shape::

    {"version": 1, "instance": N, "started_at": <epoch>, "boot_id": "<uuid>",
     "cgroups": <the tree's path or null>, "log_id": <its log's, on disk>,
     ...,                                  (re-exec: the fds carried; see reexec.py)
     "services": [{<every field of machine.Service>, "pids": [<every pid it has had>],
                   "start_ticks": <int or null>, "pidfd_ino": <int or null>,
                   "cgroup": <its directory in the tree, or null>}]}

``start_ticks`` is the process's start time (clock ticks since boot, from
``/proc/<pid>/stat``), ``pidfd_ino`` its pidfs inode (``process.identity``: its own for
the boot, where the kernel has pidfs) and ``cgroup`` the cgroup it was born in: after a
crash of the daemon, a process is taken for the service's only when they still hold
(``Shell._readopt``). A document of
another boot (``boot_id``), or one that names none, is never used: its pids mean nothing
now.

Nothing read back is trusted: :func:`decode` checks the document field by field and
raises :class:`StateError` naming the first thing wrong; :func:`replay` applies a log
only to its own document, and stops at a line that is wrong.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import math
import os
import re
import signal
import stat
from typing import NamedTuple

from supervisor.machine import MAX_RESTARTS, Service, State, name_problem
from supervisor.schedule import RESTART_MODES, Schedule, StartLimit

VERSION = 1
MAX_SIZE = 1 << 30  # no state document of a daemon's is near this

_FIELDS = tuple(f.name for f in dataclasses.fields(Service))


class StateError(ValueError):
    """The document is not one this daemon wrote: the message says what is wrong."""


class Stored(NamedTuple):
    """One service as a document holds it."""

    svc: Service
    ticks: int | None  # its process's start time
    cgroup: str | None  # the cgroup it was born in
    pids: tuple[int, ...]  # every pid it has had, oldest first
    ino: int | None = None  # its process's pidfs inode


# ---- encoding --------------------------------------------------------------------------------


def encode_service(svc: Service, ticks: int | None, cgroup: str | None,
                   pids: list[int], kept: int | None = None, ino: int | None = None) -> str:
    """One service's entry, as JSON text (callers cache it while the service is unchanged:
    services are immutable values). ``pids``: its history; ``kept`` (a line of the log):
    the first ``kept`` of them are those of its entry already on disk, and only the rest
    are written (a service restarted 10,000 times has a history of ~70 KB, which one
    restart must not write again)."""
    out = {name: getattr(svc, name) for name in _FIELDS}
    out["schedule"] = svc.schedule.to_dict() if svc.schedule else None
    out["start_limit"] = ([svc.start_limit.burst, svc.start_limit.interval]
                          if svc.start_limit else None)
    out["starts"] = list(svc.starts)
    out["env"] = [list(pair) for pair in svc.env]
    out["state"] = svc.state.value
    out["command"] = list(svc.command)
    if kept is None:
        out["pids"] = pids
    else:
        out["pids_kept"], out["pids"] = kept, pids[kept:]
    out.pop("due", None)  # a CLOCK_BOOTTIME deadline means nothing to another boot; next_start
    out["start_ticks"] = ticks
    out["pidfd_ino"] = ino
    out["cgroup"] = cgroup
    return json.dumps(out, separators=(",", ":"))


def encode(head: dict, services: list[str]) -> bytes:
    """The whole document: ``head`` (instance, started_at, cgroups, and what a re-exec
    carries) and the entries from :func:`encode_service`."""
    text = json.dumps({"version": VERSION, **head}, separators=(",", ":"))
    return f'{text[:-1]},"services":[{",".join(services)}]}}'.encode()


# ---- decoding --------------------------------------------------------------------------------


# a time read back: Unix seconds (or CLOCK_BOOTTIME seconds) from 1970 to the year 5000
_TIME_RANGE = (0.0, 1e11)


def _time(v) -> bool:
    return _TIME_RANGE[0] <= v < _TIME_RANGE[1]


def parse(data: bytes) -> dict:
    """The document's JSON object, unchecked (:func:`decode_doc` checks it)."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise StateError(f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise StateError("not a JSON object")
    return doc


def decode(data: bytes, instance: int | None = None, bad: list[str] | None = None
           ) -> tuple[dict, list[Stored]]:
    """(head, [:class:`Stored`]) from a document; :class:`StateError` when
    it is not valid JSON, not of this version, of another instance than ``instance``, or
    any field has the wrong type or value. ``bad`` (a list): a service's entry that is
    wrong is left out instead, and what is wrong with it appended there (one bad entry
    must not cost the others)."""
    return decode_doc(parse(data), instance, bad)


def decode_doc(doc: dict, instance: int | None = None, bad: list[str] | None = None
               ) -> tuple[dict, list[Stored]]:
    """:func:`decode` of a document :func:`parse` read (and :func:`replay` brought up to
    date)."""
    if type(doc.get("version")) is not int or doc["version"] != VERSION:
        raise StateError(f"version {doc.get('version')!r}, not {VERSION}")
    _check(doc, "instance", int, lambda v: 0 <= v <= 99 and instance in (None, v))
    _check(doc, "started_at", float, _time)
    if doc.get("cgroups") is not None:
        _check(doc, "cgroups", str, os.path.isabs)
    _check(doc, "boot_id", str, optional=True)
    entries = doc.pop("services", None)
    if not isinstance(entries, list):
        raise StateError("'services' is not a list")
    services, names, cgroups = [], set(), set()
    for i, entry in enumerate(entries):
        try:
            stored = _service(entry)
            svc, cgroup = stored.svc, stored.cgroup
            if svc.name in names:
                raise StateError(f"name {svc.name!r} given twice")
            if cgroup is not None and cgroup in cgroups:  # one cgroup is one service's
                raise StateError(f"cgroup {cgroup!r} claimed by another service too")
        except Exception as exc:  # a StateError, or a check that did not foresee a value:
            why = exc if isinstance(exc, StateError) else \
                f"cannot be read ({type(exc).__name__}: {exc!s:.200})"  # never trusted
            if bad is None:
                raise StateError(f"service #{i + 1}: {why}") from None
            bad.append(f"service #{i + 1}: {why}")
            continue
        names.add(svc.name)
        if cgroup is not None:
            cgroups.add(cgroup)
        services.append(stored)
    return doc, services


def _check(obj: dict, key: str, kind: type, ok=None, *, optional: bool = False,
           since=...):
    """``obj[key]``, checked: of ``kind`` (an int passes for a float, a bool for nothing
    else) and, where ``ok`` is given, ``ok(value)`` true. None passes when optional.
    ``since``: a field added after version 1 was first written, and its value where a
    document from before has none (a re-exec after an upgrade reads one)."""
    if key not in obj:
        if since is not ...:
            return since
        if optional:
            return None
        raise StateError(f"'{key}' is missing")
    value = obj[key]
    if value is None and optional:
        return None
    kinds = (int, float) if kind is float else kind
    good = isinstance(value, kinds) and (kind is bool or not isinstance(value, bool))
    if good and kind is float:
        good = math.isfinite(value)
    if not good or (ok is not None and not ok(value)):
        raise StateError(f"'{key}' is {value!r:.60}")
    return value


def env_key(key: str) -> bool:
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) is not None


def _json_object(v) -> bool:
    try:
        return isinstance(json.loads(v), dict)
    except (ValueError, RecursionError):  # [[[... deeper than the parser goes
        return False


def _positive_int(v) -> bool:
    return v > 0


PID_MAX = 1 << 22  # the kernel's PID_MAX_LIMIT: no pid is larger


def _pid(v) -> bool:
    return 0 < v <= PID_MAX


def _counter(v) -> bool:
    return 0 <= v < 1 << 63


def _strings(v) -> bool:
    return all(isinstance(a, str) and "\0" not in a for a in v)


def _service(entry) -> Stored:
    if not isinstance(entry, dict):
        raise StateError("not a JSON object")
    kw: dict = {}
    kw["name"] = _check(entry, "name", str, lambda v: name_problem(v) is None)
    kw["command"] = tuple(_check(entry, "command", list, lambda v: v and _strings(v)))
    kw["opened"] = _check(entry, "opened", bool)
    state = _check(entry, "state", str, lambda v: v in State.__members__ and v != "NEW")
    kw["state"] = State(state)
    kw["pid"] = _check(entry, "pid", int, _pid, optional=True)
    pids = tuple(_check(entry, "pids", list, lambda v: all(
        isinstance(p, int) and not isinstance(p, bool) and _pid(p) for p in v)))
    kw["alive"] = _check(entry, "alive", bool)
    kw["restarts"] = _check(entry, "restarts", int, _counter)
    kw["restart_limit"] = _check(entry, "restart_limit", int,
                                 lambda v: 0 <= v <= MAX_RESTARTS, optional=True)
    mode = _check(entry, "restart_mode", str, lambda v: v in RESTART_MODES)
    # before on-crash existed, the seed's -r K was on-failure with a limit: same meaning then
    kw["restart_mode"] = "on-crash" if "starts" not in entry and mode == "on-failure" \
        and entry.get("restart_limit") is not None else mode
    kw["restart_delay"] = _check(entry, "restart_delay", float, lambda v: 0 <= v < 1e10)
    kw["restart_max_delay"] = _check(entry, "restart_max_delay", float,
                                     lambda v: 0 <= v < 1e10)
    limit = _check(entry, "start_limit", list, lambda v: len(v) == 2, optional=True)
    kw["starts"] = tuple(_check(entry, "starts", list, lambda v: all(
        isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t)
        and abs(t) < _TIME_RANGE[1] for t in v), since=[]))
    kw["waited"] = _check(entry, "waited", float, lambda v: 0 <= v < 1e10, since=0.0)
    kw["streak"] = _check(entry, "streak", int, _counter)
    sched = _check(entry, "schedule", dict, optional=True)
    kw["exit_code"] = _check(entry, "exit_code", int, optional=True)
    kw["signal"] = _check(entry, "signal", int, lambda v: 0 < v < 65, optional=True)
    kw["started_at"] = _check(entry, "started_at", float, _time, optional=True)
    kw["next_start"] = _check(entry, "next_start", float, _time, optional=True)
    kw["create_stopped"] = _check(entry, "create_stopped", bool)
    kw["held"] = _check(entry, "held", bool, since=False)
    kw["exited_at"] = _check(entry, "exited_at", float, _time, optional=True)
    kw["env"] = tuple(tuple(p) for p in _check(entry, "env", list, lambda v: all(
        isinstance(p, list) and len(p) == 2 and _strings(p) and env_key(p[0]) for p in v),
        since=[]))
    kw["env_file"] = _check(entry, "env_file", str, os.path.isabs, optional=True)
    kw["user"] = _check(entry, "user", str, lambda v: 0 < len(v) < 256 and "\0" not in v,
                        optional=True)
    kw["stop_signal"] = _check(entry, "stop_signal", int, lambda v: 0 < v < 65,
                               since=int(signal.SIGTERM))
    kw["stop_timeout"] = _check(entry, "stop_timeout", float, lambda v: 0 <= v < 1e7,
                                optional=True)
    kw["declared"] = _check(entry, "declared", bool, since=False)
    kw["definition"] = _check(entry, "definition", str, _json_object, optional=True)
    kw["autostart"] = _check(entry, "autostart", bool, since=True)
    kw["stopping"] = _check(entry, "stopping", str,
                            lambda v: v in ("stop", "restart", "shutdown"), optional=True)
    kw["killing"] = _check(entry, "killing", bool, since=False)
    kw["delay"] = _check(entry, "delay", float, lambda v: 0 <= v < 1e10, since=0.0)
    kw["cwd"] = _check(entry, "cwd", str, lambda v: os.path.isabs(v) and "\0" not in v)
    kw["output"] = _check(entry, "output", str, lambda v: "\0" not in v and (
        v in ("journal", "null", "inherit") or os.path.isabs(v)))
    kw["error"] = _check(entry, "error", str, optional=True)
    ticks = _check(entry, "start_ticks", int, lambda v: v >= 0, optional=True)
    ino = _check(entry, "pidfd_ino", int, lambda v: 0 < v < 1 << 64, optional=True)
    cgroup = _check(entry, "cgroup", str, lambda v: v.startswith("svc-") and "/" not in v
                    and v not in (".", ".."), optional=True)
    try:
        kw["start_limit"] = StartLimit(*limit) if limit else None
        kw["schedule"] = Schedule.from_dict(sched) if sched else None
    except (TypeError, KeyError, ValueError, LookupError, OverflowError, RecursionError,
            OSError) as exc:  # (a time zone's name is a path to a file, of any depth)
        raise StateError(f"bad schedule or start limit: {exc!s:.200}") from None
    when = kw["schedule"] and (kw["schedule"].at, kw["schedule"].anchor)
    if when and not all(t is None or _time(t) for t in when):
        raise StateError(f"schedule time out of range: {sched!r:.80}")
    if kw["pid"] is not None and (not pids or kw["pid"] != pids[-1]) \
            and kw["pid"] not in pids:
        raise StateError(f"pid {kw['pid']} is not among its pids")
    if kw["alive"] and kw["pid"] is None:
        raise StateError("alive without a pid")
    if not kw["alive"] and kw["state"] in (State.RUNNING, State.STOPPED, State.STOPPING):
        raise StateError(f"{state} with no process (alive false)")
    return Stored(Service(**kw), ticks, cgroup, pids, ino)


# ---- the file ----------------------------------------------------------------------------


def boot_id() -> str:
    """This boot's id (``/proc/sys/kernel/random/boot_id``)."""
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)  # the whole line: /proc gives it in one read
    except OSError:
        return None
    finally:
        os.close(fd)
    return int(data[data.rindex(b")") + 2:].split()[19])


def dump(path: str, data: bytes, dir_fd: int | None = None, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically: a new temporary file beside it (``O_EXCL``,
    ``O_NOFOLLOW``: a link planted there is never followed), rename over ``path``; with
    ``durable``, fsync of the file before and of the directory after. When this returns,
    the document survives a crash of the daemon (and, ``durable``, of the machine); when
    it raises ``OSError``, ``path`` is as it was. ``dir_fd``: the directory, open (``path``
    is then relative to it): the daemon keeps one, so that saving takes one fd and the
    directory cannot be swapped under it."""
    tmp = f"{path}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
    except FileExistsError:  # left by a daemon that died while writing: ours to replace
        os.unlink(tmp, dir_fd=dir_fd)
        fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    if not durable:
        return
    if dir_fd is not None:
        os.fsync(dir_fd)
        return
    dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path: str, dir_fd: int | None = None) -> bytes | None:
    """The bytes at ``path``, or None when there is no such file. :class:`StateError` when
    it is not a regular file of ours that only we may write (never trusted then)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                     dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot open it: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StateError("not a regular file")
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise StateError(f"owned by uid {st.st_uid} with mode "
                             f"{stat.S_IMODE(st.st_mode):04o}: another user could have "
                             "written it")
        if st.st_size > MAX_SIZE:
            raise StateError(f"{st.st_size} bytes: more than any daemon writes")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise StateError(f"cannot read it: {exc.strerror}") from None
    finally:
        os.close(fd)


def set_aside(path: str, now: float, dir_fd: int | None = None) -> str | None:
    """Move a file that cannot be trusted out of the way (``<path>.bad-<time>``, or
    ``.bad-<time>.2``... where that name is taken: an earlier one is never overwritten),
    so that it is kept for a look but never read again. Returns where it went; None when
    it is gone already. OSError when it cannot be moved."""
    base = f"{path}.bad-{int(now)}"
    for k in range(1, 101):
        aside = base if k == 1 else f"{base}.{k}"
        if _exists(aside, dir_fd):
            continue
        try:
            os.rename(path, aside, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except FileNotFoundError:
            if not _exists(path, dir_fd):
                return None
        except OSError as exc:
            if exc.errno not in (errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ENOTEMPTY):
                raise
            # the name was taken meanwhile: the next one
        else:
            return aside
    raise OSError(errno.EEXIST, f"{base} and 99 more names are taken")


def _exists(path: str, dir_fd: int | None) -> bool:
    try:
        os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def remove(path: str, dir_fd: int | None = None) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path, dir_fd=dir_fd)


# ---- the log beside the file -------------------------------------------------------------
#
# Rewriting the whole document after every change costs a daemon of 6,000 services ~12 ms
# of CPU a restart (join, write and rename of 4 MB). So the file on disk is the whole
# document as of its last rewrite, which names a random ``log_id``, and ``<file>.log``
# beside it: one line per save since, each the entries that changed and the names gone:
#
#     {"log_id": "<the document's>", "set": [<entries>], "drop": [<names>]}
#
# An entry of the log is one of the document's, but for its pid history: ``"pids_kept": k``
# says the first k of the pids of the entry it replaces are kept, and ``"pids"`` holds only
# those that follow (``k`` is 0 for a service made anew under an old name).
# The document is rewritten (and the log begun anew) once the log is twice its size. A log whose
# ``log_id`` is not its document's is older than it (the daemon died between the two):
# none of it applies.

LOG_MIN = 1 << 16  # a log is let grow to this, or LOG_FACTOR times the document, before a
LOG_FACTOR = 2  # rewrite (a service with a long history has a large entry: one rewrite
# per line of it would double what each save writes)


def log_name(path: str) -> str:
    return f"{path}.log"


def replay(doc: dict, log: bytes) -> tuple[int, str | None]:
    """Bring ``doc`` (:func:`parse` of the file) up to date with its ``log``, in place:
    (the lines applied, what is wrong with the log or None). Lines of another ``log_id``
    than the document's do not apply (none then). A last line cut short (no newline: the
    daemon died while writing it, so the answers waiting for it never went out) is left
    out, and is not wrong. Applying stops at the first line that is wrong; the entries
    themselves are checked with the document's (:func:`decode_doc`)."""
    log_id, services = doc.get("log_id"), doc.get("services")
    if not isinstance(log_id, str) or not isinstance(services, list):
        return 0, None  # an older version's document (it kept no log), or a bad one
    lines = log.split(b"\n")[:-1]  # the part after the last newline: cut short, or b""
    first = _line_id(lines[0]) if lines else None
    if isinstance(first, str) and first != log_id:
        return 0, None  # an older document's log
    by_name: dict = {}
    for i, entry in enumerate(services):  # entries with no name, or a name given twice:
        name = entry.get("name") if isinstance(entry, dict) else None  # kept for decode_doc
        by_name[name if isinstance(name, str) and name not in by_name else (i,)] = entry
    applied, trouble = 0, None
    for raw in lines:
        trouble = _apply(raw, log_id, by_name)
        if trouble is not None:
            break
        applied += 1
    doc["services"] = list(by_name.values())
    return applied, trouble


def _apply(raw: bytes, log_id: str, by_name: dict) -> str | None:
    """One line of the log applied to the entries by name: what is wrong with it, or None
    (then applied)."""
    try:
        line = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return f"not valid JSON ({exc})"
    if not isinstance(line, dict) or line.get("log_id") != log_id:
        return "not a line of this document's log"
    sets, drops = line.get("set"), line.get("drop")
    if not isinstance(sets, list) or not isinstance(drops, list) or not all(
            isinstance(e, dict) and isinstance(e.get("name"), str) for e in sets) \
            or not all(isinstance(n, str) for n in drops):
        return "'set' or 'drop' is not a list of entries or names"
    named = {e["name"] for e in sets}
    if len(named) != len(sets):
        return "a service set twice in one line"
    dropped = set(drops)
    for entry in sets:  # checked whole before any of it applies
        kept = entry.get("pids_kept")
        if kept is None or (type(kept) is int and kept == 0):  # all its history is here
            continue
        before = None if entry["name"] in dropped else by_name.get(entry["name"])
        before = before.get("pids") if isinstance(before, dict) else None
        if type(kept) is not int or not isinstance(before, list) \
                or not 0 < kept <= len(before) or not isinstance(entry.get("pids"), list):
            return f"service {entry['name']!r}: 'pids_kept' is {kept!r:.60}, of " \
                   f"{len(before) if isinstance(before, list) else 'no'} pids"
    for entry in sets:
        name, kept = entry["name"], entry.pop("pids_kept", None)
        if kept:  # its history: the first ``kept`` pids of the entry it replaces, then these
            before = by_name[name]["pids"]  # that entry is gone: its list is this one's now
            del before[kept:]
            before += entry["pids"]
            entry["pids"] = before
        by_name[name] = entry
    for name in drops:
        if name not in named:  # (a line drops a name, then sets it anew)
            by_name.pop(name, None)
    return None


def _line_id(raw: bytes) -> str | None:
    """The ``log_id`` of a log line (None: not a line of any log)."""
    try:
        line = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return line.get("log_id") if isinstance(line, dict) else None


class StateFile:
    """The state on disk, as the daemon writes it: :meth:`rewrite` (the whole document, and
    its log begun anew) or :meth:`append` (the entries that changed, to the log). Both
    leave on disk what they were given when they return (``durable``: fsync'd), or raise
    ``OSError``; after a failed one the next save must be a rewrite (:attr:`whole`)."""

    def __init__(self, path: str) -> None:
        self.path = path  # relative to the runtime directory's fd
        self.log_path = log_name(path)
        self.log_fd: int | None = None
        self.log_id = ""
        self.head: dict | None = None  # the head of the document on disk
        self.size = 0  # of the document on disk
        self.log_size = 0
        self.on_disk: dict[str, str] = {}  # name -> its entry, as the file and log say
        self.ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the file written
        self.synced = False  # the document and the log's name are fsync'd

    def whole(self, head: dict, dir_fd: int | None) -> bool:
        """Whether the next save must rewrite the document: no log open (none yet, or a
        save failed), the head changed, the log grew past twice the document, or either is no
        longer at its path in ``dir_fd`` (removed, replaced, the directory made again):
        a log is of use only beside its own document."""
        if self.log_fd is None or head != self.head \
                or self.log_size > max(LOG_MIN, LOG_FACTOR * self.size):
            return True
        try:
            st = os.stat(self.path, dir_fd=dir_fd, follow_symlinks=False)
            return (st.st_dev, st.st_ino) != self.ident or os.fstat(self.log_fd).st_nlink == 0
        except OSError:
            return True

    def rewrite(self, head: dict, entries: dict[str, str], dir_fd: int | None, *,
                durable: bool) -> None:
        self.close()
        log_id = os.urandom(8).hex()
        data = encode({**head, "log_id": log_id}, list(entries.values()))
        dump(self.path, data, dir_fd, durable=durable)  # first: the old log is now stale
        self.head, self.size, self.on_disk = dict(head), len(data), dict(entries)
        st = os.stat(self.path, dir_fd=dir_fd, follow_symlinks=False)
        self.ident, self.synced = (st.st_dev, st.st_ino), False
        self.log_id, self.log_size = log_id, 0
        try:
            fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
                         | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        except OSError:  # the document is on disk: saves stay whole, until a log opens
            return
        self.log_fd = fd
        if durable and dir_fd is not None:
            os.fsync(dir_fd)  # the log's name (dump fsync'd the document and its own)
            self.synced = True

    def _sync(self, dir_fd: int | None) -> None:
        """The document written without fsync (no client waited then), and the log's
        name: on disk before a durable line of the log is."""
        if dir_fd is None:
            return
        if not self.synced:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.fsync(dir_fd)
        self.synced = True

    def append(self, changes: dict[str, str | None], dir_fd: int | None, *,
               durable: bool) -> None:
        """``changes``: name -> its entry now, or None where it is gone."""
        sets, drops = [], []
        for name, text in changes.items():
            if text is None:
                if self.on_disk.pop(name, None) is not None:
                    drops.append(name)
            elif self.on_disk.get(name) != text:
                self.on_disk[name] = text
                sets.append(text)
        if not sets and not drops:
            return
        line = f'{{"log_id":"{self.log_id}","set":[{",".join(sets)}],' \
               f'"drop":{json.dumps(drops)}}}\n'.encode()
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(self.log_fd, view):]
            if durable:
                os.fdatasync(self.log_fd)
                if not self.synced:
                    self._sync(dir_fd)
        except OSError:
            self.close()  # a line cut short may be in the log: the next save rewrites
            raise
        self.log_size += len(line)

    def remove(self, dir_fd: int | None) -> None:
        """Closed on purpose: nothing to recover."""
        self.close()
        remove(self.path, dir_fd)
        remove(self.log_path, dir_fd)

    def close(self) -> None:
        if self.log_fd is not None:
            os.close(self.log_fd)
            self.log_fd = None
