"""Tests of supervisor/timers.py: a heap of deadlines behind one timerfd, in a real selector.

The loop here is the daemon's: ``for key, mask in sel.select(): key.data(mask)``, bounded
by the shared ``TIMEOUT`` deadline; no test sleeps a fixed time.
"""

from __future__ import annotations

import os
import random
import selectors
import time

import pytest
from timeouts import TIMEOUT

from supervisor.native import CLOCK_MONOTONIC
from supervisor.timers import Timers


@pytest.fixture
def sel():
    with selectors.DefaultSelector() as s:
        yield s


@pytest.fixture
def timers(sel):
    t = Timers(sel)
    yield t
    t.close()


def run_until(sel: selectors.BaseSelector, done, timeout: float = TIMEOUT) -> int:
    """Serve ``sel`` until ``done()``; fail at the deadline. Returns the number of wake-ups."""
    deadline = time.monotonic() + timeout
    wakeups = 0
    while not done():
        left = deadline - time.monotonic()
        assert left > 0, "timed out waiting for timers"
        for key, mask in sel.select(left):
            wakeups += 1
            key.data(mask)
    return wakeups


def armed_due(timers: Timers) -> float | None:
    """Absolute time the timerfd is armed at (its clock), or None when disarmed."""
    left = timers._fd.armed_at()
    return None if left is None else timers.now() + left


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# ---- order and timing --------------------------------------------------------------------------


def test_callbacks_fire_in_deadline_order(sel, timers):
    fired: list[str] = []
    t0 = timers.now()
    offsets = {"e": 0.05, "a": 0.01, "c": 0.03, "b": 0.02, "d": 0.04}
    for label, off in offsets.items():
        timers.call_at(t0 + off, lambda label=label: fired.append(label))
    assert len(timers) == 5
    run_until(sel, lambda: len(fired) == 5)
    assert fired == ["a", "b", "c", "d", "e"]
    assert len(timers) == 0
    assert timers._fd.armed_at() is None


def test_equal_deadlines_fire_in_scheduling_order(sel, timers):
    fired: list[int] = []
    due = timers.now() + 0.02
    for i in range(20):
        timers.call_at(due, lambda i=i: fired.append(i))
    run_until(sel, lambda: len(fired) == 20)
    assert fired == list(range(20))


def test_callbacks_never_fire_before_their_deadline(sel, timers):
    late: list[float] = []
    t0 = timers.now()
    rng = random.Random(7)
    for _ in range(200):
        due = t0 + rng.uniform(0, 0.1)
        timers.call_at(due, lambda due=due: late.append(timers.now() - due))
    run_until(sel, lambda: len(late) == 200)
    assert min(late) >= 0


def test_past_deadline_fires_on_next_loop_turn(sel, timers):
    fired = []
    timers.call_at(timers.now() - 5, lambda: fired.append(1))
    run_until(sel, lambda: fired)
    assert fired == [1]


def test_spurious_wakeup_fires_nothing(timers):
    fired = []
    due = timers.now() + 60
    timers.call_at(due, lambda: fired.append(1))
    timers._on_ready(selectors.EVENT_READ)  # readiness with nothing expired
    assert fired == []
    assert len(timers) == 1
    assert armed_due(timers) == pytest.approx(due, abs=1)


def test_wakes_once_per_distinct_deadline_batch(sel, timers):
    fired = []
    due = timers.now() + 0.02
    for _ in range(100):
        timers.call_at(due, lambda: fired.append(1))
    wakeups = run_until(sel, lambda: len(fired) == 100)
    assert wakeups == 1


# ---- cancel ----------------------------------------------------------------------------------


def test_cancel_prevents_the_callback(sel, timers):
    fired: list[str] = []
    t0 = timers.now()
    timers.call_at(t0 + 0.01, lambda: fired.append("a"))
    b = timers.call_at(t0 + 0.02, lambda: fired.append("b"))
    timers.call_at(t0 + 0.03, lambda: fired.append("c"))
    timers.cancel(b)
    assert b.cancelled
    assert len(timers) == 2
    run_until(sel, lambda: len(fired) == 2)
    assert fired == ["a", "c"]
    assert len(timers) == 0


def test_cancel_twice_and_after_firing_is_harmless(sel, timers):
    fired = []
    h = timers.call_at(timers.now(), lambda: fired.append(1))
    run_until(sel, lambda: fired)
    timers.cancel(h)  # already fired
    timers.cancel(h)
    assert len(timers) == 0
    g = timers.call_at(timers.now() + 60, lambda: fired.append(2))
    timers.cancel(g)
    timers.cancel(g)
    assert len(timers) == 0
    assert timers._fd.armed_at() is None


