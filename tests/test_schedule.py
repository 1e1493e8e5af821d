"""Tests of supervisor/schedule.py: intervals, times, cron, schedules, restart policies.

All pure: times are passed in. Time-zone cases use explicit ``ZoneInfo`` zones and, for the
system zone, ``TZ`` set around the test (``time.tzset``), so they hold on any machine.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import itertools
import json
import math
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest
from cronsim import CronSim
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from supervisor import schedule
from supervisor.schedule import (
    DEFAULT_START_LIMIT,
    LOCAL,
    MAX_INTERVAL,
    MIN_EVERY,
    Cron,
    RestartPolicy,
    Schedule,
    StartLimit,
    format_interval,
    parse_at,
    parse_interval,
)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError:
        pytest.skip(f"no time zone data for {name}")


@contextlib.contextmanager
def local_zone(name: str):
    """Make ``name`` the process's local zone (``TZ``) for the block."""
    zone(name)
    old = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


def at(text: str) -> float:
    """Epoch seconds of an ISO-8601 time with an offset."""
    return datetime.fromisoformat(text).timestamp()


def one_line_naming(err: pytest.ExceptionInfo, text: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg
    assert repr(text) in msg or text in msg


BERLIN = "Europe/Berlin"  # DST 2026: spring forward 03-29 02:00 CET, fall back 10-25 03:00 CEST
NOW = at("2026-06-15T12:07:30+00:00")


# ---- purity ----------------------------------------------------------------------------------


def test_module_imports_neither_os_nor_time():
    tree = ast.parse(Path(schedule.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert not imported & {"os", "time", "sys", "subprocess"}, imported


# ---- parse_interval / format_interval ----------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("5m", 300), ("1h30m", 5400), ("2d", 172800), ("1.5s", 1.5),
    ("250ms", 0.25), ("1w", 604800), ("10", 10), ("0.5", 0.5), (".5s", 0.5), ("1.s", 1),
    (" 45s ", 45), ("1h1s", 3601), ("30m1h", 5400), ("1.5h", 5400), ("100ms", 0.1),
    ("1d2h3m4s5ms", 93784.005), ("1ms", 0.001), ("36600d", 36600 * 86400),
])
def test_parse_interval(text, seconds):
    assert parse_interval(text) == pytest.approx(seconds, rel=1e-15)
    assert isinstance(parse_interval(text), float)


@pytest.mark.parametrize("text", [
    "0s", "", "   ", "5x", "-1m", "0", "0ms", "0h0m", "1m1m", "1ms1ms", "1e3s", "nan", "inf",
    "1 m", "m", "s30", "1h-30m", "1,5s", "+5s", "5 s", "1h 30m", "5min", "5sec", "36601d", "5S",
])
def test_parse_interval_rejects(text):
    with pytest.raises(ValueError) as err:
        parse_interval(text)
    one_line_naming(err, text)


def test_parse_interval_messages():
    with pytest.raises(ValueError, match="greater than zero"):
        parse_interval("0s")
    with pytest.raises(ValueError, match="expected a positive duration such as 30s"):
        parse_interval("5x")
    with pytest.raises(ValueError, match="'m' given twice"):
        parse_interval("1m2m")
    with pytest.raises(ValueError, match="100 years"):
        parse_interval("99999d")
    with pytest.raises(ValueError):
        parse_interval(None)  # type: ignore[arg-type]


@given(st.dictionaries(st.sampled_from(["w", "d", "h", "m", "s", "ms"]),
                       st.integers(0, 500), min_size=1))
def test_parse_interval_sums_its_parts(parts):
    assume(any(parts.values()))
    text = "".join(f"{n}{u}" for u, n in parts.items())
    factor = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
    assert parse_interval(text) == pytest.approx(sum(n * factor[u] for u, n in parts.items()))


@pytest.mark.parametrize(("seconds", "text"), [
    (5400, "1h30m"), (0.25, "250ms"), (1.5, "1.5s"), (90, "1m30s"), (30, "30s"),
    (172800, "2d"), (604800 + 1, "1w1s"), (0.001, "1ms"), (10.0, "10s"),
])
def test_format_interval(seconds, text):
    assert format_interval(seconds) == text


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, "1s"])
def test_format_interval_rejects(bad):
    with pytest.raises(ValueError):
        format_interval(bad)


