"""The service lifecycle as a pure state machine.

``step(service, event, now, mono)`` looks up ``TABLE[(state, kind)]`` and returns a new
:class:`Service` with the :class:`Effect` values the shell must carry out. Every
(state, event) pair has an explicit entry (s6-supervise keeps an action table the same
way); ``tests/test_machine.py`` checks that the table is complete.

A service is born in ``NEW`` and enters the table through a command like any other:
``CREATE`` (its first start, now or when it is due) or ``OPEN`` (an adopted process). A
first start that cannot spawn is refused here (``Reject``: the create fails and nothing is
left), not undone by the shell afterwards.

A graceful stop is in the table like every other transition: ``STOP``, ``RESTART`` and
``TERMINATE`` (the instance closing) send the service's stop signal and arm its stop timer
(``STOPPING``, with the goal); ``STOP_TIMEOUT`` escalates to SIGKILL; the exit ends the
stop as its goal says. How ends are classified and which are restarted follows systemd's
``Restart=``; the start limit counts starts (see :func:`exited`). The statuses users see
are described in ``docs/reference.md``.

This module imports neither ``os`` nor ``time``: ``now`` (wall-clock seconds, for display)
and ``mono`` (CLOCK_BOOTTIME seconds, for deadlines) are passed in.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import operator
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from supervisor.schedule import RestartPolicy, Schedule, StartLimit


class State(enum.Enum):
    """Where a service is in its life. ``STOPPING`` shows to users as RUNNING, ``NEW`` as
    PENDING."""

    NEW = "NEW"  # being created or opened: exists only within the command that makes it
    PENDING = "PENDING"  # no process: waiting for its due time, a restart, or being started
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"  # suspended (SIGSTOP from us or from outside)
    STOPPING = "STOPPING"  # its stop signal sent (stop, restart, shutdown): waiting for the exit
    KILLED = "KILLED"
    CRASHED = "CRASHED"
    EXITED = "EXITED"

    @property
    def status(self) -> str:
        return _SHOWN.get(self, self.value)


_SHOWN = {State.STOPPING: "RUNNING", State.NEW: "PENDING"}


class Ev(enum.Enum):
    """Event kinds: commands from users, and facts observed by the shell."""

    # facts
    SPAWNED = "spawned"  # the shell started the process: pid, stopped
    SPAWN_FAILED = "spawn-failed"  # the shell could not start it: error
    DUE = "due"  # the start timer fired
    EXITED = "exited"  # the process ended: code/signal (both None: not knowable)
    STOPPED_SEEN = "stopped-seen"  # observed stopped (waitid or /proc)
    CONTINUED_SEEN = "continued-seen"  # observed running again
    STOP_TIMEOUT = "stop-timeout"  # a stopping service outlived its stop timeout
    CLOCK_CHANGED = "clock-changed"  # the wall clock was set: calendar firings move
    # commands
    CREATE = "create"  # create-service: the first start, now or when due
    OPEN = "open"  # open-service: pid, stopped
    SUSPEND = "suspend"
    RESUME = "resume"
    KILL = "close"  # close-service: SIGKILL
    REMOVE = "remove"
    CANCEL = "cancel"
    TERMINATE = "terminate"  # instance shutdown: timeout (the daemon's grace)
    STOP = "stop"  # stop-service: the stop signal, then SIGKILL after the stop timeout
    START = "start"  # start-service
    RESTART = "restart"  # restart-service: stop, then start
    SIGNAL = "signal"  # signal-service: signal
    DECLARE = "declare"  # apply, save: it is (definition) or is no more (None) declared


FACTS = frozenset({Ev.SPAWNED, Ev.SPAWN_FAILED, Ev.DUE, Ev.EXITED, Ev.STOPPED_SEEN,
                   Ev.CONTINUED_SEEN, Ev.STOP_TIMEOUT, Ev.CLOCK_CHANGED})  # the rest: commands


@dataclass(frozen=True, slots=True)
class Event:
    kind: Ev
    pid: int | None = None
    stopped: bool = False
    code: int | None = None
    signal: int | None = None
    error: str | None = None
    timeout: float | None = None
    definition: str | None = None


# Effects the shell carries out, in order.
@dataclass(frozen=True, slots=True)
class Spawn:
    stopped: bool = False


@dataclass(frozen=True, slots=True)
class Signal:
    """A signal to the service's process: ``group``, to its whole process group (a created
    service's; an opened one gets it alone), and SIGKILL to its cgroup too."""

    signo: int
    group: bool = True


@dataclass(frozen=True, slots=True)
class ArmTimer:
    """``slot`` "start": the start it waits for; "stop": its stop timeout."""

    due: float  # CLOCK_BOOTTIME seconds, or with ``wall`` CLOCK_REALTIME (epoch) seconds
    wall: bool = False
    slot: str = "start"


@dataclass(frozen=True, slots=True)
class CancelTimer:
    slot: str = "start"


