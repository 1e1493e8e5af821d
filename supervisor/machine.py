"""The service lifecycle as a pure state machine.

``step(service, event, now)`` looks up ``TABLE[(state, kind)]`` and returns a new
:class:`Service` with the :class:`Effect` values the shell must carry out. Every
(state, event) pair has an explicit entry (s6-supervise keeps an action table the same
way); ``tests/test_machine.py`` checks that the table is complete.

This module imports neither ``os`` nor ``time``: ``now`` (wall-clock seconds, for display)
and ``mono`` (CLOCK_BOOTTIME seconds, for deadlines) are passed in.
"""

from __future__ import annotations

import dataclasses
import enum
import signal
from collections.abc import Callable
from dataclasses import dataclass, field


class State(enum.Enum):
    """Where a service is in its life. ``STOPPING`` shows to users as RUNNING."""

    PENDING = "PENDING"  # no process yet: waiting for its due time or being started
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"  # suspended (SIGSTOP from us or from outside)
    STOPPING = "STOPPING"  # SIGTERM sent on instance shutdown, waiting for the exit
    KILLED = "KILLED"
    CRASHED = "CRASHED"
    EXITED = "EXITED"

    @property
    def status(self) -> str:
        return "RUNNING" if self is State.STOPPING else self.value


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
    # commands
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
    due: float  # CLOCK_BOOTTIME seconds


@dataclass(frozen=True, slots=True)
class CancelTimer:
    pass


@dataclass(frozen=True, slots=True)
class Forget:
    """Drop the service from the registry (its process, if any, is reaped or released)."""


@dataclass(frozen=True, slots=True)
class Log:
    event: str  # started, stopped, continued, crashed, restarted, killed, exited, removed...
    message: str
    priority: int = 6  # syslog: 6 info, 5 notice, 4 warning, 3 err


Effect = Spawn | Signal | ArmTimer | CancelTimer | Forget | Log


class Refused(Exception):
    """A command that the service's state does not allow (the daemon answers ``bad-state``)."""

    code = "bad-state"


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    command: tuple[str, ...]
    opened: bool = False
    state: State = State.PENDING
    pid: int | None = None
    pids: tuple[int, ...] = ()  # every pid it has had, oldest first
    alive: bool = False  # a process exists (not yet reaped or seen gone)
    restarts: int = 0
    restart_limit: int = 0
    exit_code: int | None = None
    signal: int | None = None
    started_at: float | None = None  # wall clock
    next_start: float | None = None  # wall clock, while PENDING
    due: float | None = None  # CLOCK_BOOTTIME, while PENDING
    create_stopped: bool = False
    cwd: str = "/"
    output: str = "journal"  # journal, null, inherit or an absolute path
    error: str | None = field(default=None, compare=False)

    @property
    def status(self) -> str:
        return self.state.status


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
    return dataclasses.replace(svc, due=None), [Spawn(stopped=svc.create_stopped)]


def spawned(svc, ev, now, mono):
    state = State.STOPPED if ev.stopped else State.RUNNING
    first = not svc.pids
    svc = dataclasses.replace(
        svc, state=state, pid=ev.pid, pids=(*svc.pids, ev.pid), alive=True, started_at=now,
        next_start=None, due=None, exit_code=None, signal=None, error=None,
    )
    what = "started" if first else "restarted"
    extra = " (stopped before exec)" if ev.stopped else ""
    return svc, [Log(what, f"{svc.name} {what} with pid {ev.pid}{extra}")]


def spawn_failed(svc, ev, now, mono):
    svc = dataclasses.replace(svc, state=State.CRASHED, alive=False, due=None, next_start=None,
                              error=ev.error)
    return svc, [Log("crashed", f"{svc.name} could not be started: {ev.error}", 3)]


def suspend(svc, ev, now, mono):
    svc = dataclasses.replace(svc, state=State.STOPPED)
    return svc, [Signal(signal.SIGSTOP), Log("stopped", f"{svc.name} suspended")]


def resume(svc, ev, now, mono):
    svc = dataclasses.replace(svc, state=State.RUNNING)
    return svc, [Signal(signal.SIGCONT), Log("continued", f"{svc.name} resumed")]


def seen_stopped(svc, ev, now, mono):
    svc = dataclasses.replace(svc, state=State.STOPPED)
    return svc, [Log("stopped", f"{svc.name} was stopped from outside")]