@given(st.one_of(
    st.floats(min_value=1e-9, max_value=MAX_INTERVAL, allow_nan=False, allow_infinity=False),
    st.integers(1, int(MAX_INTERVAL)).map(float),
    st.integers(1, 10**6).map(lambda ms: ms / 1000),
))
def test_format_interval_reads_back_exactly(seconds):
    text = format_interval(seconds)
    assert re.fullmatch(r"[0-9.a-z]+", text)
    assert parse_interval(text) == seconds


# ---- parse_at --------------------------------------------------------------------------------


def test_parse_at_iso_naive_is_local_time_in_the_given_zone():
    tz = zone(BERLIN)
    assert parse_at("2026-12-01T08:00:00", NOW, tz) == at("2026-12-01T08:00:00+01:00")
    assert parse_at("2026-07-01T08:00:00", NOW, tz) == at("2026-07-01T08:00:00+02:00")
    assert parse_at("2026-12-01 08:00", NOW, tz) == at("2026-12-01T08:00:00+01:00")
    assert parse_at("2026-12-01", NOW, tz) == at("2026-12-01T00:00:00+01:00")


def test_parse_at_iso_with_offset_ignores_the_zone():
    tz = zone(BERLIN)
    assert parse_at("2026-12-01T08:00:00+05:30", NOW, tz) == at("2026-12-01T02:30:00+00:00")
    assert parse_at("2026-12-01T08:00:00Z", NOW, tz) == at("2026-12-01T08:00:00+00:00")
    assert (parse_at(" 2026-12-01T08:00:00.250+00:00 ", NOW)
            == at("2026-12-01T08:00:00+00:00") + 0.25)


def test_parse_at_naive_defaults_to_the_system_zone():
    with local_zone("America/New_York"):
        assert parse_at("2026-12-01T08:00:00", NOW) == at("2026-12-01T08:00:00-05:00")
        assert parse_at("08:30", NOW) == at("2026-06-15T08:30:00-04:00")  # NOW is 08:07:30
        assert parse_at("08:00", NOW) == at("2026-06-16T08:00:00-04:00")
    with local_zone("Asia/Tokyo"):
        assert parse_at("2026-12-01T08:00:00", NOW) == at("2026-12-01T08:00:00+09:00")


@pytest.mark.parametrize("text", ["2026-06-15T12:07:30+00:00", "2026-06-15T12:07:29+00:00",
                                  "2020-01-01T00:00:00", "1970-01-01"])
def test_parse_at_past_is_refused(text):
    with pytest.raises(ValueError, match=f"^time {re.escape(text)} is in the past$"):
        parse_at(text, NOW, UTC)


def test_parse_at_just_after_now_is_fine():
    assert parse_at("2026-06-15T12:07:30.5+00:00", NOW) == NOW + 0.5


@pytest.mark.parametrize("text", ["tomorrow", "", "08", "8:5", "08:30pm", "24:00", "12:60",
                                  "12:00:60", "2026-13-01T00:00", "2026-12-01T25:00",
                                  "T08:30", "08:30+01:00", "now"])
def test_parse_at_rejects(text):
    with pytest.raises(ValueError) as err:
        parse_at(text, NOW, UTC)
    one_line_naming(err, text)


def test_time_of_day_today_or_tomorrow_strictly_after_now():
    assert parse_at("12:30", NOW, UTC) == at("2026-06-15T12:30:00+00:00")
    assert parse_at("12:07:31", NOW, UTC) == at("2026-06-15T12:07:31+00:00")
    assert parse_at("12:07:30", NOW, UTC) == at("2026-06-16T12:07:30+00:00")  # == now
    assert parse_at("08:00", NOW, UTC) == at("2026-06-16T08:00:00+00:00")
    assert parse_at("00:00", NOW, UTC) == at("2026-06-16T00:00:00+00:00")
    assert parse_at("8:00", NOW, UTC) == at("2026-06-16T08:00:00+00:00")
    assert parse_at("23:59:59", NOW, UTC) == at("2026-06-15T23:59:59+00:00")


def test_time_of_day_in_a_zone_uses_the_local_date():
    tz = zone("Pacific/Auckland")  # NOW is 00:07:30 on 06-16 there (+12:00)
    assert parse_at("00:30", NOW, tz) == at("2026-06-16T00:30:00+12:00")
    assert parse_at("00:05", NOW, tz) == at("2026-06-17T00:05:00+12:00")


