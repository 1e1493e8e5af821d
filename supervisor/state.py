"""An instance's state on disk (``<runtime dir>/<N>.state.json``), for crash recovery and
for live re-exec.

The file is rewritten atomically (a temporary file, then rename) whenever services
changed, at most once per turn of the loop. It guards against the daemon's death, not the
machine's: the runtime directory is a tmpfs (/run) that a reboot empties anyway, so there
is no fsync. Besides each service it records, for every
living process, its start time from ``/proc/<pid>/stat`` (clock ticks since boot), so that
after a restart a reused pid is never taken for ours.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os

from supervisor.machine import Service, State
from supervisor.schedule import Schedule, StartLimit

VERSION = 1


_FIELDS = tuple(f.name for f in dataclasses.fields(Service))


def service_to_dict(svc: Service) -> dict:
    out = {name: getattr(svc, name) for name in _FIELDS}
    out["schedule"] = svc.schedule.to_dict() if svc.schedule else None
    out["start_limit"] = ([svc.start_limit.burst, svc.start_limit.interval]
                          if svc.start_limit else None)
    out["failures"] = list(svc.failures)
    out["state"] = svc.state.value
    out["command"] = list(svc.command)
    out["pids"] = list(svc.pids)
    out.pop("due", None)  # a CLOCK_BOOTTIME deadline means nothing to another boot; next_start
    return out


def service_from_dict(data: dict) -> Service:
    kw = {k: v for k, v in data.items() if k in _FIELDS}
    kw["state"] = State(kw["state"])
    kw["command"] = tuple(kw["command"])
    kw["pids"] = tuple(kw.get("pids", ()))
    kw["failures"] = tuple(kw.get("failures", ()))
    if kw.get("schedule"):
        kw["schedule"] = Schedule.from_dict(kw["schedule"])
    if kw.get("start_limit"):
        kw["start_limit"] = StartLimit(*kw["start_limit"])
    return Service(**kw)


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


def dump(path: str, doc: dict | bytes) -> None:
    """Write ``doc`` (or JSON already encoded) to ``path`` atomically."""
    tmp = f"{path}.tmp"
    data = doc if isinstance(doc, bytes) else json.dumps(doc, separators=(",", ":")).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.rename(tmp, path)


def load(path: str) -> dict | None:
    """The document at ``path``, or None when there is none or it is unreadable."""
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        return None
    return doc


def remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
