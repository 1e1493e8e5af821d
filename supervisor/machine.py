"""The service lifecycle as a pure state machine.

``step(service, event, now)`` looks up ``TABLE[(state, kind)]`` and returns a new
:class:`Service` with the :class:`Effect` values the shell must carry out. Every
(state, event) pair has an explicit entry (s6-supervise keeps an action table the same
way); ``tests/test_machine.py`` checks that the table is complete.

A service is born in ``NEW`` and enters the table through a command like any other:
``CREATE`` (its first start, now or when it is due) or ``OPEN`` (an adopted process). A
first start that cannot spawn is refused here (``Reject``: the create fails and nothing is
left), not undone by the shell afterwards. The meanings of the statuses users see are in
``docs/reference.md``.

This module imports neither ``os`` nor ``time``: ``now`` (wall-clock seconds, for display)
and ``mono`` (CLOCK_BOOTTIME seconds, for deadlines) are passed in.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from supervisor.schedule import RestartPolicy, Schedule, StartLimit


class State(enum.Enum):
    """Where a service is in its life. ``STOPPING`` shows to users as RUNNING, ``NEW`` as
    PENDING."""

    NEW = "NEW"  # being created or opened: exists only within the command that makes it
    PENDING = "PENDING"  # no process yet: waiting for its due time or being started
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"  # suspended (SIGSTOP from us or from outside)
    STOPPING = "STOPPING"  # SIGTERM sent on instance shutdown, waiting for the exit
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
    GRACE_EXPIRED = "grace-expired"  # a STOPPING service outlived the shutdown grace
    CLOCK_CHANGED = "clock-changed"  # the wall clock was set: calendar firings move
    # commands
    CREATE = "create"  # create-service: the first start, now or when due
    OPEN = "open"  # open-service: pid, stopped
    SUSPEND = "suspend"
    RESUME = "resume"
    KILL = "close"  # close-service: SIGKILL
    REMOVE = "remove"
    CANCEL = "cancel"
    TERMINATE = "terminate"  # instance shutdown


@dataclass(frozen=True, slots=True)
class Event:
    kind: Ev
    pid: int | None = None
    stopped: bool = False
    code: int | None = None
    signal: int | None = None
    error: str | None = None


# Effects the shell carries out, in order.
@dataclass(frozen=True, slots=True)
class Spawn:
    stopped: bool = False


@dataclass(frozen=True, slots=True)
class Signal:
    signo: int


@dataclass(frozen=True, slots=True)
class ArmTimer:
    due: float  # CLOCK_BOOTTIME seconds, or with ``wall`` CLOCK_REALTIME (epoch) seconds
    wall: bool = False


@dataclass(frozen=True, slots=True)
class CancelTimer:
    pass


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
    name: str
    command: tuple[str, ...]
    opened: bool = False
    state: State = State.NEW
    pid: int | None = None
    pids: tuple[int, ...] = ()  # every pid it has had, oldest first
    alive: bool = False  # a process exists (not yet reaped or seen gone)
    restarts: int = 0
    restart_limit: int | None = 0  # at most this many restarts; None: no limit
    restart_mode: str = "on-failure"  # on-failure, always, never
    restart_delay: float = 0.0  # before the first restart; doubled each time, up to the cap
    restart_max_delay: float = 60.0
    start_limit: StartLimit | None = None
    failures: tuple[float, ...] = ()  # recent failure times, for the start limit
    streak: int = 0  # restarts since the last run that lasted (for the back-off)
    schedule: Schedule | None = None  # --at, --every, --cron
    exit_code: int | None = None
    signal: int | None = None
    started_at: float | None = None  # wall clock
    next_start: float | None = None  # wall clock, while PENDING
    due: float | None = None  # CLOCK_BOOTTIME, while PENDING
    create_stopped: bool = False
    held: bool = False  # stopped by our suspend-service (not from outside)
    delay: float = 0.0  # the first start waits this long (CLOCK_BOOTTIME seconds)
    cwd: str = "/"
    output: str = "journal"  # journal, null, inherit or an absolute path
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
    return None


# Signals after which a process counts as KILLED rather than failed (never restarted).
KILL_SIGNALS = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP})

Handler = Callable[[Service, Event, float, float], tuple[Service, list]]


def _sig_name(signo: int) -> str:
    try:
        return signal.Signals(signo).name
    except ValueError:
        return f"signal {signo}"


# ---- handlers --------------------------------------------------------------------------
# Each takes (service, event, now, mono) and returns (service, effects).


def ignore(svc, ev, now, mono):
    return svc, []


def refuse(svc, ev, now, mono):
    raise Refused(f"service {svc.name} is {svc.status}: cannot {ev.kind.value} it")


def start_due(svc, ev, now, mono):
    if svc.due is None:  # not waiting for a timer: a stray or late one must not start twice
        return svc, []
    svc, effects = _arm_next(dataclasses.replace(svc, due=None), now, mono)
    return svc, [Spawn(stopped=svc.create_stopped), *effects]


def _arm_next(svc, now, mono):
    """For a recurring service: arm its next start after this one (``due``/``next_start``)."""
    sch = svc.schedule
    if sch is None or not sch.repeats:
        return svc, []
    clock_now = now if sch.wall else mono
    nxt = sch.next_after(clock_now)
    svc = dataclasses.replace(svc, due=nxt, next_start=nxt if sch.wall else now + (nxt - mono))
    return svc, [ArmTimer(nxt, wall=sch.wall)]


def due_while_running(svc, ev, now, mono):
    """A recurring service's start came while its last run still runs: this start is
    skipped, and no other is armed until the run ends, when the next one on the schedule
    is (see :func:`exited`): a run that outlasts many intervals costs no wake-up, journal
    entry or state write per interval."""
    if svc.due is None or svc.schedule is None:
        return svc, []
    skipped = svc.next_start
    svc = dataclasses.replace(svc, due=None, next_start=None)
    return svc, [Log("skipped", f"{svc.name}: start at {skipped:.3f} skipped, its last run "
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
    svc = dataclasses.replace(svc, schedule=None, due=None, next_start=None)
    return svc, [CancelTimer(), Log("cancelled", f"{svc.name}: schedule cancelled; the "
                                                 "current run goes on")]


def spawned(svc, ev, now, mono):
    state = State.STOPPED if ev.stopped else State.RUNNING
    first = not svc.pids
    recurring = svc.schedule is not None and svc.schedule.repeats  # its next start is armed
    svc = dataclasses.replace(
        svc, state=state, pid=ev.pid, pids=(*svc.pids, ev.pid), alive=True, started_at=now,
        next_start=svc.next_start if recurring else None, due=svc.due if recurring else None,
        exit_code=None, signal=None, error=None,
    )
    what = "started" if first else "restarted"
    extra = " (stopped before exec)" if ev.stopped else ""
    return svc, [Log(what, f"{svc.name} {what} with pid {ev.pid}{extra}")]


def create(svc, ev, now, mono):
    """create-service: the first start now, after ``delay`` (CLOCK_BOOTTIME), or when the
    schedule says. An immediate start stays NEW until the spawn's outcome is known."""
    schedule = svc.schedule
    if schedule is not None:
        clock_now = now if schedule.wall else mono
        due = schedule.first_due(clock_now)
        if due <= clock_now and schedule.repeats:  # first start now; the next is armed
            svc, effects = _arm_next(dataclasses.replace(svc, next_start=now), now, mono)
            return svc, [Spawn(stopped=svc.create_stopped), *effects]
        wall_due = due if schedule.wall else now + (due - mono)
        svc = dataclasses.replace(svc, state=State.PENDING, due=due, next_start=wall_due)
        return svc, [ArmTimer(due, wall=schedule.wall),
                     Log("scheduled", f"{svc.name} scheduled ({schedule.describe()}), first "
                                      f"start at {wall_due:.3f}")]
    if svc.delay > 0:
        svc = dataclasses.replace(svc, state=State.PENDING, due=mono + svc.delay,
                                  next_start=now + svc.delay)
        return svc, [ArmTimer(mono + svc.delay),
                     Log("scheduled", f"{svc.name} scheduled to start in {svc.delay:g} s")]
    return dataclasses.replace(svc, next_start=now), [Spawn(stopped=svc.create_stopped)]