@dataclass(frozen=True, slots=True)
class Forget:
    """Drop the service from the registry (its process, if any, is reaped or released)."""


@dataclass(frozen=True, slots=True)
class Reject:
    """The command being answered fails with this error (``code`` from the protocol's
    error codes). Effects before it have been carried out; a ``Forget`` with it means
    nothing is left of the service."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Log:
    event: str  # started, stopped, continued, crashed, restarted, killed, exited, removed...
    message: str
    priority: int = 6  # syslog: 6 info, 5 notice, 4 warning, 3 err


Effect = Spawn | Signal | ArmTimer | CancelTimer | Forget | Reject | Log


class Refused(Exception):
    """A command that the service's state does not allow (the daemon answers ``bad-state``),
    or one that failed as a :class:`Reject` effect said (``code``)."""

    code = "bad-state"

    def __init__(self, message: str, code: str = "bad-state") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Service:
    # what it is (its definition)
    name: str
    command: tuple[str, ...]
    opened: bool = False
    restart_limit: int | None = 0  # at most this many restarts; None: no limit
    restart_mode: str = "on-crash"  # on-crash (the seed's -r K), on-failure, always, never
    restart_delay: float = 0.0  # before the first restart; doubled each time, up to the cap
    restart_max_delay: float = 60.0
    start_limit: StartLimit | None = None
    schedule: Schedule | None = None  # --at, --every, --cron
    create_stopped: bool = False
    delay: float = 0.0  # the first start waits this long (CLOCK_BOOTTIME seconds)
    cwd: str = "/"
    output: str = "journal"  # journal, null, inherit or an absolute path
    env: tuple[tuple[str, str], ...] = ()  # --env, over the daemon's and --env-file's
    env_file: str | None = None  # KEY=VALUE lines, read at each start
    user: str | None = None  # USER[:GROUP] it runs as (a root daemon's only)
    stop_signal: int = signal.SIGTERM
    stop_timeout: float | None = None  # None: STOP_TIMEOUT, or on shutdown the daemon's grace
    declared: bool = False  # it comes from the instance's config file
    definition: str | None = None  # while declared: its table there (canonical JSON)
    autostart: bool = True  # False: made PENDING, started by start-service only
    # where it is
    state: State = State.NEW
    pid: int | None = None  # its process's, or its last one's (None: it never had one)
    alive: bool = False  # a process exists (not yet reaped or seen gone)
    restarts: int = 0
    starts: tuple[float, ...] = ()  # recent starts, for the start limit (see exited)
    waited: float = 0.0  # seconds spent waiting out back-off since its count began
    streak: int = 0  # restarts since the last run that lasted (for the back-off)
    exit_code: int | None = None
    signal: int | None = None
    started_at: float | None = None  # wall clock
    exited_at: float | None = None  # wall clock
    next_start: float | None = None  # wall clock, while PENDING
    due: float | None = None  # CLOCK_BOOTTIME, while PENDING
    held: bool = False  # stopped by our suspend-service (not from outside)
    stopping: str | None = None  # while STOPPING: what for (stop, restart, shutdown)
    killing: bool = False  # while STOPPING: SIGKILL was needed
    error: str | None = field(default=None, compare=False)

    @property
    def status(self) -> str:
        return self.state.status


_NAME_RE = re.compile(r"[A-Za-z0-9_.@:+-]{1,128}")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a service (one sentence), or None when it can."""
    if not _NAME_RE.fullmatch(name):
        return f"service name {name!r}: use 1-128 letters, digits and _.@:+-"
    if name.startswith("-"):
        return f"service name {name!r} starts with '-': it would read as an option"
    if name.isascii() and name.isdigit():
        return f"service name {name!r} is all digits: it would read as a pid"
    if name in (".", ".."):
        return f"service name {name!r} names a directory in a path"
    return None


# Signals after which a process counts as KILLED: ended, not failed.
KILL_SIGNALS = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP,
                          signal.SIGPIPE})
# Of those, the ones systemd calls clean: on-failure does not restart after them.
CLEAN_SIGNALS = KILL_SIGNALS - {signal.SIGKILL}

Handler = Callable[[Service, Event, float, float], tuple[Service, list]]


_SIG_NAMES = {sig.value: sig.name for sig in signal.Signals}  # an Enum call per exit is slow


def signal_name(signo: int | None) -> str | None:
    """A signal's name as ``kill -l`` gives it: SIGTERM, and for the real-time ones
    SIGRTMIN+N or SIGRTMAX-N (``parse_signal`` reads both back); a number without a
    name, as digits."""
    if signo is None:
        return None
    name = _SIG_NAMES.get(signo)
    if name is not None:
        return name
    if signal.SIGRTMIN < signo < signal.SIGRTMAX:
        if signo <= (signal.SIGRTMIN + signal.SIGRTMAX) // 2:
            return f"SIGRTMIN+{signo - signal.SIGRTMIN}"
        return f"SIGRTMAX-{signal.SIGRTMAX - signo}"
    return str(signo)


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Service))
_values_of = operator.attrgetter(*_FIELD_NAMES)
# the slots' own setters: a copy is made field by field, without __init__'s keyword
# handling (dataclasses.replace costs 8.6 us a call here, this 3.4; five calls a create)
_SETTERS = tuple(getattr(Service, name).__set__ for name in _FIELD_NAMES)
_SETTER_OF = dict(zip(_FIELD_NAMES, _SETTERS, strict=True))