def test_time_of_day_across_dst():
    tz = zone(BERLIN)
    # spring forward: 02:30 does not exist on 03-29; it means 03:30 CEST
    assert (parse_at("02:30", at("2026-03-29T01:00:00+01:00"), tz)
            == at("2026-03-29T03:30:00+02:00"))
    assert (parse_at("04:00", at("2026-03-29T01:00:00+01:00"), tz)
            == at("2026-03-29T04:00:00+02:00"))
    # fall back: 02:30 happens twice on 10-25; the first one counts...
    assert (parse_at("02:30", at("2026-10-25T00:00:00+02:00"), tz)
            == at("2026-10-25T02:30:00+02:00"))
    # ... and during the second 02:xx hour the next 02:30 is tomorrow's
    assert (parse_at("02:30", at("2026-10-25T02:45:00+01:00"), tz)
            == at("2026-10-26T02:30:00+01:00"))


@settings(deadline=None)
@given(st.floats(0, 4e9), st.integers(0, 23), st.integers(0, 59), st.integers(0, 59),
       st.sampled_from(["UTC", BERLIN, "America/New_York", "Australia/Lord_Howe"]))
def test_time_of_day_is_the_next_occurrence(now, hour, minute, second, name):
    tz = zone(name)
    due = parse_at(f"{hour:02}:{minute:02}:{second:02}", now, tz)
    assert now < due <= now + 86400 + 3600  # a DST day is up to 25 h long
    local = datetime.fromtimestamp(due, tz)
    if (local.hour, local.minute, local.second) != (hour, minute, second):  # a DST gap
        assert datetime.fromtimestamp(due - 3600, tz).utcoffset() != local.utcoffset()


# ---- LocalZone -------------------------------------------------------------------------------


@settings(deadline=None)
@given(st.integers(-2 * 10**9, 4 * 10**9), st.integers(0, 999_999),
       st.sampled_from([BERLIN, "America/New_York", "Australia/Lord_Howe", "UTC"]))
def test_local_zone_agrees_with_zoneinfo(seconds, micros, name):
    tz = zone(name)
    ts = seconds + micros / 1e6
    with local_zone(name):
        mine, theirs = datetime.fromtimestamp(ts, LOCAL), datetime.fromtimestamp(ts, tz)
        assert mine.replace(tzinfo=None) == theirs.replace(tzinfo=None)
        assert mine.fold == theirs.fold
        assert mine.utcoffset() == theirs.utcoffset()
        assert mine.tzname() == theirs.tzname()
        assert mine.timestamp() == theirs.timestamp()
        wall = theirs.replace(tzinfo=None)
        for fold in (0, 1):  # wall times to instants, gaps and folds included
            assert (wall.replace(tzinfo=LOCAL, fold=fold).timestamp()
                    == wall.replace(tzinfo=tz, fold=fold).timestamp())


def test_local_zone_edges():
    assert LOCAL.utcoffset(None) is None
    assert LOCAL.tzname(None) is None
    assert LOCAL.dst(None) is None
    assert repr(LOCAL) == "LOCAL"


# ---- Cron ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("short", "fields"), [
    ("@yearly", "0 0 1 1 *"), ("@annually", "0 0 1 1 *"), ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"), ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"), ("@DAILY", "0 0 * * *"), (" @hourly ", "0 * * * *"),
])
def test_cron_shorthands(short, fields):
    c = Cron(short, UTC)
    assert c.fields == fields
    assert str(c) == short
    assert [c.next_after(NOW + k * 3600) for k in range(30)] == \
        [Cron(fields, UTC).next_after(NOW + k * 3600) for k in range(30)]


@pytest.mark.parametrize(("expr", "after", "expected"), [
    ("*/15 * * * *", "2026-06-15T12:07:30", "2026-06-15T12:15:00"),
    ("*/15 * * * *", "2026-06-15T12:15:00", "2026-06-15T12:30:00"),  # strictly after
    ("*/15 * * * *", "2026-06-15T12:14:59.999", "2026-06-15T12:15:00"),
    ("* * * * *", "2026-06-15T12:07:59.999999", "2026-06-15T12:08:00"),
    ("0 8 * * MON-FRI", "2026-06-19T09:00:00", "2026-06-22T08:00:00"),  # Fri -> Mon
    ("@daily", "2026-12-31T23:59:59", "2027-01-01T00:00:00"),
    ("@yearly", "2026-06-15T00:00:00", "2027-01-01T00:00:00"),
    ("@weekly", "2026-06-15T00:00:00", "2026-06-21T00:00:00"),  # Sunday
    ("0 0 L * *", "2026-02-01T00:00:00", "2026-02-28T00:00:00"),
    ("0 0 29 2 *", "2026-01-01T00:00:00", "2028-02-29T00:00:00"),
    ("30 4 1,15 * 5", "2026-06-02T00:00:00", "2026-06-05T04:30:00"),  # dom OR dow
    ("30 4 * jan,jun sun", "2026-06-15T00:00:00", "2026-06-21T04:30:00"),
])
def test_cron_next_after_in_utc(expr, after, expected):
    assert Cron(expr, UTC).next_after(at(after + "+00:00")) == at(expected + "+00:00")


