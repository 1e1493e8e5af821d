"""Journal helpers for the test suite (imported by tests/conftest.py and tests).

- ``ensure_journald()``: a context manager for a session fixture. If no journald
  answers on ``/run/systemd/journal/socket`` and we are root, it starts
  ``systemd-journald`` standalone (no systemd as PID 1 needed), waits for its
  ``READY=1`` notification, yields, and stops it again (SIGTERM, wait) afterwards,
  leaving the machine as it found it. If journald already runs, it only yields.
  It yields True when a journald is available, False when none is (not root, or no
  journald binary): tests that need the journal should then skip.
- ``journal_mark()``: an opaque position (cursor) at the current end of the
  journal, to pass as ``since=`` so a test sees only entries written after it.
- ``read_entries(deadline_s, **match)``: entries whose fields equal ``match``.
- ``wait_for_entry(predicate, timeout, **match)``: the first entry matching the
  fields and ``predicate(entry)``, waited for with ``Reader.wait()`` (inotify, no
  fixed sleeps); AssertionError with the entries seen if none shows in time.

Entries are dicts as ``systemd.journal.Reader`` returns them: well-known fields are
converted (``_PID`` is an int, ``__REALTIME_TIMESTAMP`` a datetime); other fields,
such as ``SERVICE_PID``, are str. Match values may be str, int or bytes.

Standalone journald started here: ``/lib/systemd/systemd-journald`` with
``NOTIFY_SOCKET`` pointing at a socket of ours, ``SYSTEMD_LOG_TARGET=console`` and
a runtime drop-in ``/run/systemd/journald.conf.d/50-supervisor-tests.conf``
(``Storage=volatile``: entries go to ``/run/log/journal``; ``RateLimitIntervalSec=0``:
no rate limiting), removed again when it stops.

Latency: an entry is readable from the journal file within a millisecond, but
journald tells readers (inotify, what ``Reader.wait()`` waits on) only through a
coalescing timer: measured here, 0.25-0.5 s after the write. So each
``Reader.wait()`` is capped at ``RECHECK_S`` and the reader re-read after it; the
wait still returns at once on a journal change. Set ``RECHECK_S = None`` for pure
inotify waits. Journal timing is not a measure of the daemon's reaction time.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from systemd import journal
from timeouts import TIMEOUT

JOURNAL_DIR = "/run/systemd/journal"
JOURNAL_SOCKET = JOURNAL_DIR + "/socket"
JOURNALD_CANDIDATES = ("/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald")
DROPIN_DIR = "/run/systemd/journald.conf.d"
DROPIN = DROPIN_DIR + "/50-supervisor-tests.conf"
DROPIN_TEXT = """\
# Written by the Supervisor test suite (tests/journald.py) for the journald it
# started itself; removed when that journald stops.
[Journal]
Storage=volatile
RateLimitIntervalSec=0
"""
# Sockets journald binds in JOURNAL_DIR; it leaves them behind when it exits.
_JOURNALD_SOCKETS = ("socket", "stdout", "dev-log", "io.systemd.journal")
_NOTIFY_MAX_FDS = 253
# Longest single Reader.wait() before re-reading (see "Latency" above); None: no cap.
RECHECK_S: float | None = 0.05
READER_SLICE_S = 0.5  # a fresh Reader this often (see _batches)

Entry = dict[str, Any]


def journald_running() -> bool:
    """True if a journald answers on its native socket (a stale socket file does not)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(JOURNAL_SOCKET)
    except OSError:
        return False
    else:
        return True
    finally:
        sock.close()


def _journald_binary() -> str | None:
    for path in JOURNALD_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return None


@contextlib.contextmanager
def ensure_journald() -> Iterator[bool]:
    """Make sure a journald runs for the duration of the block (see module doc)."""
    if journald_running():
        yield True
        return
    binary = _journald_binary()
    if os.geteuid() != 0 or binary is None:
        yield False
        return
    with _standalone_journald(binary):
        yield True