def open_(svc, ev, now, mono):
    """open-service: adopt the running (or stopped) process ``ev.pid``."""
    svc = dataclasses.replace(svc, opened=True,
                              state=State.STOPPED if ev.stopped else State.RUNNING,
                              pid=ev.pid, pids=(ev.pid,), alive=True)
    return svc, [Log("opened", f"{svc.name} (pid {ev.pid}) opened")]


def create_failed(svc, ev, now, mono):
    """The first start of a new service could not spawn: the create fails, nothing stays."""
    return svc, [CancelTimer(), Forget(), Reject("spawn-failed", f"cannot start {ev.error}")]


SPAWN_RETRY = 1.0  # seconds before retrying a start that could not spawn; doubled, to 60 s


def spawn_failed(svc, ev, now, mono):
    """A start (a restart, a due one) could not spawn: EAGAIN, ENOMEM, a missing file.
    Whatever the policy, it is retried with back-off, as s6's ``trystart`` does: the cause
    is often passing. A recurring schedule's next firing is its retry. It counts as a
    failure for the start limit."""
    base = dict(alive=False, error=ev.error)
    if svc.schedule is not None and svc.schedule.repeats and svc.due is not None:
        svc = dataclasses.replace(svc, **base)
        return svc, [Log("crashed", f"{svc.name} could not be started: {ev.error}; next "
                                    f"start {_when(svc)}", 4)]
    failures = svc.failures
    if svc.start_limit is not None:
        ok, failures = svc.start_limit.allows((*svc.failures, now), now)
        if not ok:
            svc = dataclasses.replace(svc, state=State.CRASHED, failures=failures, due=None,
                                      next_start=None, **base)
            return svc, [Log("crashed", f"{svc.name} could not be started: {ev.error}; start "
                                        f"limit hit: {svc.start_limit.reason()}", 3)]
    cap = max(svc.restart_max_delay, SPAWN_RETRY)
    delay = min(max(svc.restart_delay, SPAWN_RETRY) * 2.0 ** min(svc.streak, 16), cap)
    svc = dataclasses.replace(svc, state=State.PENDING, failures=failures,
                              streak=svc.streak + 1, due=mono + delay,
                              next_start=now + delay, **base)
    return svc, [ArmTimer(mono + delay),
                 Log("crashed", f"{svc.name} could not be started: {ev.error}; retrying in "
                                f"{delay:g} s", 4)]