@pytest.mark.parametrize("expr", [
    "", "   ", "* * * *", "* * * * * *", "61 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *",
    "* * * * 8", "x y z a b", "@reboot", "@", "@every 5m", "0 0 31 2 *", "0 0 30 2 *",
    "*/0 * * * *", "1-0 * * * *", "1,,2 * * * *", "5- * * * *", "* * * * MON#6",
    "* * * * FOO", "L * * * *", "1/ * * * *", "? * * * *", "-1 * * * *",
])
def test_cron_rejects(expr):
    with pytest.raises(ValueError) as err:
        Cron(expr)
    msg = str(err.value)
    assert msg.startswith("invalid cron expression ")
    assert "\n" not in msg
    assert repr(expr) in msg


def test_cron_messages_name_the_problem():
    with pytest.raises(ValueError, match="bad minute field"):
        Cron("61 * * * *")
    with pytest.raises(ValueError, match="it has 6 fields; expected 5 fields"):
        Cron("0 * * * * *")
    with pytest.raises(ValueError, match="unknown shorthand '@reboot'"):
        Cron("@reboot")
    with pytest.raises(ValueError, match="bad day-of-month field"):
        Cron("0 0 31 2 *")
    with pytest.raises(ValueError, match="not a time zone"):
        Cron("@daily", "UTC")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Cron(None)  # type: ignore[arg-type]


@given(st.text(max_size=40))
def test_cron_only_ever_raises_value_error(text):
    try:
        c = Cron(text, UTC)
    except ValueError:
        return
    assert c.next_after(NOW) > NOW


def test_cron_equality_and_firings():
    assert Cron("@daily", UTC) == Cron("@daily", UTC)
    assert hash(Cron("@daily")) == hash(Cron("@daily"))
    assert Cron("@daily") != Cron("@daily", UTC)
    assert Cron("0 */6 * * *", UTC).firings(NOW, 3) == [
        at("2026-06-15T18:00:00+00:00"), at("2026-06-16T00:00:00+00:00"),
        at("2026-06-16T06:00:00+00:00")]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Cron("@daily").expr = "@hourly"  # type: ignore[misc]


def test_cron_in_the_system_zone():
    with local_zone("Asia/Kolkata"):
        assert Cron("0 8 * * *").next_after(NOW) == at("2026-06-16T08:00:00+05:30")
    with local_zone("America/Los_Angeles"):
        assert Cron("0 8 * * *").next_after(NOW) == at("2026-06-15T08:00:00-07:00")


def test_cron_dst_spring_forward():
    tz = zone(BERLIN)
    before = at("2026-03-28T12:00:00+01:00")
    # a fixed-time job in the skipped hour runs right after the gap (Debian cron, cronsim)
    assert Cron("30 2 * * *", tz).firings(before, 2) == [
        at("2026-03-29T03:00:00+02:00"), at("2026-03-30T02:30:00+02:00")]
    # hourly jobs follow real time: 23 firings on a 23-hour day
    day = Cron("0 * * * *", tz).firings(at("2026-03-28T23:59:59+01:00"), 24)
    assert sum(1 for t in day if t < at("2026-03-30T00:00:00+02:00")) == 23


def test_cron_dst_fall_back():
    tz = zone(BERLIN)
    before = at("2026-10-24T12:00:00+02:00")
    # a fixed-time job in the repeated hour runs once, at its first occurrence
    assert Cron("30 2 * * *", tz).firings(before, 2) == [
        at("2026-10-25T02:30:00+02:00"), at("2026-10-26T02:30:00+01:00")]
    # asked during the second 02:xx hour, the (past) first occurrence is skipped
    assert (Cron("45 2 * * *", tz).next_after(at("2026-10-25T02:30:00+01:00"))
            == at("2026-10-26T02:45:00+01:00"))
    # hourly jobs follow real time: 25 firings on a 25-hour day, both 02:00s included
    day = Cron("0 * * * *", tz).firings(at("2026-10-24T23:59:59+02:00"), 26)
    assert sum(1 for t in day if t < at("2026-10-26T00:00:00+01:00")) == 25
    assert at("2026-10-25T02:00:00+02:00") in day
    assert at("2026-10-25T02:00:00+01:00") in day