@contextlib.contextmanager
def _standalone_journald(binary: str) -> Iterator[None]:
    created_journal_dir = not os.path.isdir(JOURNAL_DIR)
    created_dropin_dir = not os.path.isdir(DROPIN_DIR)
    os.makedirs(JOURNAL_DIR, exist_ok=True)
    os.makedirs(DROPIN_DIR, exist_ok=True)
    with open(DROPIN, "w", encoding="ascii") as f:
        f.write(DROPIN_TEXT)
    proc = None
    try:
        with tempfile.TemporaryFile() as log, _notify_socket() as (notify, notify_name):
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("NOTIFY_", "LISTEN_", "WATCHDOG_", "SYSTEMD_"))
            }
            env.update(
                NOTIFY_SOCKET=notify_name,
                SYSTEMD_LOG_TARGET="console",
                SYSTEMD_LOG_LEVEL="info",
            )
            proc = subprocess.Popen(
                [binary],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd="/",
                start_new_session=True,
            )
            problem = _wait_ready(proc, notify)
            if problem is None and not journald_running():
                problem = f"it reported READY=1 but {JOURNAL_SOCKET} does not answer"
            if problem is not None:
                log.seek(0)
                output = log.read().decode(errors="replace").strip()
                raise RuntimeError(f"{binary} did not start: {problem}; its output: {output!r}")
        yield
    finally:
        if proc is not None:
            _stop(proc)
        _remove_leftovers(created_journal_dir, created_dropin_dir)


@contextlib.contextmanager
def _notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket in the abstract namespace for sd_notify, and its NOTIFY_SOCKET."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        name = f"supervisor-tests-journald-{os.getpid()}-{os.urandom(6).hex()}"
        sock.bind("\0" + name)
        yield sock, "@" + name
    finally:
        sock.close()


def _wait_ready(proc: subprocess.Popen[bytes], notify: socket.socket) -> str | None:
    """Wait for READY=1 on `notify`; None when ready, else what went wrong."""
    deadline = time.monotonic() + TIMEOUT
    pidfd = os.pidfd_open(proc.pid)
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(notify, selectors.EVENT_READ, "notify")
            sel.register(pidfd, selectors.EVENT_READ, "exit")
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return f"no READY=1 within {TIMEOUT}s"
                for key, _ in sel.select(remaining):
                    if key.data == "exit":
                        return f"it exited with status {proc.wait()}"
                    if b"READY=1" in _recv_notify(notify).split(b"\n"):
                        return None
    finally:
        os.close(pidfd)


def _recv_notify(notify: socket.socket) -> bytes:
    """One sd_notify datagram; file descriptors passed along (FDSTORE=1) are closed."""
    data, ancdata, _, _ = notify.recvmsg(
        4096, socket.CMSG_SPACE(_NOTIFY_MAX_FDS * 4), socket.MSG_CMSG_CLOEXEC
    )
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            for fd in memoryview(payload)[:usable].cast("i"):
                os.close(fd)
    return data


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _remove_leftovers(created_journal_dir: bool, created_dropin_dir: bool) -> None:
    """Undo what starting journald changed, so nothing looks like a live journald."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(DROPIN)
    if created_dropin_dir:
        with contextlib.suppress(OSError):
            os.rmdir(DROPIN_DIR)
    if journald_running():  # someone else's journald took over meanwhile: leave it
        return
    if created_journal_dir:
        shutil.rmtree(JOURNAL_DIR, ignore_errors=True)
        return
    for name in _JOURNALD_SOCKETS:
        path = os.path.join(JOURNAL_DIR, name)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)


# --- reading ------------------------------------------------------------------


def journal_mark() -> str | None:
    """Cursor of the newest entry now in the journal (None if it is empty).

    Pass it as ``since=`` to read only entries written after this call.
    """
    with journal.Reader() as reader:
        reader.seek_tail()
        entry = reader.get_previous()
        return entry.get("__CURSOR") if entry else None


@contextlib.contextmanager
def _reader(match: dict[str, Any], since: str | None) -> Iterator[journal.Reader]:
    with journal.Reader() as reader:
        # Set up inotify before the first read, so nothing written between the
        # read and the first wait() is missed.
        reader.fileno()
        for field, value in match.items():
            if not isinstance(value, bytes | str):
                value = str(value)
            reader.add_match(**{field: value})
        if since is None:
            reader.seek_head()
        else:
            reader.seek_cursor(since)
        yield reader


def _drain(reader: journal.Reader, since: str | None) -> Iterator[Entry]:
    """The entries from the reader's position to the current end of the journal."""
    while entry := reader.get_next():
        if since is not None and entry.get("__CURSOR") == since:
            continue  # seek_cursor() lands on the mark itself: not "after" it
        yield entry