def suspend(svc, ev, now, mono):
    svc = dataclasses.replace(svc, state=State.STOPPED, held=True)
    return svc, [Signal(signal.SIGSTOP), Log("stopped", f"{svc.name} suspended")]


def resume(svc, ev, now, mono):
    svc = dataclasses.replace(svc, state=State.RUNNING, held=False)
    return svc, [Signal(signal.SIGCONT), Log("continued", f"{svc.name} resumed")]


def seen_stopped(svc, ev, now, mono):
    svc = dataclasses.replace(svc, state=State.STOPPED)
    return svc, [Log("stopped", f"{svc.name} was stopped from outside")]


def seen_continued(svc, ev, now, mono):
    svc = dataclasses.replace(svc, state=State.RUNNING, held=False)
    return svc, [Log("continued", f"{svc.name} was continued from outside")]


def kill(svc, ev, now, mono):
    svc = dataclasses.replace(svc, state=State.KILLED)
    return svc, [Signal(signal.SIGKILL), Log("killed", f"{svc.name} killed (SIGKILL)", 5)]


def policy_of(svc: Service) -> RestartPolicy:
    return RestartPolicy(mode=svc.restart_mode, limit=svc.restart_limit,
                         delay=svc.restart_delay, max_delay=max(svc.restart_max_delay,
                                                                svc.restart_delay))


LASTED = 10.0  # a run this long (seconds) resets the back-off