def test_cancelling_the_head_rearms_to_the_next(timers):
    t0 = timers.now()
    a = timers.call_at(t0 + 100, lambda: None)
    b = timers.call_at(t0 + 200, lambda: None)
    assert armed_due(timers) == pytest.approx(t0 + 100, abs=1)
    timers.cancel(a)
    assert armed_due(timers) == pytest.approx(t0 + 200, abs=1)
    timers.cancel(b)
    assert timers._fd.armed_at() is None
    assert len(timers) == 0


def test_earlier_deadline_rearms(timers):
    t0 = timers.now()
    timers.call_at(t0 + 200, lambda: None)
    assert armed_due(timers) == pytest.approx(t0 + 200, abs=1)
    timers.call_at(t0 + 100, lambda: None)
    assert armed_due(timers) == pytest.approx(t0 + 100, abs=1)
    timers.call_at(t0 + 150, lambda: None)  # later than the head: no change
    assert armed_due(timers) == pytest.approx(t0 + 100, abs=1)


@pytest.mark.parametrize("seed", range(5))
def test_fd_always_armed_at_earliest_live_deadline(timers, seed):
    # 300 deadlines 10 s apart, cancelled in random order: after every cancel the timerfd
    # is armed at the earliest one left (this crosses the heap compaction threshold too),
    # and once all are cancelled it is disarmed.
    rng = random.Random(seed)
    t0 = timers.now()
    handles = {}
    for i in rng.sample(range(300), 300):
        handles[i] = timers.call_at(t0 + 1000 + 10 * i, lambda: None)
    live = set(handles)
    for i in rng.sample(sorted(handles), 300):
        timers.cancel(handles[i])
        live.discard(i)
        assert len(timers) == len(live)
        if live:
            assert armed_due(timers) == pytest.approx(t0 + 1000 + 10 * min(live), abs=1)
    assert timers._fd.armed_at() is None


def test_cancel_from_inside_a_callback(sel, timers):
    fired: list[str] = []
    due = timers.now() + 0.02
    victim = None

    def first():
        fired.append("first")
        timers.cancel(victim)

    timers.call_at(due, first)
    victim = timers.call_at(due, lambda: fired.append("victim"))
    timers.call_at(due + 0.01, lambda: fired.append("last"))
    run_until(sel, lambda: "last" in fired)
    assert fired == ["first", "last"]
    assert len(timers) == 0


def test_schedule_from_inside_a_callback(sel, timers):
    fired: list[str] = []

    def first():
        fired.append("first")
        timers.call_at(timers.now() - 1, lambda: fired.append("past"))
        timers.call_at(timers.now() + 0.02, lambda: fired.append("later"))

    timers.call_at(timers.now(), first)
    run_until(sel, lambda: "later" in fired)
    assert fired == ["first", "past", "later"]
    assert timers._fd.armed_at() is None


# ---- scale -----------------------------------------------------------------------------------


def test_ten_thousand_deadlines_use_one_fd(sel, timers):
    fds = open_fds()
    assert len(sel.get_map()) == 1
    fired: list[int] = []
    late: list[float] = []
    t0 = timers.now()
    rng = random.Random(1)
    dues = [t0 + rng.uniform(0.01, 0.3) for _ in range(10_000)]
    handles = []
    for i, due in enumerate(dues):
        def cb(i=i, due=due):
            fired.append(i)
            late.append(timers.now() - due)
        handles.append(timers.call_at(due, cb))
    assert open_fds() == fds
    assert len(sel.get_map()) == 1
    assert len(timers) == 10_000
    cancelled = set(range(0, 10_000, 3))
    for i in cancelled:
        timers.cancel(handles[i])
    assert len(timers) == 10_000 - len(cancelled)
    run_until(sel, lambda: len(fired) == 10_000 - len(cancelled))
    assert not cancelled & set(fired)
    assert fired == sorted(fired, key=lambda i: (dues[i], i))
    assert min(late) >= 0
    assert open_fds() == fds
    assert len(timers) == 0
    assert timers._fd.armed_at() is None


# ---- clocks and closing ------------------------------------------------------------------------


def test_monotonic_clock_timers(sel):
    timers = Timers(sel, CLOCK_MONOTONIC)
    try:
        assert timers.clock == CLOCK_MONOTONIC
        assert timers.now() == pytest.approx(time.clock_gettime(time.CLOCK_MONOTONIC), abs=1)
        fired = []
        due = timers.now() + 0.02
        timers.call_at(due, lambda: fired.append(time.clock_gettime(time.CLOCK_MONOTONIC)))
        run_until(sel, lambda: fired)
        assert fired[0] >= due
    finally:
        timers.close()


def test_close_unregisters_and_closes_the_fd(sel):
    timers = Timers(sel)
    timers.call_at(timers.now() + 60, lambda: None)
    fd = timers._fd.fileno()
    assert fd in {key.fd for key in sel.get_map().values()}
    timers.close()
    assert len(sel.get_map()) == 0
    assert timers._fd.closed