def _wait(reader: journal.Reader, remaining: float) -> None:
    reader.wait(remaining if RECHECK_S is None else min(remaining, RECHECK_S))


def _batches(match: dict[str, Any], since: str | None,
             deadline: float) -> Iterator[tuple[bool, list[Entry]]]:
    """``(fresh, entries)``: what is new in the journal after `since`, as it comes, until
    the deadline. A Reader with matches, opened while journald is still writing a burst,
    sometimes never returns an entry that is in the file (libsystemd 252, about 1 in 20
    tries); a fresh reader finds it. So the wait is in slices, each with a fresh reader
    from `since`: ``fresh`` says a batch is a new reader's first (from `since` again)."""
    while True:
        slice_end = min(deadline, time.monotonic() + READER_SLICE_S)
        fresh = True
        with _reader(match, since) as reader:
            while True:
                yield fresh, list(_drain(reader, since))
                fresh = False
                if time.monotonic() >= deadline:
                    return
                remaining = slice_end - time.monotonic()
                if remaining <= 0:
                    break
                _wait(reader, remaining)


def read_entries(
    deadline_s: float = TIMEOUT, *, count: int = 1, since: str | None = None, **match: Any
) -> list[Entry]:
    """Every entry whose fields equal `match` (oldest first), after `since` if given.

    Waits at most `deadline_s` seconds until at least `count` such entries exist,
    then returns all there are at that moment, which may be fewer than `count`
    when the deadline passed: the caller asserts. With ``count=0`` it returns at once.
    """
    entries: list[Entry] = []
    for fresh, batch in _batches(match, since, time.monotonic() + deadline_s):
        entries = batch if fresh else entries + batch
        if len(entries) >= count:
            break
    return entries


def wait_for_entry(
    predicate: Callable[[Entry], bool] | None = None,
    timeout: float = TIMEOUT,
    *,
    since: str | None = None,
    **match: Any,
) -> Entry:
    """The first entry (after `since`) whose fields equal `match` and for which
    `predicate(entry)` is true (any matching entry if `predicate` is None).

    Raises AssertionError naming the match, the predicate and the last entries that
    matched the fields when none shows within `timeout` seconds.
    """
    seen = 0
    last: list[Entry] = []
    for fresh, batch in _batches(match, since, time.monotonic() + timeout):
        if fresh:
            seen, last = 0, []
        for entry in batch:
            if predicate is None or predicate(entry):
                return entry
            seen += 1
            last = [*last[-4:], entry]
    what = getattr(predicate, "__name__", repr(predicate)) if predicate else "(any)"
    shown = "; ".join(f"{e.get('MESSAGE', '')!r} {_custom_fields(e)}" for e in last) or "none"
    running = "" if journald_running() else f" (no journald answers on {JOURNAL_SOCKET})"
    raise AssertionError(
        f"no journal entry with {match} satisfying {what} within {timeout}s{running}; "
        f"{seen} entries matched the fields but not the predicate, the last ones: {shown}"
    )


def _custom_fields(entry: Entry) -> dict[str, Any]:
    """The fields a sender set itself (no trusted _FIELDS, no __ADDRESS fields)."""
    return {k: v for k, v in entry.items() if not k.startswith("_") and k != "MESSAGE"}