def seen_continued(svc, ev, now, mono):
    svc = dataclasses.replace(svc, state=State.RUNNING)
    return svc, [Log("continued", f"{svc.name} was continued from outside")]


def kill(svc, ev, now, mono):
    svc = dataclasses.replace(svc, state=State.KILLED)
    return svc, [Signal(signal.SIGKILL), Log("killed", f"{svc.name} killed (SIGKILL)", 5)]


def exited(svc, ev, now, mono):
    """A RUNNING or STOPPED service's process ended: classify, maybe restart."""
    svc = dataclasses.replace(svc, alive=False, exit_code=ev.code, signal=ev.signal)
    unknown = ev.code is None and ev.signal is None  # not our child: status not knowable
    if unknown and not svc.opened and svc.restarts < svc.restart_limit:
        # a created service re-adopted after a daemon restart ended: it was meant to run
        svc = dataclasses.replace(svc, state=State.PENDING, restarts=svc.restarts + 1,
                                  next_start=now, due=None)
        return svc, [
            Log("crashed", f"{svc.name} (pid {svc.pid}) ended (its exit status is not "
                           f"knowable); restarting ({svc.restarts} of {svc.restart_limit})", 4),
            Spawn(),
        ]
    if unknown:
        svc = dataclasses.replace(svc, state=State.EXITED)
        return svc, [Log("exited", f"{svc.name} (pid {svc.pid}) exited; its exit code is not "
                                   "knowable (not our child)")]
    if ev.signal is None and ev.code == 0:
        svc = dataclasses.replace(svc, state=State.EXITED)
        return svc, [Log("exited", f"{svc.name} (pid {svc.pid}) exited with code 0")]
    if ev.signal in KILL_SIGNALS:
        svc = dataclasses.replace(svc, state=State.KILLED)
        return svc, [Log("killed", f"{svc.name} (pid {svc.pid}) killed by "
                                   f"{_sig_name(ev.signal)}", 5)]
    why = (f"killed by {_sig_name(ev.signal)}" if ev.signal is not None
           else f"exited with code {ev.code}")
    if svc.restarts < svc.restart_limit:
        svc = dataclasses.replace(svc, state=State.PENDING, restarts=svc.restarts + 1,
                                  next_start=now, due=None)
        return svc, [
            Log("crashed", f"{svc.name} (pid {svc.pid}) {why}; restarting "
                           f"({svc.restarts} of {svc.restart_limit})", 4),
            Spawn(),
        ]
    svc = dataclasses.replace(svc, state=State.CRASHED)
    left = "no restart left" if svc.restart_limit else "no restarts configured"
    return svc, [Log("crashed", f"{svc.name} (pid {svc.pid}) {why}; {left}", 3)]


def exited_while_stopping(svc, ev, now, mono):
    svc = dataclasses.replace(svc, state=State.KILLED, alive=False, exit_code=ev.code,
                              signal=ev.signal)
    return svc, [Log("killed", f"{svc.name} (pid {svc.pid}) ended on shutdown", 5)]


def reaped(svc, ev, now, mono):
    """The process of an already KILLED service is gone: record how it ended."""
    return dataclasses.replace(svc, alive=False, exit_code=ev.code, signal=ev.signal), []


def remove(svc, ev, now, mono):
    effects: list = []
    if svc.state is State.PENDING:
        effects.append(CancelTimer())
    if svc.alive and not svc.opened:
        effects.append(Signal(signal.SIGKILL))
        note = " (its process was killed)"
    elif svc.alive:
        note = " (its process was left running)"
    else:
        note = ""
    effects += [Forget(), Log("removed", f"{svc.name} removed{note}")]
    return svc, effects


def cancel(svc, ev, now, mono):
    return svc, [CancelTimer(), Forget(), Log("removed", f"{svc.name} cancelled before start")]