EXPRS = ["* * * * *", "*/7 * * * *", "0 * * * *", "30 2 * * *", "15 1-3 * * *", "0 0 * * 0",
         "0 12 1 * *", "0 9 * * MON-FRI", "0 0 L * *", "5 4 * * SUN#2", "59 23 31 12 *",
         "*/20 2 * * *", "0 */3 * * *", "@hourly", "@daily", "@monthly"]


@settings(deadline=None)
@given(st.sampled_from(EXPRS), st.floats(0, 4e9),
       st.sampled_from(["UTC", BERLIN, "America/New_York", "Australia/Lord_Howe"]))
def test_cron_next_after_is_strictly_increasing_and_matches_cronsim(expr, start, name):
    tz = zone(name)
    c = Cron(expr, tz)
    mine = [t := c.next_after(start)]
    for _ in range(14):
        mine.append(t := c.next_after(t))
    assert mine[0] > start
    assert all(a < b for a, b in itertools.pairwise(mine))
    it = CronSim(c.fields, datetime.fromtimestamp(math.floor(start), tz))
    theirs = []
    while len(theirs) < len(mine):
        t = next(it).timestamp()
        if t > start and (not theirs or t > theirs[-1]):
            theirs.append(t)
    assert mine == theirs


DST_ZONES = [BERLIN, "America/New_York", "Australia/Lord_Howe"]  # Lord Howe: 30-minute DST


def transitions(name: str, year: int = 2026) -> list[float]:
    """Instants in ``year`` where the zone's UTC offset changes (to the hour)."""
    try:
        tz = ZoneInfo(name)
    except ZoneInfoNotFoundError:
        return []
    t = datetime(year, 1, 1, tzinfo=UTC).timestamp()
    out, offset = [], datetime.fromtimestamp(t, tz).utcoffset()
    for _ in range(366 * 24):
        t += 3600
        now = datetime.fromtimestamp(t, tz).utcoffset()
        if now != offset:
            out.append(t)
            offset = now
    return out


@settings(deadline=None)
@given(st.sampled_from(EXPRS), st.sampled_from(DST_ZONES), st.data())
def test_cron_around_dst_changes_matches_cronsim(expr, name, data):
    shifts = transitions(name)
    assume(shifts)
    start = data.draw(st.sampled_from(shifts)) + data.draw(st.floats(-2 * 86400, 86400))
    test_cron_next_after_is_strictly_increasing_and_matches_cronsim.hypothesis.inner_test(
        expr, start, name)


def test_dst_transitions_are_found():
    assert len(transitions(BERLIN)) == 2
    assert at("2026-03-29T01:00:00+00:00") in transitions(BERLIN)


@settings(deadline=None, max_examples=30)
@given(st.sampled_from(EXPRS), st.floats(1.6e9, 2e9))
def test_cron_system_zone_matches_zoneinfo(expr, start):
    with local_zone(BERLIN):
        assert Cron(expr).firings(start, 5) == Cron(expr, zone(BERLIN)).firings(start, 5)


# ---- Schedule --------------------------------------------------------------------------------


def test_once():
    s = Schedule.once(NOW + 30)
    assert (s.kind, s.at, s.wall, s.repeats) == ("once", NOW + 30, True, False)
    assert s.first_due(NOW) == NOW + 30
    assert s.next_after(NOW) == NOW + 30
    assert s.next_after(NOW + 30) is None
    assert s.next_after(NOW + 31) is None
    assert s.first_due(NOW + 60) == NOW + 30  # overdue: start at once
    assert s.describe() == "once"
    assert not Schedule.once(5.0, wall=False).wall


def test_every_first_start_is_the_anchor():
    s = Schedule.every(60, NOW)
    assert s.repeats
    assert s.first_due(NOW) == NOW
    assert s.next_after(NOW - 1) == NOW
    assert s.next_after(NOW) == NOW + 60
    assert s.next_after(NOW + 59.999) == NOW + 60
    assert s.next_after(NOW + 60) == NOW + 120
    assert s.describe() == "every 1m"
    assert Schedule.every(5400, 0).describe() == "every 1h30m"


def test_every_late_run_does_not_shift_later_ones():
    s = Schedule.every(10, 1000.0)
    # the start due at 1010 ran late, at 1013.7: the next is still 1020, not 1023.7
    assert s.next_after(1013.7) == 1020
    # far behind (the daemon was busy or down): missed starts are skipped, not caught up
    assert s.next_after(1057.2) == 1060