def _r(svc: Service, **changes) -> Service:
    """``dataclasses.replace(svc, **changes)``, faster (Service has no __post_init__)."""
    new = object.__new__(Service)
    for put, value in zip(_SETTERS, _values_of(svc), strict=True):
        put(new, value)
    for name, value in changes.items():
        _SETTER_OF[name](new, value)  # KeyError: no such field (a bug of ours)
    return new


# ---- handlers --------------------------------------------------------------------------
# Each takes (service, event, now, mono) and returns (service, effects).


def ignore(svc, ev, now, mono):
    return svc, []


def refuse(svc, ev, now, mono):
    # a stopping service shows RUNNING (it runs until it ends), which allows what is
    # refused here: say why
    status = "being stopped" if svc.state is State.STOPPING else svc.status
    raise Refused(f"service {svc.name} is {status}: cannot {ev.kind.value} it")


def no_process(svc, ev, now, mono):
    raise Refused(f"service {svc.name} is {svc.status}: it has no process to signal")


# -- birth

def create(svc, ev, now, mono):
    """create-service: the first start now, after ``delay`` (CLOCK_BOOTTIME), or when the
    schedule says. An immediate start stays NEW until the spawn's outcome is known."""
    schedule = svc.schedule
    if schedule is not None:
        clock_now = now if schedule.wall else mono
        due = schedule.first_due(clock_now)
        if due <= clock_now and schedule.repeats:  # first start now; the next is armed
            svc, effects = _arm_next(_r(svc, next_start=now), now, mono)
            return svc, [Spawn(stopped=svc.create_stopped), *effects]
        wall_due = due if schedule.wall else now + (due - mono)
        svc = _r(svc, state=State.PENDING, due=due, next_start=wall_due)
        return svc, [ArmTimer(due, wall=schedule.wall),
                     Log("scheduled", f"{svc.name} scheduled ({schedule.describe()}), first "
                                      f"start at {_stamp(wall_due)}")]
    if svc.delay > 0:
        svc = _r(svc, state=State.PENDING, due=mono + svc.delay, next_start=now + svc.delay)
        return svc, [ArmTimer(mono + svc.delay),
                     Log("scheduled", f"{svc.name} scheduled to start in {svc.delay:g} s")]
    if not svc.autostart:
        return _r(svc, state=State.PENDING), [
            Log("defined", f"{svc.name} defined, not started (autostart = false): "
                           "start-service starts it")]
    return _r(svc, next_start=now), [Spawn(stopped=svc.create_stopped)]


def open_(svc, ev, now, mono):
    """open-service: adopt the running (or stopped) process ``ev.pid``."""
    svc = _r(svc, opened=True, state=State.STOPPED if ev.stopped else State.RUNNING,
             pid=ev.pid, alive=True)
    return svc, [Log("opened", f"{svc.name} (pid {ev.pid}) opened")]


def create_failed(svc, ev, now, mono):
    """The first start of a new service could not spawn: the create fails, nothing stays."""
    return svc, [CancelTimer(), Forget(), Reject("spawn-failed", f"cannot start {ev.error}")]


# -- starting

def spawned(svc, ev, now, mono):
    state = State.STOPPED if ev.stopped else State.RUNNING
    recurring = svc.schedule is not None and svc.schedule.repeats  # its next start is armed
    svc = _r(svc, state=state, pid=ev.pid, alive=True,
             started_at=now, next_start=svc.next_start if recurring else None,
             due=svc.due if recurring else None, exit_code=None, signal=None, error=None,
             starts=(*svc.starts[-32:], mono - svc.waited))
    what = "restarted" if svc.restarts else "started"
    extra = " (stopped before exec)" if ev.stopped else ""
    return svc, [Log(what, f"{svc.name} {what} with pid {ev.pid}{extra}")]


SPAWN_RETRY = 1.0  # seconds before retrying a start that could not spawn; doubled, to 60 s


