"""Deadlines: a heap of them behind one timerfd per clock.

The timerfd is armed at the earliest live deadline only, so 10,000 pending deadlines cost
one fd and the loop wakes exactly when something is due (never when nothing is).

A daemon keeps one :class:`Timers` per clock:

- ``CLOCK_BOOTTIME`` (the default) for delays, restart back-off and grace periods: it
  counts suspend and is never set, so "in 30 s" stays 30 s.
- ``CLOCK_REALTIME`` with ``cancel_on_set=True`` for wall-clock schedules (``--at``, cron):
  the fd is armed with ``TFD_TIMER_ABSTIME|TFD_TIMER_CANCEL_ON_SET``, so when the wall
  clock is set (date, NTP step, resume with a stepped RTC) its ``read()`` fails with
  ``ECANCELED``. Then :class:`Timers` calls ``on_clock_change()`` — where the owner
  cancels and recomputes its calendar deadlines from the new time — fires whatever is
  due by then, and re-arms. (Time zone and DST changes are not clock steps: epoch
  deadlines stay right across them.)
"""

from __future__ import annotations

import errno
import heapq
import itertools
import selectors
import time
from collections.abc import Callable
from typing import Protocol

from supervisor.native import CLOCK_BOOTTIME, CLOCK_REALTIME, TimerFd


class TimerFdLike(Protocol):
    """What :class:`Timers` needs of its fd (:class:`supervisor.native.TimerFd`; tests
    inject a fake)."""

    def fileno(self) -> int: ...
    def arm_at(self, deadline: float, *, cancel_on_set: bool = False) -> None: ...
    def disarm(self) -> None: ...
    def read(self) -> int: ...
    def close(self) -> None: ...


class Handle:
    __slots__ = ("callback", "due", "seq")

    def __init__(self, due: float, seq: int, callback: Callable[[], None] | None) -> None:
        self.due = due
        self.seq = seq
        self.callback = callback

    def __lt__(self, other: Handle) -> bool:
        return (self.due, self.seq) < (other.due, other.seq)

    @property
    def cancelled(self) -> bool:
        """True once cancelled or fired (a handle fires at most once)."""
        return self.callback is None


class Timers:
    """Call functions at absolute deadlines on one clock, behind one timerfd.

    ``sel``: the loop's selector; the fd is registered with ``self._on_ready`` as its data
    (the loop calls ``key.data(mask)``).
    ``clock``: ``CLOCK_BOOTTIME`` (default), ``CLOCK_MONOTONIC`` or ``CLOCK_REALTIME``.
    ``cancel_on_set``: arm with ``TFD_TIMER_CANCEL_ON_SET`` (``CLOCK_REALTIME`` only) and
    handle ``ECANCELED``: ``on_clock_change()`` (also assignable later as an attribute)
    runs first, then every deadline due by the new time fires, then the fd is re-armed at
    the earliest deadline left. ``clock_changes`` counts these.
    ``now``: reads the clock (default ``time.clock_gettime(clock)``); ``fd``: the timerfd
    (default ``TimerFd(clock)``; :class:`Timers` owns and closes it). Tests inject both.
    ``on_error(exc)``: called with whatever a callback raised; the other due callbacks
    still run and the fd is re-armed whatever happens (without ``on_error`` the first
    error propagates, after the re-arm).

    Callbacks run in deadline order (ties: in scheduling order), never before their
    deadline; they may schedule and cancel freely.
    """

    def __init__(self, sel: selectors.BaseSelector, clock: int = CLOCK_BOOTTIME, *,
                 cancel_on_set: bool = False,
                 on_clock_change: Callable[[], None] | None = None,
                 now: Callable[[], float] | None = None,
                 fd: TimerFdLike | None = None,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        if cancel_on_set and clock != CLOCK_REALTIME:
            raise ValueError("cancel_on_set needs CLOCK_REALTIME (other clocks are never set)")
        self.clock = clock
        self.cancel_on_set = cancel_on_set
        self.on_clock_change = on_clock_change
        self.on_error = on_error
        self.clock_changes = 0
        self._now = now if now is not None else (lambda: time.clock_gettime(clock))
        self._fd = fd if fd is not None else TimerFd(clock)
        self._heap: list[Handle] = []
        self._seq = itertools.count()
        self._armed: float | None = None
        self._cancelled = 0
        self._sel = sel
        sel.register(self._fd, selectors.EVENT_READ, self._on_ready)

    def now(self) -> float:
        """The current time on this instance's clock, in seconds."""
        return self._now()

    def __len__(self) -> int:
        """Live (not cancelled, not fired) deadlines."""
        return len(self._heap) - self._cancelled

    @property
    def armed(self) -> float | None:
        """The deadline the fd is armed at (the earliest live one), or None when disarmed."""
        return self._armed

    def call_at(self, due: float, callback: Callable[[], None]) -> Handle:
        """Call ``callback()`` once at ``due`` (seconds on this clock; a past ``due`` fires
        on the next loop turn)."""
        handle = Handle(due, next(self._seq), callback)
        heapq.heappush(self._heap, handle)
        if self._armed is None or due < self._armed:
            self._arm(due)
        return handle

    def cancel(self, handle: Handle) -> None:
        """Forget ``handle``; harmless when it was cancelled or has fired already."""
        if handle.cancelled:
            return
        handle.callback = None
        self._cancelled += 1
        if self._heap and self._heap[0] is handle:
            self._drop_cancelled_head()
            self._rearm()
        elif self._cancelled > 64 and self._cancelled * 2 > len(self._heap):
            self._heap = [h for h in self._heap if not h.cancelled]
            heapq.heapify(self._heap)
            self._cancelled = 0

    def _drop_cancelled_head(self) -> None:
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)
            self._cancelled -= 1

    def _arm(self, due: float) -> None:
        self._fd.arm_at(due, cancel_on_set=self.cancel_on_set)
        self._armed = due

    def _rearm(self) -> None:
        if self._heap:
            if self._armed != self._heap[0].due:
                self._arm(self._heap[0].due)
        elif self._armed is not None:
            self._fd.disarm()
            self._armed = None

    def _on_ready(self, mask: int) -> None:
        try:
            try:
                self._fd.read()
            except OSError as e:
                if e.errno != errno.ECANCELED:
                    self._armed = None  # not knowable: arm afresh below
                    raise
                self._clock_changed()
            else:
                self._armed = None  # expired (one-shot), or a spurious wake-up: arm afresh
            self._fire_due()
        finally:
            # whatever failed above, deadlines left must keep the fd armed
            self._drop_cancelled_head()
            self._rearm()

    def _clock_changed(self) -> None:
        # The kernel dropped the timer's state: whatever it was armed at, arm it again.
        self._armed = None
        self.clock_changes += 1
        if self.on_clock_change is not None:
            self.on_clock_change()

    def _fire_due(self) -> None:
        now = self.now()
        while self._heap and self._heap[0].due <= now:
            handle = heapq.heappop(self._heap)
            if handle.cancelled:
                self._cancelled -= 1
                continue
            callback, handle.callback = handle.callback, None
            if self.on_error is None:
                callback()
                continue
            try:
                callback()
            except Exception as exc:  # one failing callback must not stop the others
                self.on_error(exc)
        self._drop_cancelled_head()

    def close(self) -> None:
        """Unregister and close the fd; pending deadlines never fire."""
        self._sel.unregister(self._fd)
        self._fd.close()