@given(st.floats(1e6, 4e9), st.floats(0.01, 86400 * 7), st.integers(0, 10**6),
       st.floats(0.01, 0.99))
def test_every_never_drifts(anchor, interval, k, frac):
    s = Schedule.every(interval, anchor)
    now = anchor + k * interval + frac * interval
    assume(anchor + k * interval < now < anchor + (k + 1) * interval)
    assert s.next_after(now) == anchor + (k + 1) * interval


@given(st.floats(0, 4e9), st.floats(MIN_EVERY, 86400), st.floats(-1e6, 1e8))
def test_every_next_is_on_the_grid_and_within_one_interval(anchor, interval, offset):
    s = Schedule.every(interval, anchor)
    now = anchor + offset
    nxt = s.next_after(now)
    assert nxt > now
    if now < anchor:
        assert nxt == anchor
    else:
        k = round((nxt - anchor) / interval)
        assert nxt == anchor + k * interval
        assert anchor + (k - 1) * interval <= now
        assert nxt - now <= interval * (1 + 1e-9) + 1e-6


@given(st.floats(0, 4e9), st.floats(MIN_EVERY, 1.0), st.floats(0, 4e9))
def test_every_next_takes_no_loop_whatever_the_magnitudes(anchor, interval, now):
    # the 10 ms floor: at any epoch or boot-clock magnitude a step moves the time on, so
    # the next firing is found in a constant number of steps and is always later than now
    s = Schedule.every(interval, anchor)
    assert s.next_after(now) > now


def test_cron_schedule():
    s = Schedule.cron("*/15 * * * *", UTC)
    assert s.kind == "cron" and s.wall and s.repeats
    assert s.first_due(NOW) == at("2026-06-15T12:15:00+00:00")
    assert s.next_after(at("2026-06-15T12:15:00+00:00")) == at("2026-06-15T12:30:00+00:00")
    assert s.describe() == "cron */15 * * * *"
    assert Schedule.cron(Cron("@daily")).calendar == Cron("@daily")
    with pytest.raises(ValueError, match="invalid cron expression"):
        Schedule.cron("bad")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"kind": "weekly"}, "unknown schedule kind"),
    ({"kind": "once"}, "exactly at"),
    ({"kind": "once", "at": 1.0, "interval": 5.0}, "exactly at"),
    ({"kind": "every", "interval": 5.0}, "exactly anchor, interval"),
    ({"kind": "every", "interval": 0.0, "anchor": 1.0}, "from 10ms to 100 years"),
    ({"kind": "every", "interval": -5.0, "anchor": 1.0}, "from 10ms to 100 years"),
    ({"kind": "every", "interval": math.nan, "anchor": 1.0}, "from 10ms to 100 years"),
    ({"kind": "every", "interval": 0.009, "anchor": 1.0}, "from 10ms to 100 years, not 9ms"),
    ({"kind": "every", "interval": 1e-21, "anchor": 1.0}, "from 10ms"),
    ({"kind": "every", "interval": 5.0, "anchor": math.inf}, "anchor must be a finite"),
    ({"kind": "once", "at": math.nan}, "at must be a finite"),
    ({"kind": "cron"}, "exactly calendar"),
    ({"kind": "cron", "calendar": Cron("@daily"), "wall": False}, "wall clock"),
])
def test_schedule_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Schedule(**kwargs)


def test_schedule_is_frozen_and_comparable():
    s = Schedule.every(60, NOW)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.anchor = 0  # type: ignore[misc]
    assert s == Schedule.every(60.0, NOW)
    assert len({s, Schedule.every(60, NOW), Schedule.cron("@daily")}) == 2


@pytest.mark.parametrize("sched", [
    Schedule.once(NOW + 5), Schedule.once(123.5, wall=False), Schedule.every(1.5, NOW),
    Schedule.every(60, 10.0, wall=False), Schedule.cron("@daily"), Schedule.cron("0 8 * * *", UTC),
])
def test_schedule_dict_round_trip(sched):
    data = json.loads(json.dumps(sched.to_dict()))
    assert Schedule.from_dict(data) == sched


def test_schedule_dict_zoneinfo_and_errors():
    tz = zone(BERLIN)
    s = Schedule.cron("0 8 * * *", tz)
    assert s.to_dict()["tz"] == BERLIN
    assert Schedule.from_dict(s.to_dict()) == s
    odd = Schedule.cron("0 8 * * *", datetime.now(UTC).astimezone().tzinfo)
    with pytest.raises(ValueError, match="cannot name the time zone"):
        odd.to_dict()
    with pytest.raises(ValueError, match="unknown schedule kind"):
        Schedule.from_dict({"kind": "sometimes"})