def exited(svc, ev, now, mono):
    """A RUNNING or STOPPED service's process ended: classify it, then restart it, wait for
    its next scheduled start, or leave it ended, as its policy says."""
    svc = dataclasses.replace(svc, alive=False, exit_code=ev.code, signal=ev.signal)
    who = f"{svc.name} (pid {svc.pid})"
    if ev.code is None and ev.signal is None:  # ended while not watched, or an old kernel
        kind, final, why = "unknown", State.EXITED, "ended (its exit status is not knowable)"
    elif ev.signal is None and ev.code == 0:
        kind, final, why = "success", State.EXITED, "exited with code 0"
    elif ev.signal in KILL_SIGNALS:
        kind, final, why = "killed", State.KILLED, f"killed by {_sig_name(ev.signal)}"
    elif ev.signal is not None:
        kind, final, why = "failure", State.CRASHED, f"killed by {_sig_name(ev.signal)}"
    else:
        kind, final, why = "failure", State.CRASHED, f"exited with code {ev.code}"
    if svc.opened:  # not ours to restart: EXITED, with how it ended where known
        svc = dataclasses.replace(svc, state=State.EXITED)
        how = "its exit status is not knowable" if kind == "unknown" else why
        return svc, [Log("exited", f"{who} ended: {how}")]
    event = {State.EXITED: "exited", State.KILLED: "killed", State.CRASHED: "crashed"}[final]
    if svc.schedule is not None and svc.schedule.repeats and kind != "killed":
        # a recurring service between runs: its next start is armed already -- unless
        # starts were skipped while this run went on: then the next one after now
        svc = dataclasses.replace(svc, state=State.PENDING)
        effects = []
        if svc.due is None:
            svc, effects = _arm_next(svc, now, mono)
        return svc, [*effects, Log(event, f"{who} {why}; next start {_when(svc)}",
                                   4 if final is State.CRASHED else 6)]
    policy = policy_of(svc)
    # a re-adopted process that ended may have failed: it was meant to keep running
    decide = "failure" if kind == "unknown" else kind
    if not policy.should_restart(decide, svc.restarts):
        left = ("no restart left" if svc.restart_limit else "no restarts configured") \
            if final is State.CRASHED else "not restarted"
        svc = dataclasses.replace(svc, state=final)
        priority = {State.CRASHED: 3, State.KILLED: 5, State.EXITED: 6}[final]
        text = f"{who} {why}" + (f"; {left}" if final is State.CRASHED else "")
        return svc, [Log(event, text, priority)]
    failures = svc.failures
    if decide == "failure" and svc.start_limit is not None:
        ok, failures = svc.start_limit.allows((*svc.failures, now), now)
        if not ok:
            svc = dataclasses.replace(svc, state=State.CRASHED, failures=failures)
            return svc, [Log("crashed", f"{who} {why}; start limit hit: "
                                        f"{svc.start_limit.reason()}: not restarted", 3)]
    lasted = svc.started_at is not None and now - svc.started_at >= LASTED
    streak = 0 if lasted else svc.streak
    delay = policy.delay_for(streak)
    of = f" of {svc.restart_limit}" if svc.restart_limit is not None else ""
    svc = dataclasses.replace(svc, state=State.PENDING, restarts=svc.restarts + 1,
                              streak=streak + 1, failures=failures, next_start=now + delay,
                              due=mono + delay if delay > 0 else None)
    log = Log(event, f"{who} {why}; restarting ({svc.restarts}{of})"
                     + (f" in {delay:g} s" if delay > 0 else ""), 4 if kind != "success" else 6)
    return svc, [ArmTimer(mono + delay) if delay > 0 else Spawn(), log]  # start first


def _when(svc: Service) -> str:
    return "not scheduled" if svc.next_start is None else f"at {svc.next_start:.3f}"


def exited_while_stopping(svc, ev, now, mono):
    svc = dataclasses.replace(svc, state=State.KILLED, alive=False, exit_code=ev.code,
                              signal=ev.signal)
    return svc, [Log("killed", f"{svc.name} (pid {svc.pid}) ended on shutdown", 5)]


def reaped(svc, ev, now, mono):
    """The process of an already KILLED service is gone: record how it ended."""
    return dataclasses.replace(svc, alive=False, exit_code=ev.code, signal=ev.signal), []


def remove(svc, ev, now, mono):
    effects: list = [CancelTimer()]
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


def cancel(svc, ev, now, mono):
    return svc, [CancelTimer(), Forget(), Log("removed", f"{svc.name} cancelled before start")]


def terminate(svc, ev, now, mono):
    """Instance shutdown: created processes get SIGTERM (and SIGCONT, so a stopped one acts
    on it); opened ones are released untouched; the rest are forgotten."""
    if svc.alive and not svc.opened and svc.state is not State.KILLED:
        svc = dataclasses.replace(svc, state=State.STOPPING)
        return svc, [CancelTimer(), Signal(signal.SIGTERM), Signal(signal.SIGCONT),
                     Log("stopping", f"{svc.name} sent SIGTERM on shutdown")]
    effects: list = [CancelTimer()]
    if svc.alive and svc.opened:
        effects = _release(svc, effects)
    what = "released" if svc.alive else "forgotten"
    return svc, [*effects, Forget(), Log("removed", f"{svc.name} {what} on shutdown")]


