"""Tests of supervisor/timers.py: a heap of deadlines behind one timerfd, in a real selector.

The loop here is the daemon's: ``for key, mask in sel.select(): key.data(mask)``, bounded
by the shared ``TIMEOUT`` deadline; no test sleeps a fixed time. The wall-clock
(``CLOCK_REALTIME``, cancel-on-set) behaviour is tested with an injected clock and fake
timerfd, and against the kernel.
"""

from __future__ import annotations

import ctypes
import errno
import os
import random
import selectors
import time

import pytest
from timeouts import TIMEOUT

from supervisor.native import CLOCK_BOOTTIME, CLOCK_MONOTONIC, CLOCK_REALTIME
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


# ---- the wall clock: CLOCK_REALTIME with cancel-on-set ------------------------------------------


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeTimerFd:
    """Stands in for ``native.TimerFd``: an eventfd makes it selectable; ``expire`` and
    ``clock_set`` make it readable the way the kernel would."""

    def __init__(self) -> None:
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.arms: list[tuple[float, bool]] = []
        self.armed: float | None = None
        self.disarms = 0
        self.cancelled = False
        self.read_error: OSError | None = None

    def fileno(self) -> int:
        return self._efd

    def arm_at(self, deadline: float, *, cancel_on_set: bool = False) -> None:
        self.arms.append((deadline, cancel_on_set))
        self.armed = deadline
        self.cancelled = False  # timerfd_settime clears a pending cancel

    def disarm(self) -> None:
        self.disarms += 1
        self.armed = None
        self.cancelled = False

    def expire(self) -> None:
        os.eventfd_write(self._efd, 1)

    def clock_set(self) -> None:
        self.cancelled = True
        os.eventfd_write(self._efd, 1)

    def read(self) -> int:
        try:
            ticks = os.eventfd_read(self._efd)
        except BlockingIOError:
            ticks = 0
        if self.read_error is not None:
            raise self.read_error
        if self.cancelled:
            self.cancelled = False
            raise OSError(errno.ECANCELED, os.strerror(errno.ECANCELED))
        if ticks:
            self.armed = None
        return ticks

    def close(self) -> None:
        if self._efd >= 0:
            os.close(self._efd)
            self._efd = -1

    @property
    def closed(self) -> bool:
        return self._efd < 0


@pytest.fixture
def clock():
    return FakeClock(1000.0)


@pytest.fixture
def fake():
    fd = FakeTimerFd()
    yield fd
    fd.close()


@pytest.fixture
def wall(sel, clock, fake):
    t = Timers(sel, CLOCK_REALTIME, cancel_on_set=True, now=clock, fd=fake)
    yield t
    t.close()