# ---- RestartPolicy ---------------------------------------------------------------------------


# which ends each mode restarts (systemd's Restart=, and the seed's -r K as on-crash):
# success = exit 0, clean = SIGTERM/SIGINT/SIGHUP/SIGPIPE, killed = SIGKILL (the OOM
# killer's), failure = a non-zero exit or an unclean signal, unknown = not knowable
RESTARTED_BY = {
    "on-crash": {"failure", "unknown"},
    "on-failure": {"failure", "killed", "unknown"},
    "always": {"success", "clean", "killed", "failure", "unknown"},
    "never": set(),
}


@pytest.mark.parametrize(("mode", "kind", "restarts"), [
    (mode, kind, n) for mode in RESTARTED_BY
    for kind in ("success", "clean", "killed", "failure", "unknown") for n in (0, 2, 3)
])
def test_should_restart_table(mode, kind, restarts):
    policy = RestartPolicy(mode, limit=3)
    expected = kind in RESTARTED_BY[mode] and restarts < 3
    assert policy.should_restart(kind, restarts) is expected


def test_should_restart_unlimited_and_zero():
    assert RestartPolicy("always").should_restart("success", 10**9)
    assert RestartPolicy("on-failure").should_restart("failure", 10**9)
    assert not RestartPolicy("on-failure").should_restart("success", 0)
    assert not RestartPolicy("on-failure").should_restart("clean", 0)
    assert RestartPolicy("on-failure").should_restart("killed", 0)  # the OOM killer
    assert RestartPolicy("always").should_restart("killed", 0)
    assert not RestartPolicy("on-crash", 5).should_restart("killed", 0)
    assert not RestartPolicy("on-failure", 0).should_restart("failure", 0)
    with pytest.raises(ValueError, match="unknown end 'crashed'"):
        RestartPolicy().should_restart("crashed", 0)


@pytest.mark.parametrize(("restart", "times", "mode", "limit"), [
    (None, None, "on-crash", 0),  # the seed's default: no restart
    (None, 0, "on-crash", 0),
    (None, 3, "on-crash", 3),  # the seed's -r 3
    ("on-failure", None, "on-failure", None),
    ("always", None, "always", None),
    ("always", 5, "always", 5),
    ("on-failure", 2, "on-failure", 2),
    ("never", None, "never", None),
    ("never", 0, "never", 0),
])
def test_from_options(restart, times, mode, limit):
    p = RestartPolicy.from_options(restart, times)
    assert (p.mode, p.limit) == (mode, limit)
    assert p.delay == 0.0


def test_from_options_errors_and_backoff():
    with pytest.raises(ValueError, match="--restart never contradicts -r 2"):
        RestartPolicy.from_options("never", 2)
    with pytest.raises(ValueError, match="invalid restart mode 'sometimes'"):
        RestartPolicy.from_options("sometimes")
    with pytest.raises(ValueError, match="restart times must be an integer >= 0"):
        RestartPolicy.from_options(None, -1)
    with pytest.raises(ValueError, match="restart times must be an integer >= 0"):
        RestartPolicy.from_options(None, True)  # type: ignore[arg-type]
    p = RestartPolicy.from_options("always", None, delay=0.1, max_delay=5, backoff=3)
    assert (p.delay, p.max_delay, p.backoff) == (0.1, 5, 3)


def test_always_with_a_limit_counts_every_restart():
    p = RestartPolicy.from_options("always", 2)
    assert p.should_restart("success", 0)
    assert p.should_restart("failure", 1)
    assert not p.should_restart("success", 2)
    assert not p.should_restart("failure", 2)


