"""Tests of the cffi signalfd/timerfd wrappers (supervisor/native.py).

Readiness is always awaited with a selector and the shared ``TIMEOUT`` deadline; no test
sleeps a fixed time. Signals are sent to this thread only (``pthread_kill``), blocked
first, and the old mask is restored afterwards (with anything still pending drained).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import os
import selectors
import signal
import threading
import time

import pytest
from timeouts import TIMEOUT

from supervisor import native
from supervisor.native import (
    CLOCK_BOOTTIME,
    CLOCK_MONOTONIC,
    CLOCK_REALTIME,
    SignalFd,
    TimerFd,
)

SI_TKILL = -6  # si_code of a signal sent with tgkill (pthread_kill)
SIGRT = signal.SIGRTMIN + 3  # a real-time signal: every instance queues
CLOCKS = {
    "BOOTTIME": (CLOCK_BOOTTIME, time.CLOCK_BOOTTIME),
    "MONOTONIC": (CLOCK_MONOTONIC, time.CLOCK_MONOTONIC),
}


@contextlib.contextmanager
def blocked(sigs):
    """Block ``sigs`` (with SignalFd.block) for the duration; restore the old mask after."""
    sigs = set(sigs)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    SignalFd.block(sigs)
    try:
        assert sigs <= signal.pthread_sigmask(signal.SIG_BLOCK, [])
        yield
    finally:
        # anything the test left pending must not be delivered when unblocked
        while (pending := signal.sigpending() & sigs):
            signal.sigtimedwait(pending, 0)
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def send_to_self(sig: int) -> None:
    signal.pthread_kill(threading.get_ident(), sig)


def wait_readable(fileobj, timeout: float = TIMEOUT) -> bool:
    with selectors.DefaultSelector() as sel:
        sel.register(fileobj, selectors.EVENT_READ)
        return bool(sel.select(timeout))


def read_signals(sfd: SignalFd, count: int) -> list:
    """Read until ``count`` signals arrived, or fail at the deadline."""
    got: list = []
    deadline = time.monotonic() + TIMEOUT
    while len(got) < count:
        left = deadline - time.monotonic()
        assert left > 0 and wait_readable(sfd, left), f"only {len(got)} of {count} signals"
        got += sfd.read()
    return got


def fd_flags(fd: int) -> tuple[bool, bool]:
    cloexec = bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
    nonblock = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK)
    return cloexec, nonblock


# ---- SignalFd --------------------------------------------------------------------------------


def test_signalfd_receives_a_blocked_signal_sent_to_self():
    with blocked({signal.SIGUSR1}), SignalFd([signal.SIGUSR1]) as sfd:
        assert sfd.read() == []  # nothing queued yet
        send_to_self(signal.SIGUSR1)
        assert wait_readable(sfd)
        [info] = sfd.read()
        assert info.signo == signal.SIGUSR1
        assert info.pid == os.getpid()
        assert info.uid == os.getuid()
        assert info.code == SI_TKILL
        assert f"signo={signal.SIGUSR1:d}" in repr(info)
        assert sfd.read() == []  # consumed


def test_signalfd_reads_several_queued_signals():
    sigs = {signal.SIGUSR1, signal.SIGUSR2, SIGRT}
    with blocked(sigs), SignalFd(sigs) as sfd:
        for sig in (signal.SIGUSR1, signal.SIGUSR2, SIGRT, SIGRT, SIGRT):
            send_to_self(sig)
        got = read_signals(sfd, 5)
        assert sorted(i.signo for i in got) == sorted(
            [signal.SIGUSR1, signal.SIGUSR2, SIGRT, SIGRT, SIGRT])
        assert sfd.read() == []


def test_signalfd_drains_more_than_one_read_buffer():
    # 40 queued real-time signals: more than one read's worth (32); reading until empty
    # (as a level-triggered selector loop does) gets every one.
    with blocked({SIGRT}), SignalFd([SIGRT]) as sfd:
        for _ in range(40):
            send_to_self(SIGRT)
        got = read_signals(sfd, 40)
        assert len(got) == 40
        assert all(i.signo == SIGRT for i in got)


def test_signalfd_only_reports_its_own_signals():
    with blocked({signal.SIGUSR1, signal.SIGUSR2}), SignalFd([signal.SIGUSR2]) as sfd:
        send_to_self(signal.SIGUSR1)
        assert not wait_readable(sfd, 0)
        assert sfd.read() == []
        send_to_self(signal.SIGUSR2)
        assert [i.signo for i in read_signals(sfd, 1)] == [signal.SIGUSR2]


def test_signalfd_is_cloexec_and_nonblocking():
    with SignalFd([signal.SIGUSR1]) as sfd:
        assert fd_flags(sfd.fileno()) == (True, True)


@pytest.mark.parametrize("bad", [0, 1000, -1])
def test_signalfd_invalid_signal_is_oserror(bad):
    with pytest.raises(OSError) as info:
        SignalFd([bad])
    assert info.value.errno == errno.EINVAL


# ---- TimerFd ---------------------------------------------------------------------------------


@pytest.mark.parametrize("clock", [CLOCK_BOOTTIME, CLOCK_MONOTONIC, CLOCK_REALTIME],
                         ids=["BOOTTIME", "MONOTONIC", "REALTIME"])
def test_timerfd_is_cloexec_and_nonblocking(clock):
    with TimerFd(clock) as tfd:
        assert tfd.clock == clock
        assert fd_flags(tfd.fileno()) == (True, True)


def test_timerfd_default_clock_is_boottime():
    with TimerFd() as tfd:
        assert tfd.clock == CLOCK_BOOTTIME


@pytest.mark.parametrize("clock", CLOCKS.values(), ids=CLOCKS.keys())
def test_timerfd_arm_disarm_armed_at(clock):
    native_clock, py_clock = clock
    with TimerFd(native_clock) as tfd:
        assert tfd.armed_at() is None
        assert tfd.read() == 0
        tfd.arm_at(time.clock_gettime(py_clock) + 60)
        left = tfd.armed_at()
        assert left is not None and 59 < left <= 60
        assert tfd.read() == 0  # not expired
        assert not wait_readable(tfd, 0)
        # re-arming replaces the deadline
        tfd.arm_at(time.clock_gettime(py_clock) + 3600)
        assert 3599 < tfd.armed_at() <= 3600
        tfd.disarm()
        assert tfd.armed_at() is None
        assert tfd.read() == 0
        tfd.disarm()  # disarming a disarmed timer is fine
        assert tfd.armed_at() is None


@pytest.mark.parametrize("clock", CLOCKS.values(), ids=CLOCKS.keys())
def test_timerfd_fires_at_its_deadline(clock):
    native_clock, py_clock = clock
    with TimerFd(native_clock) as tfd:
        deadline = time.clock_gettime(py_clock) + 0.05
        tfd.arm_at(deadline)
        assert wait_readable(tfd)
        assert time.clock_gettime(py_clock) >= deadline
        assert tfd.read() == 1
        assert tfd.armed_at() is None  # one-shot: disarmed once expired
        assert tfd.read() == 0
        assert not wait_readable(tfd, 0)


@pytest.mark.parametrize("clock", CLOCKS.values(), ids=CLOCKS.keys())
def test_timerfd_deadline_in_the_past_fires_at_once(clock):
    native_clock, py_clock = clock
    with TimerFd(native_clock) as tfd:
        tfd.arm_at(time.clock_gettime(py_clock) - 10)
        assert wait_readable(tfd)
        assert tfd.read() == 1
        tfd.arm_at(0)  # 0 means "at once", not "disarm"
        assert wait_readable(tfd)
        assert tfd.read() == 1


def test_timerfd_disarm_before_expiry_never_fires():
    with TimerFd(CLOCK_MONOTONIC) as tfd:
        tfd.arm_at(time.clock_gettime(time.CLOCK_MONOTONIC) + 0.02)
        tfd.disarm()
        assert tfd.armed_at() is None
        # later than the old deadline: still not readable, nothing to read
        with TimerFd(CLOCK_MONOTONIC) as witness:
            witness.arm_at(time.clock_gettime(time.CLOCK_MONOTONIC) + 0.1)
            assert wait_readable(witness)
        assert not wait_readable(tfd, 0)
        assert tfd.read() == 0


def test_timerfd_realtime_cancel_on_set_arms():
    # Only arming: the system clock is not touched.
    with TimerFd(CLOCK_REALTIME) as tfd:
        tfd.arm_at(time.time() + 60, cancel_on_set=True)
        left = tfd.armed_at()
        assert left is not None and 59 < left <= 60
        assert tfd.read() == 0
        tfd.disarm()
        assert tfd.armed_at() is None
        tfd.arm_at(time.time() - 1, cancel_on_set=True)
        assert wait_readable(tfd)
        assert tfd.read() == 1


def test_timerfd_invalid_clock_is_oserror_einval():
    with pytest.raises(OSError) as info:
        TimerFd(12345)
    assert info.value.errno == errno.EINVAL
    assert info.value.strerror == os.strerror(errno.EINVAL)


def test_check_turns_minus_one_into_oserror_with_errno():
    native.ffi.errno = errno.EBADF
    with pytest.raises(OSError) as info:
        native._check(-1)
    assert info.value.errno == errno.EBADF
    assert native._check(0) == 0
    assert native._check(7) == 7


# ---- fd ownership --------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: TimerFd(CLOCK_MONOTONIC),
                                  lambda: SignalFd([signal.SIGUSR1])],
                         ids=["TimerFd", "SignalFd"])
def test_close_is_idempotent_and_fileno_fails_after(make):
    obj = make()
    fd = obj.fileno()
    assert not obj.closed
    obj.close()
    assert obj.closed
    obj.close()
    with pytest.raises(ValueError):
        obj.fileno()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_context_manager_closes():
    with TimerFd(CLOCK_MONOTONIC) as tfd:
        fd = tfd.fileno()
    assert tfd.closed
    with pytest.raises(OSError):
        os.fstat(fd)


def test_unclosed_fd_warns_and_is_closed():
    tfd = TimerFd(CLOCK_MONOTONIC)
    fd = tfd.fileno()
    with pytest.warns(ResourceWarning, match="unclosed TimerFd"):
        del tfd
        gc.collect()
    with pytest.raises(OSError):
        os.fstat(fd)