class MinuteJob:
    """An owner with one calendar deadline, "at the start of every minute", that it
    recomputes from the current time when the clock is set (as the daemon does for cron)."""

    def __init__(self, timers: Timers, log: list) -> None:
        self.timers, self.log = timers, log
        self.handle = None
        timers.on_clock_change = self.recompute
        self.schedule()

    def next_minute(self) -> float:
        return (self.timers.now() // 60 + 1) * 60

    def schedule(self) -> None:
        due = self.next_minute()
        self.handle = self.timers.call_at(due, lambda: self.fire(due))

    def fire(self, due: float) -> None:
        self.log.append(("minute", due, self.timers.now()))
        self.schedule()

    def recompute(self) -> None:
        self.log.append(("clock-change", self.timers.now()))
        self.timers.cancel(self.handle)
        self.schedule()


def test_cancel_on_set_needs_the_realtime_clock(sel):
    fds = open_fds()
    for clk in (CLOCK_BOOTTIME, CLOCK_MONOTONIC):
        with pytest.raises(ValueError, match="CLOCK_REALTIME"):
            Timers(sel, clk, cancel_on_set=True)
    assert open_fds() == fds
    assert len(sel.get_map()) == 0


def test_injected_clock_and_fd_are_used(sel, clock, fake, wall):
    assert wall.now() == 1000.0
    clock.t = 1234.5
    assert wall.now() == 1234.5
    assert sel.get_key(fake).data == wall._on_ready
    h = wall.call_at(2000.0, lambda: None)
    assert fake.arms == [(2000.0, True)]  # ABSTIME with CANCEL_ON_SET
    assert wall.armed == 2000.0
    wall.cancel(h)
    assert fake.disarms == 1
    assert wall.armed is None


def test_clock_set_back_recomputes_and_rearms_from_the_new_time(sel, clock, fake, wall):
    log: list = []
    job = MinuteJob(wall, log)
    fired_at: list[float] = []
    wall.call_at(1500.0, lambda: fired_at.append(clock.t))  # an absolute --at time: kept
    assert fake.armed == 1020.0
    clock.t = 100.0  # someone ran `date -s`: a day... well, 900 s back
    fake.clock_set()
    run_until(sel, lambda: log)
    assert log == [("clock-change", 100.0)]
    assert wall.clock_changes == 1
    assert fake.armed == wall.armed == 120.0  # the next minute after the new time
    assert fake.arms[-1] == (120.0, True)
    assert job.handle.due == 120.0
    assert fired_at == []
    assert len(wall) == 2


def test_clock_set_forward_recomputes_then_fires_what_is_due(sel, clock, fake, wall):
    log: list = []
    MinuteJob(wall, log)
    wall.call_at(1500.0, lambda: log.append(("at", clock.t)))
    clock.t = 2000.0  # jumped past the --at deadline and the minute deadline
    fake.clock_set()
    run_until(sel, lambda: len(log) == 2)
    # the callback runs first (the owner drops the stale minute deadline and recomputes it
    # from 2000), then what is due by the new time fires, then the fd is re-armed
    assert log == [("clock-change", 2000.0), ("at", 2000.0)]
    assert fake.armed == wall.armed == 2040.0
    assert len(wall) == 1
    clock.t = 2040.0
    fake.expire()
    run_until(sel, lambda: len(log) == 3)
    assert log[2] == ("minute", 2040.0, 2040.0)
    assert fake.armed == 2100.0


def test_clock_change_rearms_even_when_nothing_moved(sel, clock, fake, wall):
    # The kernel forgets a cancelled timer: even an unchanged earliest deadline is armed anew.
    changes = []
    wall.on_clock_change = lambda: changes.append(clock.t)
    wall.call_at(5000.0, lambda: None)
    assert fake.arms == [(5000.0, True)]
    clock.t = 1003.0
    fake.clock_set()
    run_until(sel, lambda: changes)
    assert fake.arms == [(5000.0, True), (5000.0, True)]
    assert wall.armed == 5000.0
    assert len(wall) == 1


def test_clock_change_without_a_callback_still_fires_and_rearms(sel, clock, fake, wall):
    fired = []
    wall.call_at(1100.0, lambda: fired.append("a"))
    wall.call_at(1300.0, lambda: fired.append("b"))
    clock.t = 1200.0
    fake.clock_set()
    run_until(sel, lambda: fired)
    assert fired == ["a"]
    assert wall.clock_changes == 1
    assert fake.armed == wall.armed == 1300.0


def test_clock_change_with_nothing_scheduled(sel, clock, fake, wall):
    changes = []
    wall.on_clock_change = lambda: changes.append(1)
    fake.clock_set()
    run_until(sel, lambda: changes)
    assert wall.armed is None
    assert fake.arms == []
    assert len(wall) == 0


def test_callback_may_schedule_earlier_and_cancel_everything(sel, clock, fake, wall):
    fired = []
    handles = [wall.call_at(1000.0 + 100 * i, lambda i=i: fired.append(i)) for i in range(1, 6)]

    def recompute():
        for h in handles:
            wall.cancel(h)
        wall.call_at(clock.t - 1, lambda: fired.append("now"))
        wall.call_at(clock.t + 7, lambda: fired.append("soon"))

    wall.on_clock_change = recompute
    clock.t = 1250.0
    fake.clock_set()
    run_until(sel, lambda: fired)
    assert fired == ["now"]
    assert fake.armed == wall.armed == 1257.0
    assert len(wall) == 1


def test_other_read_errors_propagate(sel, clock, fake, wall):
    wall.call_at(1001.0, lambda: None)
    fake.read_error = OSError(errno.EIO, "I/O error")
    fake.expire()
    with pytest.raises(OSError) as err:
        run_until(sel, lambda: False)
    assert err.value.errno == errno.EIO


@pytest.mark.parametrize("seed", range(5))
def test_random_clock_steps_keep_the_fd_at_the_earliest_deadline(sel, clock, fake, wall,
                                                                seed):
    # Random clock steps (both ways) and expiries. After each loop turn: nothing due is left
    # unfired, nothing fired early, the fd is armed at the earliest live deadline, and the
    # owner's calendar deadline is the next minute as seen from the current time.
    rng = random.Random(seed)
    log: list = []
    job = MinuteJob(wall, log)
    fixed = {}
    for i in range(30):
        due = 1000.0 + rng.uniform(0, 5000)
        fixed[i] = wall.call_at(due, lambda i=i, due=due: log.append(("fixed", i, due, clock.t)))
    for _ in range(60):
        if rng.random() < 0.5:
            clock.t += rng.uniform(-3000, 3000)
            fake.clock_set()
        else:
            clock.t = max(clock.t, wall.armed)
            fake.expire()
        events = sel.select(TIMEOUT)
        assert len(events) == 1
        for key, mask in events:
            key.data(mask)
        live = [h.due for h in wall._heap if not h.cancelled]
        assert wall.armed == fake.armed == min(live)
        assert fake.arms[-1][1] is True
        assert clock.t < job.handle.due <= (clock.t // 60 + 1) * 60
        assert all(h.due > clock.t for h in fixed.values() if not h.cancelled)
    for entry in log:
        if entry[0] == "fixed":
            _, i, due, fired_at = entry
            assert fired_at >= due
            assert fixed[i].cancelled
        else:
            assert entry[0] in ("minute", "clock-change")
    assert wall.clock_changes == sum(1 for e in log if e[0] == "clock-change")


def test_realtime_timer_fires_at_a_wall_clock_deadline(sel):
    timers = Timers(sel, CLOCK_REALTIME, cancel_on_set=True)
    try:
        assert timers.now() == pytest.approx(time.time(), abs=1)
        fired: list[float] = []
        due = time.time() + 1
        timers.call_at(due, lambda: fired.append(time.time()))
        left = timers._fd.armed_at()  # what is left till the deadline, seen from now
        assert due - time.time() - 0.01 <= left <= 1
        run_until(sel, lambda: fired)
        assert fired[0] >= due
        assert timers.clock_changes == 0
        assert timers._fd.armed_at() is None
    finally:
        timers.close()


# struct timex (64-bit Linux) for clock_adjtime(CLOCK_REALTIME, ADJ_SETOFFSET|ADJ_NANO)
class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long),
                ("status", ctypes.c_int), ("constant", ctypes.c_long),
                ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("time", _Timeval), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long),
                ("jitter", ctypes.c_long), ("shift", ctypes.c_int), ("stabil", ctypes.c_long),
                ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
                ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
                ("_pad", ctypes.c_int * 11)]