def test_delay_for():
    p = RestartPolicy(delay=0.1, max_delay=1.0, backoff=2.0)
    assert [p.delay_for(n) for n in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert p.delay_for(10**6) == 1.0  # no OverflowError
    assert RestartPolicy().delay_for(50) == 0.0  # the default: restart at once
    assert RestartPolicy(delay=2, max_delay=2, backoff=1).delay_for(100) == 2
    with pytest.raises(ValueError):
        p.delay_for(-1)


@given(st.floats(0, 100), st.floats(0, 1000), st.floats(1, 10), st.integers(0, 3000))
def test_backoff_is_monotone_and_capped(delay, extra, factor, n):
    p = RestartPolicy(delay=delay, max_delay=delay + extra, backoff=factor)
    a, b = p.delay_for(n), p.delay_for(n + 1)
    assert delay <= a <= b <= p.max_delay or (delay == 0 and a == b == 0)
    assert p.delay_for(0) == min(delay, p.max_delay)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"mode": "sometimes"}, "invalid restart mode"),
    ({"limit": -1}, "restart limit must be an integer >= 0"),
    ({"limit": 1.5}, "restart limit must be an integer >= 0"),
    ({"delay": -1}, "restart delay must be >= 0"),
    ({"delay": math.nan}, "restart delay must be >= 0"),
    ({"delay": 5, "max_delay": 1}, "maximum restart delay must be >= the delay"),
    ({"max_delay": math.inf}, "maximum restart delay"),
    ({"backoff": 0.5}, "back-off factor must be >= 1"),
])
def test_restart_policy_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RestartPolicy(**kwargs)


def test_restart_policy_dict_round_trip():
    p = RestartPolicy("always", 4, 0.5, 30.0, 1.5)
    assert RestartPolicy.from_dict(json.loads(json.dumps(p.to_dict()))) == p


# ---- StartLimit ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "burst", "interval"), [
    ("5/10s", 5, 10.0), ("5/10", 5, 10.0), ("3/1m", 3, 60.0), (" 2/500ms ", 2, 0.5),
    ("1/1h30m", 1, 5400.0), ("10/2.5", 10, 2.5),
])
def test_start_limit_parse(text, burst, interval):
    assert StartLimit.parse(text) == StartLimit(burst, interval)


@pytest.mark.parametrize("text", ["5", "/10", "0/10s", "5/0s", "a/10", "5/10x", "-1/10", "5/",
                                  "", "5//10", "1.5/10", "5/-10"])
def test_start_limit_parse_rejects(text):
    with pytest.raises(ValueError) as err:
        StartLimit.parse(text)
    assert str(err.value).startswith(f"invalid start limit {text!r}: ")
    assert "\n" not in str(err.value)


def test_start_limit_validation():
    for burst, interval in ((0, 10), (True, 10), (1.0, 10), (3, 0), (3, math.nan)):
        with pytest.raises(ValueError):
            StartLimit(burst, interval)  # type: ignore[arg-type]


def test_start_limit_allows():
    limit = StartLimit(2, 10)
    assert limit.allows((100.0,), 100.0) == (True, (100.0,))
    assert limit.allows((95.0, 100.0), 100.0) == (True, (95.0, 100.0))
    assert limit.allows((91.0, 95.0, 100.0), 100.0) == (False, (91.0, 95.0, 100.0))
    # the window is the last 10 s: a failure exactly 10 s ago has left it
    assert limit.allows((90.0, 95.0, 100.0), 100.0) == (True, (95.0, 100.0))
    assert limit.allows([100.0, 50.0, 95.0], 100.0) == (True, (95.0, 100.0))  # sorted
    assert limit.allows((), 100.0) == (True, ())


@given(st.integers(1, 6), st.floats(0.1, 100),
       st.lists(st.floats(0, 1000), max_size=20), st.floats(0, 1100))
def test_start_limit_matches_its_definition(burst, interval, times, now):
    limit = StartLimit(burst, interval)
    ok, pruned = limit.allows(times, now)
    recent = sorted(t for t in times if now - interval < t)
    assert pruned == tuple(recent)
    assert ok is (len(recent) <= burst)
    assert limit.allows(pruned, now) == (ok, pruned)  # pruning loses nothing that counts


def test_start_limit_text():
    assert str(StartLimit(5, 10)) == "5/10s"
    assert str(StartLimit.parse("3/90")) == "3/1m30s"
    assert StartLimit(5, 10).reason() == (
        "it would start more than 5 times within 10s (start limit 5/10s; time spent "
        "waiting to restart not counted)")
    assert StartLimit(5, 10.0) == DEFAULT_START_LIMIT


def test_start_limit_drives_a_restart_loop():
    """How the daemon uses it: record the failure, ask, keep the pruned tuple."""
    policy, limit = RestartPolicy("always"), StartLimit(3, 10)
    failures: tuple[float, ...] = ()
    restarts, clock, ended = 0, 0.0, None
    while ended is None and restarts < 100:
        clock += 1.0  # fails one second after each start
        ok, failures = limit.allows((*failures, clock), clock)
        if not ok:
            ended = clock
        elif policy.should_restart("failure", restarts):
            restarts += 1
    assert (restarts, ended) == (3, 4.0)
    assert len(failures) == 4
