"""Deadlines: a heap of them behind one timerfd per clock.

The timerfd is armed at the earliest live deadline only, so 10,000 pending deadlines cost
one fd and the loop wakes exactly when something is due (never when nothing is).
"""

from __future__ import annotations

import heapq
import itertools
import selectors
import time
from collections.abc import Callable

from supervisor.native import CLOCK_BOOTTIME, TimerFd


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
        return self.callback is None


class Timers:
    """Call functions at absolute deadlines on one clock (default ``CLOCK_BOOTTIME``)."""

    def __init__(self, sel: selectors.BaseSelector, clock: int = CLOCK_BOOTTIME) -> None:
        self.clock = clock
        self._fd = TimerFd(clock)
        self._heap: list[Handle] = []
        self._seq = itertools.count()
        self._armed: float | None = None
        self._cancelled = 0
        self._sel = sel
        sel.register(self._fd, selectors.EVENT_READ, self._on_ready)

    def now(self) -> float:
        return time.clock_gettime(self.clock)

    def __len__(self) -> int:
        return len(self._heap) - self._cancelled

    def call_at(self, due: float, callback: Callable[[], None]) -> Handle:
        handle = Handle(due, next(self._seq), callback)
        heapq.heappush(self._heap, handle)
        if self._armed is None or due < self._armed:
            self._arm(due)
        return handle

    def cancel(self, handle: Handle) -> None:
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
        self._fd.arm_at(due)
        self._armed = due

    def _rearm(self) -> None:
        if self._heap:
            if self._armed != self._heap[0].due:
                self._arm(self._heap[0].due)
        elif self._armed is not None:
            self._fd.disarm()
            self._armed = None

    def _on_ready(self, mask: int) -> None:
        self._fd.read()
        self._armed = None
        now = self.now()
        while self._heap and self._heap[0].due <= now:
            handle = heapq.heappop(self._heap)
            if handle.cancelled:
                self._cancelled -= 1
                continue
            callback, handle.callback = handle.callback, None
            callback()
        self._drop_cancelled_head()
        self._rearm()

    def close(self) -> None:
        self._sel.unregister(self._fd)
        self._fd.close()