def spawn_failed(svc, ev, now, mono):
    """A start (a restart, a due one) could not spawn: EAGAIN, ENOMEM, a missing file.
    Whatever the policy, it is retried with back-off, as s6's ``trystart`` does: the cause
    is often passing. A recurring schedule's next firing is its retry. It counts as a
    start for the start limit."""
    # the last event is this start, not the run before it: no exit status of that run stays
    svc = _r(svc, alive=False, error=ev.error, exit_code=None, signal=None)
    if svc.schedule is not None and svc.schedule.repeats and svc.due is not None:
        return svc, [Log("crashed", f"{svc.name} could not be started: {ev.error}; next "
                                    f"start {_when(svc)}", 4)]
    clock = mono - svc.waited
    starts = (*svc.starts, clock)
    if svc.start_limit is not None:
        ok, starts = svc.start_limit.allows(starts, clock)
        if not ok:
            svc = _r(svc, state=State.CRASHED, starts=starts, due=None, next_start=None)
            return svc, [Log("crashed", f"{svc.name} could not be started: {ev.error}; "
                                        f"{_limit_hit(svc)}", 3)]
    cap = max(svc.restart_max_delay, SPAWN_RETRY)
    delay = min(max(svc.restart_delay, SPAWN_RETRY) * 2.0 ** min(svc.streak, 16), cap)
    svc = _r(svc, state=State.PENDING, starts=starts, streak=svc.streak + 1,
             waited=svc.waited + delay, due=mono + delay, next_start=now + delay)
    return svc, [ArmTimer(mono + delay),
                 Log("crashed", f"{svc.name} could not be started: {ev.error}; retrying in "
                                f"{delay:g} s", 4)]


def start_due(svc, ev, now, mono):
    if svc.due is None:  # not waiting for a timer: a stray or late one must not start twice
        return svc, []
    svc, effects = _arm_next(_r(svc, due=None), now, mono)
    return svc, [Spawn(stopped=svc.create_stopped), *effects]


def _arm_next(svc, now, mono):
    """For a recurring service: arm its next start after this one (``due``/``next_start``)."""
    sch = svc.schedule
    if sch is None or not sch.repeats:
        return svc, []
    clock_now = now if sch.wall else mono
    nxt = sch.next_after(clock_now)
    svc = _r(svc, due=nxt, next_start=nxt if sch.wall else now + (nxt - mono))
    return svc, [ArmTimer(nxt, wall=sch.wall)]


def start_now(svc, ev, now, mono):
    """start-service (and restart-service of a service that does not run): started now,
    its restart count and start limit starting over. A pending start is replaced (a
    recurring schedule's next firing stays). An opened process was never ours to start."""
    if svc.opened:
        raise Refused(f"service {svc.name} was opened, not created: there is nothing to "
                      "start again")
    repeats = svc.schedule is not None and svc.schedule.repeats
    effects = [] if repeats else [CancelTimer()]
    # a recurring one keeps its next start on the schedule (due, next_start): this start
    # is an extra run, and the next one, after a reload or a restart of the daemon too,
    # is where the schedule says, not now
    svc = _r(svc, state=State.PENDING, restarts=0, starts=(), waited=0.0, streak=0,
             error=None, stopping=None, killing=False,
             next_start=svc.next_start if repeats else now,
             due=svc.due if repeats else None)
    return svc, [*effects, Spawn()]


# -- a schedule

def due_while_running(svc, ev, now, mono):
    """A recurring service's start came while its last run still runs: this start is
    skipped, and no other is armed until the run ends, when the next one on the schedule
    is (see :func:`exited`): a run that outlasts many intervals costs no wake-up, journal
    entry or state write per interval."""
    if svc.due is None or svc.schedule is None:
        return svc, []
    skipped = svc.next_start
    svc = _r(svc, due=None, next_start=None)
    return svc, [Log("skipped", f"{svc.name}: start at {_stamp(skipped)} skipped, its last run "
                                f"(pid {svc.pid}) still runs; the next start comes after "
                                "it ends", 4)]


def clock_changed(svc, ev, now, mono):
    """The wall clock was set: a recurring calendar schedule is re-armed from the new time
    (one-shot --at deadlines are absolute and stay as they are)."""
    sch = svc.schedule
    if sch is None or not sch.repeats or not sch.wall or svc.due is None:
        return svc, []
    return _arm_next(svc, now, mono)


def cancel_schedule(svc, ev, now, mono):
    """supervisor-cancel on a recurring service that runs: the schedule ends, the run goes on."""
    if svc.schedule is None or not svc.schedule.repeats:
        raise Refused(f"service {svc.name} is {svc.status}, not PENDING: only a pending or "
                      "scheduled service can be cancelled")
    svc = _r(svc, schedule=None, due=None, next_start=None)
    return svc, [CancelTimer(), Log("cancelled", f"{svc.name}: schedule cancelled; the "
                                                 "current run goes on")]


def cancel(svc, ev, now, mono):
    return svc, [CancelTimer(), Forget(), Log("removed", f"{svc.name} cancelled before start")]


def declare(svc, ev, now, mono):
    """apply, save: the service is declared in the config file (``ev.definition``, its
    table there) or is no more (None). Nothing else changes: it keeps its process."""
    if svc.opened and ev.definition is not None:
        raise Refused(f"service {svc.name} was opened, not created: it cannot be declared")
    return _r(svc, declared=ev.definition is not None, definition=ev.definition), []


# -- running