def terminate(svc, ev, now, mono):
    """Instance shutdown: created processes get SIGTERM (and SIGCONT, so a stopped one acts
    on it); opened ones are released untouched; the rest are forgotten."""
    if svc.alive and not svc.opened and svc.state is not State.KILLED:
        svc = dataclasses.replace(svc, state=State.STOPPING)
        return svc, [Signal(signal.SIGTERM), Signal(signal.SIGCONT),
                     Log("stopping", f"{svc.name} sent SIGTERM on shutdown")]
    effects: list = [CancelTimer()] if svc.state is State.PENDING else []
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
    # PENDING: no process yet.
    (S.PENDING, E.SPAWNED): spawned,
    (S.PENDING, E.SPAWN_FAILED): spawn_failed,
    (S.PENDING, E.DUE): start_due,
    (S.PENDING, E.EXITED): ignore,  # a previous process's late report
    (S.PENDING, E.STOPPED_SEEN): ignore,
    (S.PENDING, E.CONTINUED_SEEN): ignore,
    (S.PENDING, E.GRACE_EXPIRED): ignore,
    (S.PENDING, E.SUSPEND): refuse,
    (S.PENDING, E.RESUME): refuse,
    (S.PENDING, E.KILL): refuse,
    (S.PENDING, E.REMOVE): remove,
    (S.PENDING, E.CANCEL): cancel,
    (S.PENDING, E.TERMINATE): terminate,
    # RUNNING
    (S.RUNNING, E.SPAWNED): ignore,
    (S.RUNNING, E.SPAWN_FAILED): ignore,
    (S.RUNNING, E.DUE): ignore,
    (S.RUNNING, E.EXITED): exited,
    (S.RUNNING, E.STOPPED_SEEN): seen_stopped,
    (S.RUNNING, E.CONTINUED_SEEN): ignore,
    (S.RUNNING, E.GRACE_EXPIRED): ignore,
    (S.RUNNING, E.SUSPEND): suspend,
    (S.RUNNING, E.RESUME): refuse,
    (S.RUNNING, E.KILL): kill,
    (S.RUNNING, E.REMOVE): remove,
    (S.RUNNING, E.CANCEL): refuse,
    (S.RUNNING, E.TERMINATE): terminate,
    # STOPPED
    (S.STOPPED, E.SPAWNED): ignore,
    (S.STOPPED, E.SPAWN_FAILED): ignore,
    (S.STOPPED, E.DUE): ignore,
    (S.STOPPED, E.EXITED): exited,
    (S.STOPPED, E.STOPPED_SEEN): ignore,
    (S.STOPPED, E.CONTINUED_SEEN): seen_continued,
    (S.STOPPED, E.GRACE_EXPIRED): ignore,
    (S.STOPPED, E.SUSPEND): refuse,
    (S.STOPPED, E.RESUME): resume,
    (S.STOPPED, E.KILL): kill,
    (S.STOPPED, E.REMOVE): remove,
    (S.STOPPED, E.CANCEL): refuse,
    (S.STOPPED, E.TERMINATE): terminate,
    # STOPPING: SIGTERM sent on shutdown.
    (S.STOPPING, E.SPAWNED): ignore,
    (S.STOPPING, E.SPAWN_FAILED): ignore,
    (S.STOPPING, E.DUE): ignore,
    (S.STOPPING, E.EXITED): exited_while_stopping,
    (S.STOPPING, E.STOPPED_SEEN): ignore,
    (S.STOPPING, E.CONTINUED_SEEN): ignore,
    (S.STOPPING, E.GRACE_EXPIRED): grace_expired,
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
    (S.KILLED, E.GRACE_EXPIRED): ignore,
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
    (S.CRASHED, E.GRACE_EXPIRED): ignore,
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
    (S.EXITED, E.GRACE_EXPIRED): ignore,
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


def new_created(name: str, command: tuple[str, ...], *, restart_limit: int = 0,
                create_stopped: bool = False, delay: float = 0.0, cwd: str = "/",
                output: str = "journal", now: float, mono: float) -> tuple[Service, list]:
    """A service to be started by us: PENDING, with its first start either now or later."""
    svc = Service(name=name, command=command, restart_limit=restart_limit,
                  create_stopped=create_stopped, cwd=cwd, output=output)
    if delay > 0:
        svc = dataclasses.replace(svc, due=mono + delay, next_start=now + delay)
        return svc, [ArmTimer(mono + delay),
                     Log("scheduled", f"{name} scheduled to start in {delay:g} s")]
    return dataclasses.replace(svc, next_start=now), [Spawn(stopped=create_stopped)]


def new_opened(name: str, command: tuple[str, ...], pid: int, *, stopped: bool,
               started_at: float) -> tuple[Service, list]:
    """A running process that we adopt (``started_at``: when that process started)."""
    svc = Service(name=name, command=command, opened=True,
                  state=State.STOPPED if stopped else State.RUNNING, pid=pid, pids=(pid,),
                  alive=True, started_at=started_at)
    return svc, [Log("opened", f"{name} (pid {pid}) opened")]