def terminate_again(svc, ev, now, mono):
    return svc, []


def grace_expired(svc, ev, now, mono):
    return svc, [Signal(signal.SIGKILL),
                 Log("killed", f"{svc.name} outlived the shutdown grace period: SIGKILL", 4)]


# ---- the table --------------------------------------------------------------------------

S, E = State, Ev

TABLE: dict[tuple[State, Ev], Handler] = {
    # NEW: being made by create-service or open-service, within that one command.
    (S.NEW, E.SPAWNED): spawned,
    (S.NEW, E.SPAWN_FAILED): create_failed,
    (S.NEW, E.DUE): ignore,
    (S.NEW, E.EXITED): ignore,
    (S.NEW, E.STOPPED_SEEN): ignore,
    (S.NEW, E.CONTINUED_SEEN): ignore,
    (S.NEW, E.GRACE_EXPIRED): ignore,
    (S.NEW, E.CLOCK_CHANGED): ignore,
    (S.NEW, E.CREATE): create,
    (S.NEW, E.OPEN): open_,
    (S.NEW, E.SUSPEND): refuse,
    (S.NEW, E.RESUME): refuse,
    (S.NEW, E.KILL): refuse,
    (S.NEW, E.REMOVE): remove,
    (S.NEW, E.CANCEL): refuse,
    (S.NEW, E.TERMINATE): terminate,
    # PENDING: no process yet.
    (S.PENDING, E.SPAWNED): spawned,
    (S.PENDING, E.SPAWN_FAILED): spawn_failed,
    (S.PENDING, E.DUE): start_due,
    (S.PENDING, E.EXITED): ignore,  # a previous process's late report
    (S.PENDING, E.STOPPED_SEEN): ignore,
    (S.PENDING, E.CONTINUED_SEEN): ignore,
    (S.PENDING, E.GRACE_EXPIRED): ignore,
    (S.PENDING, E.CLOCK_CHANGED): clock_changed,
    (S.PENDING, E.CREATE): refuse,
    (S.PENDING, E.OPEN): refuse,
    (S.PENDING, E.SUSPEND): refuse,
    (S.PENDING, E.RESUME): refuse,
    (S.PENDING, E.KILL): refuse,
    (S.PENDING, E.REMOVE): remove,
    (S.PENDING, E.CANCEL): cancel,
    (S.PENDING, E.TERMINATE): terminate,
    # RUNNING
    (S.RUNNING, E.SPAWNED): ignore,
    (S.RUNNING, E.SPAWN_FAILED): ignore,
    (S.RUNNING, E.DUE): due_while_running,
    (S.RUNNING, E.EXITED): exited,
    (S.RUNNING, E.STOPPED_SEEN): seen_stopped,
    (S.RUNNING, E.CONTINUED_SEEN): ignore,
    (S.RUNNING, E.GRACE_EXPIRED): ignore,
    (S.RUNNING, E.CLOCK_CHANGED): clock_changed,
    (S.RUNNING, E.CREATE): refuse,
    (S.RUNNING, E.OPEN): refuse,
    (S.RUNNING, E.SUSPEND): suspend,
    (S.RUNNING, E.RESUME): refuse,
    (S.RUNNING, E.KILL): kill,
    (S.RUNNING, E.REMOVE): remove,
    (S.RUNNING, E.CANCEL): cancel_schedule,
    (S.RUNNING, E.TERMINATE): terminate,
    # STOPPED
    (S.STOPPED, E.SPAWNED): ignore,
    (S.STOPPED, E.SPAWN_FAILED): ignore,
    (S.STOPPED, E.DUE): due_while_running,
    (S.STOPPED, E.EXITED): exited,
    (S.STOPPED, E.STOPPED_SEEN): ignore,
    (S.STOPPED, E.CONTINUED_SEEN): seen_continued,
    (S.STOPPED, E.GRACE_EXPIRED): ignore,
    (S.STOPPED, E.CLOCK_CHANGED): clock_changed,
    (S.STOPPED, E.CREATE): refuse,
    (S.STOPPED, E.OPEN): refuse,
    (S.STOPPED, E.SUSPEND): refuse,
    (S.STOPPED, E.RESUME): resume,
    (S.STOPPED, E.KILL): kill,
    (S.STOPPED, E.REMOVE): remove,
    (S.STOPPED, E.CANCEL): cancel_schedule,
    (S.STOPPED, E.TERMINATE): terminate,
    # STOPPING: SIGTERM sent on shutdown.
    (S.STOPPING, E.SPAWNED): ignore,
    (S.STOPPING, E.SPAWN_FAILED): ignore,
    (S.STOPPING, E.DUE): ignore,
    (S.STOPPING, E.EXITED): exited_while_stopping,
    (S.STOPPING, E.STOPPED_SEEN): ignore,
    (S.STOPPING, E.CONTINUED_SEEN): ignore,
    (S.STOPPING, E.CLOCK_CHANGED): ignore,
    (S.STOPPING, E.GRACE_EXPIRED): grace_expired,
    (S.STOPPING, E.CREATE): refuse,
    (S.STOPPING, E.OPEN): refuse,
    (S.STOPPING, E.SUSPEND): refuse,
    (S.STOPPING, E.RESUME): refuse,
    (S.STOPPING, E.KILL): kill,
    (S.STOPPING, E.REMOVE): remove,
    (S.STOPPING, E.CANCEL): refuse,
    (S.STOPPING, E.TERMINATE): terminate_again,
    # KILLED: never restarted; the process may still await reaping.
    (S.KILLED, E.SPAWNED): ignore,
    (S.KILLED, E.SPAWN_FAILED): ignore,
    (S.KILLED, E.DUE): ignore,
    (S.KILLED, E.EXITED): reaped,
    (S.KILLED, E.STOPPED_SEEN): ignore,
    (S.KILLED, E.CONTINUED_SEEN): ignore,
    (S.KILLED, E.CLOCK_CHANGED): ignore,
    (S.KILLED, E.GRACE_EXPIRED): ignore,
    (S.KILLED, E.CREATE): refuse,
    (S.KILLED, E.OPEN): refuse,
    (S.KILLED, E.SUSPEND): refuse,
    (S.KILLED, E.RESUME): refuse,
    (S.KILLED, E.KILL): refuse,
    (S.KILLED, E.REMOVE): remove,
    (S.KILLED, E.CANCEL): refuse,
    (S.KILLED, E.TERMINATE): terminate,
    # CRASHED: no restart left.
    (S.CRASHED, E.SPAWNED): ignore,
    (S.CRASHED, E.SPAWN_FAILED): ignore,
    (S.CRASHED, E.DUE): ignore,
    (S.CRASHED, E.EXITED): ignore,
    (S.CRASHED, E.STOPPED_SEEN): ignore,
    (S.CRASHED, E.CONTINUED_SEEN): ignore,
    (S.CRASHED, E.CLOCK_CHANGED): ignore,
    (S.CRASHED, E.GRACE_EXPIRED): ignore,
    (S.CRASHED, E.CREATE): refuse,
    (S.CRASHED, E.OPEN): refuse,
    (S.CRASHED, E.SUSPEND): refuse,
    (S.CRASHED, E.RESUME): refuse,
    (S.CRASHED, E.KILL): refuse,
    (S.CRASHED, E.REMOVE): remove,
    (S.CRASHED, E.CANCEL): refuse,
    (S.CRASHED, E.TERMINATE): terminate,
    # EXITED
    (S.EXITED, E.SPAWNED): ignore,
    (S.EXITED, E.SPAWN_FAILED): ignore,
    (S.EXITED, E.DUE): ignore,
    (S.EXITED, E.EXITED): ignore,
    (S.EXITED, E.STOPPED_SEEN): ignore,
    (S.EXITED, E.CONTINUED_SEEN): ignore,
    (S.EXITED, E.CLOCK_CHANGED): ignore,
    (S.EXITED, E.GRACE_EXPIRED): ignore,
    (S.EXITED, E.CREATE): refuse,
    (S.EXITED, E.OPEN): refuse,
    (S.EXITED, E.SUSPEND): refuse,
    (S.EXITED, E.RESUME): refuse,
    (S.EXITED, E.KILL): refuse,
    (S.EXITED, E.REMOVE): remove,
    (S.EXITED, E.CANCEL): refuse,
    (S.EXITED, E.TERMINATE): terminate,
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