def suspend(svc, ev, now, mono):
    svc = _r(svc, state=State.STOPPED, held=True)
    return svc, [Signal(signal.SIGSTOP), Log("stopped", f"{svc.name} suspended")]


def resume(svc, ev, now, mono):
    svc = _r(svc, state=State.RUNNING, held=False)
    return svc, [Signal(signal.SIGCONT), Log("continued", f"{svc.name} resumed")]


def seen_stopped(svc, ev, now, mono):
    svc = _r(svc, state=State.STOPPED)
    return svc, [Log("stopped", f"{svc.name} was stopped from outside")]


def seen_continued(svc, ev, now, mono):
    svc = _r(svc, state=State.RUNNING, held=False)
    return svc, [Log("continued", f"{svc.name} was continued from outside")]


def send_signal(svc, ev, now, mono):
    """signal-service: any signal to the service's process, through its pidfd. What it
    does shows as it happens (a stop, a continue, an exit are reported as any other)."""
    return svc, [Signal(ev.signal, group=False),
                 Log("signalled", f"{svc.name} (pid {svc.pid}) sent {signal_name(ev.signal)}")]


def kill(svc, ev, now, mono):
    svc = _r(svc, state=State.KILLED, stopping=None)
    return svc, [CancelTimer(slot="stop"), Signal(signal.SIGKILL),
                 Log("killed", f"{svc.name} killed (SIGKILL)", 5)]


# -- stopping

MAX_RESTARTS = 1_000_000_000  # -r K at most (no limit: --restart always or on-failure)
STOP_TIMEOUT = 10.0  # seconds from the stop signal to SIGKILL, unless the service says


def stop_wait(svc: Service, grace: float | None = None) -> float:
    """Seconds from its stop signal to SIGKILL: its own ``--stop-timeout``; else, when the
    instance closes, the daemon's ``grace``; else :data:`STOP_TIMEOUT`."""
    if svc.stop_timeout is not None:
        return svc.stop_timeout
    return STOP_TIMEOUT if grace is None else grace


def _begin_stop(svc, goal: str, now, mono, grace: float | None = None):
    """The stop signal to the service (its process group), SIGCONT after it (a stopped
    process acts on nothing until continued, and a stop from outside may not be reported
    yet), and its stop timer."""
    wait = stop_wait(svc, grace)
    effects = [Signal(svc.stop_signal)]
    if svc.stop_signal not in (signal.SIGCONT, signal.SIGKILL):
        effects.append(Signal(signal.SIGCONT))  # as systemd does: a stopped one acts on it
    svc = _r(svc, state=State.STOPPING, stopping=goal, killing=False, held=False)
    why = {"stop": "stopping", "restart": "restarting", "shutdown": "closing the instance"}
    return svc, [*effects, ArmTimer(mono + wait, slot="stop"),
                 Log("stopping", f"{svc.name} ({why[goal]}): {signal_name(svc.stop_signal)} to "
                                 f"pid {svc.pid}, SIGKILL in {wait:g} s", 5)]


def stop(svc, ev, now, mono):
    return _begin_stop(svc, "stop", now, mono)


def restart(svc, ev, now, mono):
    if svc.opened:
        raise Refused(f"service {svc.name} was opened, not created: it cannot be started "
                      "again once stopped")
    return _begin_stop(svc, "restart", now, mono)


def stop_pending(svc, ev, now, mono):
    """stop-service on a service without a process: nothing to do -- but a restart it waits
    for (after a crash, a back-off) is called off."""
    if svc.schedule is not None or svc.pid is None or svc.due is None:
        return svc, []  # a first start still to come, or a schedule: supervisor-cancel
    svc = _r(svc, state=State.EXITED, due=None, next_start=None)
    return svc, [CancelTimer(), Log("exited", f"{svc.name}: its restart called off "
                                              "(stop-service)")]


def stop_timeout(svc, ev, now, mono):
    """It outlived its stop timeout: SIGKILL, to everything left of it."""
    svc = _r(svc, killing=True)
    return svc, [Signal(signal.SIGKILL),
                 Log("killed", f"{svc.name} did not stop within its stop timeout: SIGKILL",
                     4)]


def retarget(goal: str):
    """A stop already under way gets another goal (a start after it, or none)."""
    def handler(svc, ev, now, mono):
        if goal == "restart" and svc.opened:
            raise Refused(f"service {svc.name} was opened, not created: it cannot be "
                          "started again once stopped")
        if svc.stopping == "shutdown" or svc.stopping == goal:
            return svc, []
        return _r(svc, stopping=goal), []
    handler.__name__ = f"retarget_{goal}"
    return handler


