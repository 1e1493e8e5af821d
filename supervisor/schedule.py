"""When services start and restart: intervals, times, cron, schedules and restart policies.

Everything here is pure: no ``os``, no ``time``. The current time is passed in as ``now``
(seconds); wall-clock values are Unix epoch seconds. Local time is the system's zone
(``TZ`` or ``/etc/localtime``, through the C library's ``localtime``/``mktime`` that
``datetime`` already uses), DST included; every function that deals with calendar time
also takes an explicit ``tzinfo`` (for example a ``zoneinfo.ZoneInfo``).

- :func:`parse_interval` / :func:`format_interval`: ``"1h30m"`` <-> ``5400.0``.
- :func:`parse_at`: ``"2026-12-01T08:00:00[+01:00]"`` or ``"08:30[:15]"`` -> epoch seconds.
- :class:`Cron`: a 5-field cron expression (or ``@daily`` ...) evaluated by ``cronsim``.
- :class:`Schedule`: once, every (drift-free), or cron; ``first_due`` and ``next_after``.
- :class:`RestartPolicy`: on-failure / always / never, a restart limit, exponential
  back-off.
- :class:`StartLimit`: at most K failures within T seconds (``"5/10s"``).

Every parse error is a ``ValueError`` whose message is one line naming the bad text.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from datetime import time as time_of_day
from typing import Any

__all__ = [
    "DEFAULT_START_LIMIT",
    "LOCAL",
    "MAX_INTERVAL",
    "MIN_EVERY",
    "RESTART_MODES",
    "Cron",
    "LocalZone",
    "RestartPolicy",
    "Schedule",
    "StartLimit",
    "format_interval",
    "parse_at",
    "parse_interval",
]

_EPOCH = datetime(1970, 1, 1)  # naive, UTC fields


# ---- the local time zone -----------------------------------------------------------------------


class LocalZone(tzinfo):
    """The system's local zone, DST-aware, as a ``tzinfo``.

    ``datetime.astimezone()`` gives the local zone only as a *fixed* offset, which is wrong
    on the other side of a DST change; this asks the C library for every instant instead
    (naive ``astimezone()`` for the offset of a local time, honouring ``fold``; naive
    ``fromtimestamp()`` for the local time of an instant, which sets ``fold``). It agrees
    with ``zoneinfo.ZoneInfo`` of the same zone, gaps and folds included. Use the
    :data:`LOCAL` singleton (datetimes sharing one ``tzinfo`` object compare by wall time).
    """

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        if dt is None:
            return None
        return dt.replace(tzinfo=None).astimezone().utcoffset()

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None  # not knowable portably; nothing here needs it

    def tzname(self, dt: datetime | None) -> str | None:
        if dt is None:
            return None
        return dt.replace(tzinfo=None).astimezone().tzname()

    def fromutc(self, dt: datetime) -> datetime:
        delta = dt.replace(tzinfo=None) - _EPOCH
        local = datetime.fromtimestamp(delta.days * 86400 + delta.seconds)  # sets fold
        return local.replace(microsecond=dt.microsecond, tzinfo=self)

    def __repr__(self) -> str:
        return "LOCAL"


LOCAL = LocalZone()


def _zone(tz: tzinfo | None) -> tzinfo:
    return LOCAL if tz is None else tz


# ---- intervals ---------------------------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PART = re.compile(rf"({_NUMBER})(ms|s|m|h|d|w)")
_INTERVAL = re.compile(rf"(?:{_NUMBER}(?:ms|s|m|h|d|w))+")
_BARE = re.compile(_NUMBER)
MAX_INTERVAL = 100 * 366 * 86400.0  # a century: anything longer is a typo
# --every: at most a start every 10 ms. Each start is a process; more often than this only
# burns the CPUs (and below what the clock's float resolution can space, it never moves on)
MIN_EVERY = 0.01
_INTERVAL_HINT = "expected a positive duration such as 30s, 5m, 1h30m, 2d, 1.5s or 250ms"


def parse_interval(text: str) -> float:
    """Seconds (a float > 0) in ``text``: ``"30s"``, ``"5m"``, ``"1h30m"``, ``"2d"``,
    ``"1.5s"``, ``"250ms"``; units ``ms s m h d w``, each at most once, summed; a bare
    number is seconds (``"10"``, ``"0.5"``), as with systemd time spans. At most a century.
    """
    if not isinstance(text, str):
        raise ValueError(f"invalid interval {text!r}: {_INTERVAL_HINT}")
    s = text.strip()
    if _BARE.fullmatch(s):
        seconds = float(s)
    elif _INTERVAL.fullmatch(s):
        seconds = 0.0
        seen: set[str] = set()
        for number, unit in _PART.findall(s):
            if unit in seen:
                raise ValueError(f"invalid interval {text!r}: unit {unit!r} given twice")
            seen.add(unit)
            # ms divides by an exact 1000: "250ms" is exactly what "0.25" is
            seconds += float(number) / 1000 if unit == "ms" else float(number) * _UNITS[unit]
    else:
        raise ValueError(f"invalid interval {text!r}: {_INTERVAL_HINT}")
    if not seconds > 0:
        raise ValueError(f"invalid interval {text!r}: it must be greater than zero")
    if seconds > MAX_INTERVAL:
        raise ValueError(f"invalid interval {text!r}: longer than 100 years")
    return seconds


def format_interval(seconds: float) -> str:
    """Text that :func:`parse_interval` reads back as exactly ``seconds``, for display:
    ``5400 -> "1h30m"``, ``0.25 -> "250ms"``, ``1.5 -> "1.5s"``, ``90 -> "1m30s"``."""
    if not (isinstance(seconds, int | float) and 0 < seconds < math.inf):
        raise ValueError(f"not a positive interval: {seconds!r}")
    if seconds >= 1 and seconds == int(seconds):
        rest, out = int(seconds), []
        for unit in ("w", "d", "h", "m", "s"):
            count, rest = divmod(rest, int(_UNITS[unit]))
            if count:
                out.append(f"{count}{unit}")
        return "".join(out)
    from decimal import Decimal  # imported when needed: the daemon starts faster

    exact = Decimal(repr(float(seconds)))  # the shortest decimal that reads back as it
    if seconds < 1:
        text = f"{_plain(exact * 1000)}ms"
        if parse_interval(text) == seconds:
            return text
    return f"{_plain(exact)}s"


def _plain(number) -> str:  # a Decimal
    """Positional notation, no exponent, no trailing zeros: what :func:`parse_interval` reads."""
    text = format(number, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


# ---- absolute times ----------------------------------------------------------------------------

_TIME_OF_DAY = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")
_AT_HINT = ("expected an ISO-8601 date and time such as 2026-12-01T08:00:00 or "
            "2026-12-01T08:00:00+01:00, or a time of day HH:MM[:SS]")


def parse_at(text: str, now: float, tz: tzinfo | None = None) -> float:
    """Epoch seconds of ``text``, relative to ``now`` (epoch seconds).

    - An ISO-8601 date and time (``datetime.fromisoformat``; ``"2026-12-01T08:00:00"``,
      ``"2026-12-01 08:00"``, ``"...+01:00"``, ``"...Z"``; a bare date is its midnight).
      Without an offset it is local time (``tz``, default the system zone). Not after
      ``now``: ``ValueError("... is in the past")``.
    - ``HH:MM`` or ``HH:MM:SS``: the next such local time strictly after ``now`` (today
      or tomorrow). A time that a DST gap skips means the instant it would have been at
      the old offset (02:30 on a spring-forward night is 03:30); one a DST fold repeats
      means its first occurrence.
    """
    zone = _zone(tz)
    s = text.strip() if isinstance(text, str) else ""
    m = _TIME_OF_DAY.fullmatch(s)
    if m:
        hour, minute, second = int(m[1]), int(m[2]), int(m[3] or 0)
        if hour > 23 or minute > 59 or second > 59:
            raise ValueError(f"invalid time of day {text!r}: expected HH:MM[:SS] within "
                             "00:00:00-23:59:59")
        wanted = time_of_day(hour, minute, second)
        today = datetime.fromtimestamp(now, zone).date()
        for days in range(3):  # tomorrow at the latest; the third day only guards DST quirks
            due = datetime.combine(today + timedelta(days=days), wanted, tzinfo=zone)
            if due.timestamp() > now:
                return due.timestamp()
        raise AssertionError("unreachable: a time of day recurs within two days")
    try:
        when = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"invalid time {text!r}: {_AT_HINT}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone)
    due = when.timestamp()
    if due <= now:
        raise ValueError(f"time {s} is in the past")
    return due


# ---- cron ---------------------------------------------------------------------------------------

SHORTHANDS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_CRON_HINT = ("expected 5 fields (minute hour day-of-month month day-of-week) or one of "
              + ", ".join(SHORTHANDS))


@dataclass(frozen=True)
class Cron:
    """A cron expression, evaluated by the ``cronsim`` library in a time zone.

    ``expr``: 5 fields ``minute hour day-of-month month day-of-week`` with everything
    cronsim reads (``*``, lists, ranges, ``/step``, ``JAN``..``DEC``, ``SUN``..``SAT``,
    ``L``, ``LW``, ``MON#2``, ``5L``), or a shorthand ``@yearly @annually @monthly @weekly
    @daily @midnight @hourly``. Day-of-month and day-of-week combine like Debian cron (OR,
    unless either starts with ``*``). ``tz``: a ``tzinfo``; ``None`` is the system zone.
    DST is cronsim's (Debian cron's): a job at a fixed time that a spring-forward gap skips
    runs right after the gap; one that a fall-back fold repeats runs once (its first
    occurrence); ``*``-minute/hour jobs follow real elapsed time.
    Invalid expressions raise ``ValueError``.
    """

    expr: str
    tz: tzinfo | None = None
    fields: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.expr, str):
            raise ValueError(f"invalid cron expression {self.expr!r}: {_CRON_HINT}")
        if self.tz is not None and not isinstance(self.tz, tzinfo):
            raise ValueError(f"not a time zone: {self.tz!r}")
        text = " ".join(self.expr.split())
        fields = SHORTHANDS.get(text.lower(), text)
        if text.startswith("@") and text.lower() not in SHORTHANDS:
            raise ValueError(f"invalid cron expression {self.expr!r}: unknown shorthand "
                             f"{text!r} ({_CRON_HINT})")
        count = len(fields.split())
        if count != 5:
            raise ValueError(f"invalid cron expression {self.expr!r}: it has {count} "
                             f"field{'s' * (count != 1)}; {_CRON_HINT}")
        from cronsim import CronSim, CronSimError  # only cron needs it: imported then

        try:
            next(CronSim(fields, datetime(2000, 1, 1, tzinfo=UTC)))
        except CronSimError as e:
            raise ValueError(f"invalid cron expression {self.expr!r}: "
                             f"{str(e).lower()} field") from None
        except StopIteration:
            raise ValueError(f"invalid cron expression {self.expr!r}: it never fires") from None
        except (ValueError, LookupError, TypeError, AssertionError, ArithmeticError):
            raise ValueError(f"invalid cron expression {self.expr!r}: {_CRON_HINT}") from None
        object.__setattr__(self, "fields", fields)

    def next_after(self, now: float) -> float:
        """Epoch seconds of the first firing strictly after ``now`` (epoch seconds)."""
        zone = _zone(self.tz)
        from cronsim import CronSim

        start = math.floor(now)
        it = CronSim(self.fields, datetime.fromtimestamp(start, zone))
        try:
            while True:
                due = next(it).timestamp()
                # cronsim starts one second after `start`, so `due > now` holds except
                # right after a DST fold, where a fixed-time job's answer is its first
                # occurrence (already past): skip to the next.
                if due > now:
                    return due
        except StopIteration:
            raise ValueError(f"cron expression {self.expr!r} does not fire within "
                             "50 years") from None

    def firings(self, now: float, count: int) -> list[float]:
        """The next ``count`` firings after ``now`` (for display: ``--dry-run`` and such)."""
        out: list[float] = []
        for _ in range(count):
            now = self.next_after(now)
            out.append(now)
        return out

    def __str__(self) -> str:
        return self.expr


# ---- schedules ---------------------------------------------------------------------------------

SCHEDULE_KINDS = ("once", "every", "cron")


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a service starts. Build one with :meth:`once`, :meth:`every` or :meth:`cron`.

    ``wall`` says which clock the times are on: True, epoch seconds (CLOCK_REALTIME: arm
    them on the realtime ``Timers`` with cancel_on_set and recompute on a clock step);
    False, seconds on CLOCK_BOOTTIME (a delay, or an interval that must ignore clock steps).
    ``once`` and ``every`` are plain arithmetic on whichever clock; ``cron`` is wall-clock.

    - ``once``: one start at ``at``.
    - ``every``: starts at ``anchor + k*interval`` for k = 0, 1, 2, ...: the grid is fixed by
      the first start, so a late run never shifts later ones and nothing drifts.
    - ``cron``: starts at each firing of ``calendar`` (a :class:`Cron`).
    """

    kind: str
    at: float | None = None  # once
    interval: float | None = None  # every
    anchor: float | None = None  # every: the first start
    calendar: Cron | None = None  # cron
    wall: bool = True

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"unknown schedule kind {self.kind!r} (once, every or cron)")
        given = {"at": self.at is not None, "interval": self.interval is not None,
                 "anchor": self.anchor is not None, "calendar": self.calendar is not None}
        need = {"once": {"at"}, "every": {"interval", "anchor"}, "cron": {"calendar"}}[self.kind]
        if {k for k, v in given.items() if v} != need:
            raise ValueError(f"a {self.kind} schedule takes exactly {', '.join(sorted(need))}")
        if self.kind == "every" and not (MIN_EVERY <= self.interval <= MAX_INTERVAL):
            shown = (format_interval(self.interval) if 0 < self.interval < math.inf
                     else repr(self.interval))
            raise ValueError(f"the interval (--every) must be from "
                             f"{format_interval(MIN_EVERY)} to 100 years, not {shown}")
        for name in ("at", "anchor"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite time, not {value!r}")
        if self.kind == "cron" and not self.wall:
            raise ValueError("a cron schedule is on the wall clock")

    @classmethod
    def once(cls, at: float, *, wall: bool = True) -> Schedule:
        """Start once at ``at`` (``parse_at(...)``, or ``now + delay`` on CLOCK_BOOTTIME
        with ``wall=False``)."""
        return cls("once", at=float(at), wall=wall)

    @classmethod
    def every(cls, interval: float, anchor: float, *, wall: bool = True) -> Schedule:
        """Start at ``anchor`` and every ``interval`` seconds after it."""
        return cls("every", interval=float(interval), anchor=float(anchor), wall=wall)

    @classmethod
    def cron(cls, expr: str | Cron, tz: tzinfo | None = None) -> Schedule:
        """Start at each firing of a cron expression (see :class:`Cron`)."""
        calendar = expr if isinstance(expr, Cron) else Cron(expr, tz)
        return cls("cron", calendar=calendar)

    @property
    def repeats(self) -> bool:
        return self.kind != "once"

    def first_due(self, now: float) -> float:
        """When the first start is due for a service scheduled at ``now``: ``at`` (once),
        ``anchor`` (every), the next firing after ``now`` (cron). It may be <= ``now``:
        then start at once."""
        if self.kind == "once":
            return self.at
        if self.kind == "every":
            return self.anchor
        return self.calendar.next_after(now)

    def next_after(self, now: float) -> float | None:
        """The first start strictly after ``now``; ``None`` when there is none (a ``once``
        whose time has come). Call it with the time a start happened (or with the current
        time) to get the next: starts missed meanwhile are skipped, not caught up."""
        if self.kind == "once":
            return self.at if self.at > now else None
        if self.kind == "cron":
            return self.calendar.next_after(now)
        anchor, interval = self.anchor, self.interval
        if now < anchor:
            return anchor
        # no loop: the quotient is right or one off either way (float division); one step
        # each way settles it, and the floor of the interval keeps every step > 0
        k = math.floor((now - anchor) / interval) + 1
        if anchor + k * interval <= now:
            k += 1
        elif k > 1 and anchor + (k - 1) * interval > now:
            k -= 1
        due = anchor + k * interval
        if due <= now:
            raise ValueError(f"interval {interval!r} is too small to move on from {now!r}")
        return due

    def describe(self) -> str:
        """One line for users: ``once``, ``every 1h30m``, ``cron 0 8 * * 1-5``."""
        if self.kind == "once":
            return "once"
        if self.kind == "every":
            return f"every {format_interval(self.interval)}"
        return f"cron {self.calendar.expr}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (for the state file and answers); :meth:`from_dict` reverses it.
        A cron time zone is kept by name: the system zone (None), UTC, or a ZoneInfo key."""
        out: dict[str, Any] = {"kind": self.kind, "wall": self.wall}
        if self.kind == "once":
            out["at"] = self.at
        elif self.kind == "every":
            out["interval"], out["anchor"] = self.interval, self.anchor
        else:
            tz = self.calendar.tz
            if tz is None or tz is LOCAL:
                name = None
            elif tz is UTC:
                name = "UTC"
            else:
                from zoneinfo import ZoneInfo  # imported only where a zone is named

                if not isinstance(tz, ZoneInfo):
                    raise ValueError(f"cannot name the time zone {tz!r}")
                name = tz.key
            out["cron"], out["tz"] = self.calendar.expr, name
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schedule:
        kind = data.get("kind")
        if kind == "once":
            return cls.once(data["at"], wall=data.get("wall", True))
        if kind == "every":
            return cls.every(data["interval"], data["anchor"], wall=data.get("wall", True))
        if kind == "cron":
            name = data.get("tz")
            if name is None or name == "UTC":
                tz = None if name is None else UTC
            else:
                from zoneinfo import ZoneInfo

                tz = ZoneInfo(name)
            return cls.cron(data["cron"], tz)
        raise ValueError(f"unknown schedule kind {kind!r} (once, every or cron)")


# ---- restart policy ----------------------------------------------------------------------------

RESTART_MODES = ("on-crash", "on-failure", "always", "never")
END_KINDS = ("success", "clean", "killed", "failure", "unknown")


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Whether and when to restart a service whose process ended of itself (no command
    asked for the end: stop-service, close-service, remove-service and close never
    restart). The modes are systemd's ``Restart=``, plus the seed's ``-r K``:

    ==============  ===========================================================
    ``on-crash``    ``-r K`` alone: after a crash (a non-zero exit, a signal
                    other than SIGKILL, SIGTERM, SIGINT, SIGHUP, SIGPIPE)
    ``on-failure``  after a non-zero exit, an unclean signal, or SIGKILL from
                    outside (the OOM killer sends it); not after exit 0 or a
                    clean signal (SIGTERM, SIGINT, SIGHUP, SIGPIPE)
    ``always``      after any end
    ``never``       never
    ==============  ===========================================================

    An end whose status is not knowable (it came while no daemon watched, on an old
    kernel) counts as a failure: the service was meant to go on.

    - ``limit``: at most this many restarts in the service's life; ``None`` is unlimited.
    - back-off: restart number n+1 waits ``min(delay * backoff**n, max_delay)`` seconds;
      ``delay`` 0 (the default) restarts at once, as docs/reference.md says for ``-r K``.

    :meth:`from_options` maps the CLI's ``--restart MODE`` and ``-r K`` onto this.
    """

    mode: str = "on-crash"
    limit: int | None = None
    delay: float = 0.0
    max_delay: float = 60.0
    backoff: float = 2.0

    def __post_init__(self) -> None:
        if self.mode not in RESTART_MODES:
            raise ValueError(f"invalid restart mode {self.mode!r}: expected on-failure, "
                             "always or never")
        if self.limit is not None and (isinstance(self.limit, bool)
                                       or not isinstance(self.limit, int) or self.limit < 0):
            raise ValueError(f"restart limit must be an integer >= 0, not {self.limit!r}")
        if not (math.isfinite(self.delay) and self.delay >= 0):
            raise ValueError(f"restart delay must be >= 0 seconds, not {self.delay!r}")
        if not (math.isfinite(self.max_delay) and self.max_delay >= self.delay):
            raise ValueError(f"maximum restart delay must be >= the delay ({self.delay:g} s), "
                             f"not {self.max_delay!r}")
        if not (math.isfinite(self.backoff) and self.backoff >= 1):
            raise ValueError(f"restart back-off factor must be >= 1, not {self.backoff!r}")

    @classmethod
    def from_options(cls, restart: str | None = None, times: int | None = None,
                     **backoff: float) -> RestartPolicy:
        """The policy for ``create-service [--restart MODE] [-r K]``:

        ======================  ==================================================
        neither                 on-crash, limit 0: no restart (the seed's default)
        ``-r K``                on-crash, at most K restarts (the seed's ``-r``)
        ``--restart M``         M, unlimited (``never``: no restart)
        ``--restart M -r K``    M, at most K restarts in all
        ======================  ==================================================

        ``--restart never`` with ``-r K`` (K > 0) is a contradiction: ``ValueError``.
        ``backoff`` passes ``delay``, ``max_delay``, ``backoff`` through.
        """
        if restart is not None and restart not in RESTART_MODES[1:]:
            raise ValueError(f"invalid restart mode {restart!r}: expected on-failure, "
                             "always or never")
        if times is not None and (isinstance(times, bool) or not isinstance(times, int)
                                  or times < 0):
            raise ValueError(f"restart times must be an integer >= 0, not {times!r}")
        if restart == "never" and times:
            raise ValueError(f"--restart never contradicts -r {times}")
        if restart is None:
            return cls("on-crash", times or 0, **backoff)
        return cls(restart, times, **backoff)

    def should_restart(self, kind: str, restarts_so_far: int) -> bool:
        """Whether a service that has been restarted ``restarts_so_far`` times and whose
        process just ended of itself (``kind``: one of :data:`END_KINDS`) restarts."""
        if kind not in END_KINDS:
            raise ValueError(f"unknown end {kind!r}: expected one of {', '.join(END_KINDS)}")
        if self.limit is not None and restarts_so_far >= self.limit:
            return False
        return kind in _RESTARTED[self.mode]

    def delay_for(self, restarts_so_far: int) -> float:
        """Seconds to wait before the next restart: ``delay * backoff**restarts_so_far``,
        at most ``max_delay``. Monotone in ``restarts_so_far``."""
        if restarts_so_far < 0:
            raise ValueError(f"restarts so far must be >= 0, not {restarts_so_far!r}")
        if self.delay == 0:
            return 0.0
        try:
            wait = self.delay * self.backoff ** restarts_so_far
        except OverflowError:
            return self.max_delay
        return min(wait, self.max_delay)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RestartPolicy:
        return cls(**data)


_RESTARTED = {"on-crash": {"failure", "unknown"},
              "on-failure": {"failure", "killed", "unknown"},
              "always": set(END_KINDS), "never": set()}


# ---- start limit -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartLimit:
    """At most ``burst`` starts within ``interval`` seconds (systemd's StartLimitBurst and
    StartLimitIntervalSec). Times are best on CLOCK_BOOTTIME."""

    burst: int
    interval: float

    def __post_init__(self) -> None:
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError(f"start limit burst must be an integer >= 1, not {self.burst!r}")
        if not (0 < self.interval <= MAX_INTERVAL):
            raise ValueError(f"start limit interval must be > 0 seconds, not {self.interval!r}")

    @classmethod
    def parse(cls, text: str) -> StartLimit:
        """``"K/T"``: K starts within T, an interval (``"5/10s"``, ``"5/10"``, ``"3/1m"``)."""
        s = text.strip() if isinstance(text, str) else ""
        burst, slash, span = s.partition("/")
        burst = burst.strip()
        if not slash or not (burst.isascii() and burst.isdigit() and len(burst) <= 9):
            raise ValueError(f"invalid start limit {text!r}: expected K/T such as 5/10s "
                             "(at most K starts within T)")
        try:
            interval = parse_interval(span)
        except ValueError as e:
            raise ValueError(f"invalid start limit {text!r}: {e}") from None
        if int(burst) < 1:
            raise ValueError(f"invalid start limit {text!r}: K must be at least 1")
        return cls(int(burst), interval)

    def allows(self, start_times: Iterable[float], now: float
               ) -> tuple[bool, tuple[float, ...]]:
        """``(allowed, pruned)``. ``start_times``: when the service started, the start
        about to happen (at ``now``) included. ``pruned``: those within the last
        ``interval`` seconds (``t > now - interval``), oldest first: keep it for next time.
        Not allowed when more than ``burst`` of them remain: end the service CRASHED and
        log :meth:`reason`."""
        pruned = tuple(sorted(t for t in start_times if t > now - self.interval))
        return len(pruned) <= self.burst, pruned

    def reason(self) -> str:
        """Why a service was not started again, for its journal entry."""
        return (f"it would start more than {self.burst} times within "
                f"{format_interval(self.interval)} (start limit {self}; time spent waiting "
                "to restart not counted)")

    def __str__(self) -> str:
        return f"{self.burst}/{format_interval(self.interval)}"


# systemd's default (5 starts per 10 s), for unlimited policies: a service that fails at once
# would otherwise restart in a tight loop.
DEFAULT_START_LIMIT = StartLimit(5, 10.0)