def step_wall_clock_one_nanosecond() -> None:
    """Step CLOCK_REALTIME forward by 1 ns: a real "clock was set" event for the kernel
    (every CANCEL_ON_SET timerfd is cancelled) that moves the time by nothing anyone can
    notice. Skips the test without CAP_SYS_TIME or on an unknown ABI."""
    if ctypes.sizeof(ctypes.c_long) != 8 or ctypes.sizeof(_Timex) != 208:
        pytest.skip("struct timex layout is only written down for 64-bit Linux")
    tx = _Timex(modes=0x0100 | 0x2000)  # ADJ_SETOFFSET | ADJ_NANO
    tx.time.tv_sec, tx.time.tv_usec = 0, 1  # with ADJ_NANO, tv_usec is nanoseconds
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.clock_adjtime(time.CLOCK_REALTIME, ctypes.byref(tx)) < 0:
        err = ctypes.get_errno()
        pytest.skip(f"cannot step the wall clock here: {os.strerror(err)}")


def test_a_real_clock_step_calls_back_and_rearms(sel):
    changes: list[float] = []
    fired: list[str] = []
    timers = Timers(sel, CLOCK_REALTIME, cancel_on_set=True,
                    on_clock_change=lambda: changes.append(time.time()))
    try:
        far = time.time() + 3600
        timers.call_at(far, lambda: fired.append("far"))
        before = time.time()
        step_wall_clock_one_nanosecond()
        run_until(sel, lambda: changes)
        assert changes[0] - before < TIMEOUT  # no jump to speak of
        assert timers.clock_changes == 1
        assert fired == []
        assert timers.armed == far
        left = timers._fd.armed_at()  # re-armed in the kernel, still with cancel-on-set
        assert left == pytest.approx(3600, abs=TIMEOUT)
        step_wall_clock_one_nanosecond()
        run_until(sel, lambda: len(changes) == 2)
        assert timers.clock_changes == 2
        near = time.time() + 0.05
        timers.call_at(near, lambda: fired.append("near"))
        run_until(sel, lambda: fired)
        assert fired == ["near"]
        assert timers.armed == far
    finally:
        timers.close()