def stopped_exit(svc, ev, now, mono):
    """The process of a stopping service ended: as the stop's goal says."""
    goal, killed = svc.stopping, svc.killing
    svc = _r(svc, alive=False, exit_code=ev.code, signal=ev.signal, exited_at=now,
             stopping=None, killing=False)
    effects: list = [CancelTimer(slot="stop")]
    how = _how(ev)
    if goal == "restart":
        svc, more = start_now(svc, ev, now, mono)
        return svc, [*effects, *more, Log("exited", f"{svc.name} stopped ({how}): "
                                                    "starting it again")]
    if goal == "shutdown":
        return _r(svc, state=State.KILLED), [
            *effects, Log("killed", f"{svc.name} (pid {svc.pid}) ended on shutdown ({how})", 5)]
    # KILLED where SIGKILL was needed: sent, and what ended it (or nothing tells how it
    # ended); one that died of its stop signal, or exited, though SIGKILL was on its way
    # (a stop timeout of 0 sends both) was stopped by the stop signal
    killed = killed and (ev.signal == signal.SIGKILL or (ev.code is None and ev.signal is None))
    final = State.KILLED if killed else State.EXITED
    if svc.schedule is not None and svc.schedule.repeats and svc.due is not None:
        final = State.PENDING  # the schedule goes on: stop-service ended this run only
    svc = _r(svc, state=final)
    return svc, [*effects, Log("killed" if killed else "exited",
                               f"{svc.name} stopped ({how})" + (
                                   f"; next start {_when(svc)}" if final is State.PENDING
                                   else ""), 5 if killed else 6)]


# -- an end

def policy_of(svc: Service) -> RestartPolicy:
    return RestartPolicy(mode=svc.restart_mode, limit=svc.restart_limit,
                         delay=svc.restart_delay, max_delay=max(svc.restart_max_delay,
                                                                svc.restart_delay))


LASTED = 10.0  # a run this long (seconds) resets the back-off


def classify(ev: Event) -> tuple[str, State, str]:
    """(kind of end for the restart policy, the status it shows, why in words)."""
    if ev.code is None and ev.signal is None:  # ended while not watched, or an old kernel
        return "unknown", State.EXITED, "ended (its exit status is not knowable)"
    if ev.signal is None:
        if ev.code == 0:
            return "success", State.EXITED, "exited with code 0"
        return "failure", State.CRASHED, f"exited with code {ev.code}"
    why = f"killed by {signal_name(ev.signal)}"
    if ev.signal == signal.SIGKILL:
        return "killed", State.KILLED, why
    if ev.signal in CLEAN_SIGNALS:
        return "clean", State.KILLED, why
    return "failure", State.CRASHED, why


def _how(ev: Event) -> str:
    return classify(ev)[2]


def exited(svc, ev, now, mono):
    """A RUNNING or STOPPED service's process ended, and no command asked for it: classify
    the end, then restart it, wait for its next scheduled start, or leave it ended, as its
    policy says (systemd's ``Restart=``: :meth:`RestartPolicy.should_restart`).

    The start limit counts starts, back-off or not: on a clock that stops while the
    service waits out a back-off, more than K starts within T end in CRASHED."""
    # one replace at the end of each branch: on a restart's path, each costs
    ended = dict(alive=False, exit_code=ev.code, signal=ev.signal, exited_at=now)
    who = f"{svc.name} (pid {svc.pid})"
    kind, final, why = classify(ev)
    if svc.opened:  # not ours to restart: EXITED, with how it ended where known
        svc = _r(svc, state=State.EXITED, **ended)
        how = "its exit status is not knowable" if kind == "unknown" else why
        return svc, [Log("exited", f"{who} ended: {how}")]
    event = {State.EXITED: "exited", State.KILLED: "killed", State.CRASHED: "crashed"}[final]
    if svc.schedule is not None and svc.schedule.repeats:
        # a recurring service between runs: its next start is armed already -- unless
        # starts were skipped while this run went on: then the next one after now
        svc = _r(svc, state=State.PENDING, **ended)
        effects = []
        if svc.due is None:
            svc, effects = _arm_next(svc, now, mono)
        return svc, [*effects, Log(event, f"{who} {why}; next start {_when(svc)}",
                                   4 if final is State.CRASHED else 6)]
    policy = policy_of(svc)
    if not policy.should_restart(kind, svc.restarts):
        left = ("no restart left" if svc.restart_limit else "no restarts configured") \
            if final is State.CRASHED else "not restarted"
        svc = _r(svc, state=final, **ended)
        priority = {State.CRASHED: 3, State.KILLED: 5, State.EXITED: 6}[final]
        text = f"{who} {why}" + (f"; {left}" if final is State.CRASHED else "")
        return svc, [Log(event, text, priority)]
    clock = mono - svc.waited
    starts = svc.starts
    if svc.start_limit is not None:
        ok, starts = svc.start_limit.allows((*svc.starts, clock), clock)
        if not ok:
            svc = _r(svc, state=State.CRASHED, starts=starts, **ended)
            return svc, [Log("crashed", f"{who} {why}; {_limit_hit(svc)}: not restarted", 3)]
        starts = starts[:-1]  # the start itself is counted when it happens
    lasted = svc.started_at is not None and now - svc.started_at >= LASTED
    streak = 0 if lasted else svc.streak
    delay = policy.delay_for(streak)
    of = f" of {svc.restart_limit}" if svc.restart_limit is not None else ""
    svc = _r(svc, state=State.PENDING, restarts=svc.restarts + 1, streak=streak + 1,
             starts=starts, waited=svc.waited + delay, next_start=now + delay,
             due=mono + delay if delay > 0 else None, **ended)
    log = Log(event, f"{who} {why}; restarting ({svc.restarts}{of})"
                     + (f" in {delay:g} s" if delay > 0 else ""), 4 if kind != "success" else 6)
    return svc, [ArmTimer(mono + delay) if delay > 0 else Spawn(), log]  # start first