def test_ten_thousand_deadlines_on_each_clock_use_one_fd_per_clock(sel, timers):
    fds = open_fds()
    wall = Timers(sel, CLOCK_REALTIME, cancel_on_set=True)
    try:
        assert open_fds() == fds + 1
        assert len(sel.get_map()) == 2
        rng = random.Random(2)
        fired: dict[str, list[int]] = {"boot": [], "wall": []}
        dues: dict[str, list[float]] = {"boot": [], "wall": []}
        for name, t in (("boot", timers), ("wall", wall)):
            t0 = t.now()
            for i in range(10_000):
                due = t0 + rng.uniform(0.01, 0.3)
                dues[name].append(due)

                def cb(name=name, i=i, due=due, t=t):
                    assert t.now() >= due
                    fired[name].append(i)

                t.call_at(due, cb)
        assert open_fds() == fds + 1
        assert len(timers) == len(wall) == 10_000
        run_until(sel, lambda: len(fired["boot"]) == len(fired["wall"]) == 10_000)
        for name in ("boot", "wall"):
            assert fired[name] == sorted(range(10_000), key=lambda i, d=dues[name]: (d[i], i))
        assert open_fds() == fds + 1
        assert wall.armed is None and timers.armed is None
    finally:
        wall.close()
    assert open_fds() == fds


# ---- a callback that fails ---------------------------------------------------------------------


def test_a_failing_callback_leaves_the_fd_armed_for_the_deadlines_left(sel, timers):
    # without on_error the error propagates (to the loop's boundary), but only after the
    # fd was armed again at the next deadline: nothing left behind is lost
    fired = []
    t0 = timers.now()

    def boom():
        raise RuntimeError("boom")

    timers.call_at(t0 + 0.01, boom)
    later = t0 + 0.05
    timers.call_at(later, lambda: fired.append("later"))
    with pytest.raises(RuntimeError):
        run_until(sel, lambda: False)
    assert armed_due(timers) == pytest.approx(later, abs=0.005)
    run_until(sel, lambda: fired)
    assert fired == ["later"]


def test_on_error_contains_each_failure_and_the_rest_fire(sel):
    errors: list[BaseException] = []
    timers = Timers(sel, on_error=errors.append)
    try:
        fired = []
        t0 = timers.now()
        timers.call_at(t0 + 0.01, lambda: 1 / 0)
        timers.call_at(t0 + 0.01, lambda: fired.append("same turn"))
        timers.call_at(t0 + 0.03, lambda: fired.append("later"))
        run_until(sel, lambda: len(fired) == 2)
        assert fired == ["same turn", "later"]
        assert [type(e) for e in errors] == [ZeroDivisionError]
        assert timers._fd.armed_at() is None and len(timers) == 0
    finally:
        timers.close()