def _limit_hit(svc: Service) -> str:
    return f"start limit hit: {svc.start_limit.reason()}"


def _when(svc: Service) -> str:
    return "not scheduled" if svc.next_start is None else f"at {_stamp(svc.next_start)}"


def _stamp(when: float) -> str:
    """A wall-clock time in a message: ISO-8601 in UTC, to the millisecond (the entry has
    its own timestamp, the reader's zone; a bare epoch number was no help to anyone)."""
    text = datetime.datetime.fromtimestamp(when, datetime.UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def reaped(svc, ev, now, mono):
    """The process of an already KILLED service is gone: record how it ended."""
    return _r(svc, alive=False, exit_code=ev.code, signal=ev.signal, exited_at=now), []


# -- leaving

def remove(svc, ev, now, mono):
    effects: list = [CancelTimer(), CancelTimer(slot="stop")]
    if svc.alive and not svc.opened:
        effects.append(Signal(signal.SIGKILL))
        note = " (its process was killed)"
    elif svc.alive:
        effects, note = _release(svc, effects), " (its process was left running)"
    else:
        note = ""
    effects += [Forget(), Log("removed", f"{svc.name} removed{note}")]
    return svc, effects


def _release(svc, effects: list) -> list:
    """Letting go of an opened process: we leave it as we found it. One we suspended is
    resumed (nobody else would ever know to); one stopped from outside stays stopped."""
    if svc.held and svc.state is State.STOPPED:
        return [*effects, Signal(signal.SIGCONT)]
    return effects


def terminate(svc, ev, now, mono):
    """Instance shutdown: a created process gets its stop signal (and SIGCONT, so a stopped
    one acts on it), SIGKILL after its own stop timeout, or the daemon's grace
    (``ev.timeout``) where it has none; an opened one is released untouched; the rest are
    forgotten."""
    if svc.alive and not svc.opened:
        return _begin_stop(svc, "shutdown", now, mono, ev.timeout)
    effects: list = [CancelTimer()]
    if svc.alive and svc.opened:
        effects = _release(svc, effects)
    what = "released" if svc.alive else "forgotten"
    return svc, [*effects, Forget(), Log("removed", f"{svc.name} {what} on shutdown")]


def terminate_stopping(svc, ev, now, mono):
    """Shutdown while a stop is under way: no start after it any more."""
    return _r(svc, stopping="shutdown"), []


def terminate_killed(svc, ev, now, mono):
    """Shutdown of a KILLED service whose process is not reaped yet: the daemon waits for
    it; else it is forgotten."""
    if svc.alive:
        return svc, []
    return terminate(svc, ev, now, mono)


# ---- the table --------------------------------------------------------------------------

S, E = State, Ev

_NEW = {
    E.SPAWNED: spawned, E.SPAWN_FAILED: create_failed, E.DUE: ignore, E.EXITED: ignore,
    E.STOPPED_SEEN: ignore, E.CONTINUED_SEEN: ignore, E.STOP_TIMEOUT: ignore,
    E.CLOCK_CHANGED: ignore,
    E.CREATE: create, E.OPEN: open_, E.SUSPEND: refuse, E.RESUME: refuse, E.KILL: refuse,
    E.REMOVE: remove, E.CANCEL: refuse, E.TERMINATE: terminate, E.STOP: refuse,
    E.START: refuse, E.RESTART: refuse, E.SIGNAL: refuse, E.DECLARE: declare,
}
_PENDING = {  # no process yet: waiting for its due time, a restart, or its spawn
    E.SPAWNED: spawned, E.SPAWN_FAILED: spawn_failed, E.DUE: start_due,
    E.EXITED: ignore,  # a previous process's late report
    E.STOPPED_SEEN: ignore, E.CONTINUED_SEEN: ignore, E.STOP_TIMEOUT: ignore,
    E.CLOCK_CHANGED: clock_changed,
    E.CREATE: refuse, E.OPEN: refuse, E.SUSPEND: refuse, E.RESUME: refuse, E.KILL: refuse,
    E.REMOVE: remove, E.CANCEL: cancel, E.TERMINATE: terminate, E.STOP: stop_pending,
    E.START: start_now, E.RESTART: start_now, E.SIGNAL: no_process, E.DECLARE: declare,
}
_RUNNING = {
    E.SPAWNED: ignore, E.SPAWN_FAILED: ignore, E.DUE: due_while_running, E.EXITED: exited,
    E.STOPPED_SEEN: seen_stopped, E.CONTINUED_SEEN: ignore, E.STOP_TIMEOUT: ignore,
    E.CLOCK_CHANGED: clock_changed,
    E.CREATE: refuse, E.OPEN: refuse, E.SUSPEND: suspend, E.RESUME: refuse, E.KILL: kill,
    E.REMOVE: remove, E.CANCEL: cancel_schedule, E.TERMINATE: terminate, E.STOP: stop,
    E.START: ignore,  # runs already: nothing to do
    E.RESTART: restart, E.SIGNAL: send_signal, E.DECLARE: declare,
}
_STOPPED = {  # suspended
    E.SPAWNED: ignore, E.SPAWN_FAILED: ignore, E.DUE: due_while_running, E.EXITED: exited,
    E.STOPPED_SEEN: ignore, E.CONTINUED_SEEN: seen_continued, E.STOP_TIMEOUT: ignore,
    E.CLOCK_CHANGED: clock_changed,
    E.CREATE: refuse, E.OPEN: refuse, E.SUSPEND: refuse, E.RESUME: resume, E.KILL: kill,
    E.REMOVE: remove, E.CANCEL: cancel_schedule, E.TERMINATE: terminate, E.STOP: stop,
    E.START: ignore, E.RESTART: restart, E.SIGNAL: send_signal, E.DECLARE: declare,
}
_STOPPING = {  # its stop signal sent; the stop timer armed
    E.SPAWNED: ignore, E.SPAWN_FAILED: ignore, E.DUE: due_while_running,
    E.EXITED: stopped_exit, E.STOPPED_SEEN: ignore, E.CONTINUED_SEEN: ignore,
    E.STOP_TIMEOUT: stop_timeout, E.CLOCK_CHANGED: clock_changed,
    E.CREATE: refuse, E.OPEN: refuse, E.SUSPEND: refuse, E.RESUME: refuse, E.KILL: kill,
    E.REMOVE: remove, E.CANCEL: refuse, E.TERMINATE: terminate_stopping,
    E.STOP: retarget("stop"), E.START: retarget("restart"), E.RESTART: retarget("restart"),
    E.SIGNAL: send_signal, E.DECLARE: declare,
}


def _ended(final: State) -> dict:
    """KILLED, CRASHED, EXITED: no process (a KILLED one's may await reaping)."""
    return {
        E.SPAWNED: ignore, E.SPAWN_FAILED: ignore, E.DUE: ignore,
        E.EXITED: reaped if final is S.KILLED else ignore,
        E.STOPPED_SEEN: ignore, E.CONTINUED_SEEN: ignore, E.STOP_TIMEOUT: ignore,
        E.CLOCK_CHANGED: ignore,
        E.CREATE: refuse, E.OPEN: refuse, E.SUSPEND: refuse, E.RESUME: refuse,
        E.KILL: refuse, E.REMOVE: remove, E.CANCEL: refuse,
        E.TERMINATE: terminate_killed if final is S.KILLED else terminate,
        E.STOP: ignore,  # does not run: nothing to do
        E.START: start_now, E.RESTART: start_now, E.SIGNAL: no_process,
        E.DECLARE: declare,
    }


TABLE: dict[tuple[State, Ev], Handler] = {
    (state, kind): handler
    for state, row in ((S.NEW, _NEW), (S.PENDING, _PENDING), (S.RUNNING, _RUNNING),
                       (S.STOPPED, _STOPPED), (S.STOPPING, _STOPPING),
                       (S.KILLED, _ended(S.KILLED)), (S.CRASHED, _ended(S.CRASHED)),
                       (S.EXITED, _ended(S.EXITED)))
    for kind, handler in row.items()
}


def step(svc: Service, event: Event, now: float, mono: float) -> tuple[Service, list]:
    """Apply ``event`` to ``svc``: the new service and the effects to carry out.

    Raises :class:`Refused` for a command the current state does not allow; the service is
    then unchanged.
    """
    return TABLE[(svc.state, event.kind)](svc, event, now, mono)


def new_created(name: str, command: tuple[str, ...], *, now: float, mono: float,
                **definition) -> tuple[Service, list]:
    """A service to be started by us (``definition``: the other fields of
    :class:`Service`, such as ``restart_limit``, ``delay``, ``schedule``), after its
    ``CREATE``: PENDING, with its first start now, after ``delay`` or when its schedule
    says."""
    return step(Service(name=name, command=command, **definition), Event(Ev.CREATE), now, mono)


def new_opened(name: str, command: tuple[str, ...], pid: int, *, stopped: bool,
               started_at: float) -> tuple[Service, list]:
    """A running process that we adopt (``started_at``: when that process started), after
    its ``OPEN``."""
    svc = Service(name=name, command=command, started_at=started_at)
    return step(svc, Event(Ev.OPEN, pid=pid, stopped=stopped), started_at, 0.0)
