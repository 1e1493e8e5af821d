"""Unit tests of the pure lifecycle state machine (supervisor/machine.py), no processes.

Every (State, Ev) pair has an explicit entry; commands are refused exactly where
docs/reference.md says; exits are classified as its "Statuses" says; the effects come in
the right order; and a hypothesis state machine drives random event sequences through ``step``.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import signal

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from supervisor import machine, protocol
from supervisor.machine import (
    TABLE,
    ArmTimer,
    CancelTimer,
    Ev,
    Event,
    Forget,
    Log,
    Refused,
    Reject,
    Service,
    Signal,
    Spawn,
    State,
    new_created,
    new_opened,
    step,
)

NOW = 1_700_000_000.0  # wall clock
MONO = 5_000.0  # CLOCK_BOOTTIME

STATUSES = {"PENDING", "RUNNING", "STOPPED", "KILLED", "CRASHED", "EXITED"}
FACTS = (Ev.SPAWNED, Ev.SPAWN_FAILED, Ev.DUE, Ev.EXITED, Ev.STOPPED_SEEN, Ev.CONTINUED_SEEN,
         Ev.STOP_TIMEOUT, Ev.CLOCK_CHANGED)
COMMANDS = (Ev.CREATE, Ev.OPEN, Ev.SUSPEND, Ev.RESUME, Ev.KILL, Ev.REMOVE, Ev.CANCEL,
            Ev.TERMINATE, Ev.STOP, Ev.START, Ev.RESTART, Ev.SIGNAL, Ev.DECLARE)
# docs/reference.md "Statuses": KILLED is the end by these signals, not restarted by -r K
KILLED_BY = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE)
# ... CRASHED (or restarted) after a core-dump signal or a non-zero exit code.
CRASHED_BY = (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL)
# docs/reference.md "Commands": the states from which each command is accepted.
ALLOWED = {
    Ev.CREATE: {State.NEW},  # a service enters the table through CREATE or OPEN
    Ev.OPEN: {State.NEW},
    Ev.SUSPEND: {State.RUNNING},
    Ev.RESUME: {State.STOPPED},
    Ev.KILL: {State.RUNNING, State.STOPPED, State.STOPPING},
    Ev.CANCEL: {State.PENDING},
    Ev.REMOVE: set(State),
    Ev.TERMINATE: set(State),
    Ev.STOP: set(State) - {State.NEW},  # one that does not run: nothing to do
    Ev.START: set(State) - {State.NEW},  # one that runs: nothing to do
    Ev.RESTART: set(State) - {State.NEW},
    Ev.SIGNAL: {State.RUNNING, State.STOPPED, State.STOPPING},
    Ev.DECLARE: set(State),  # as steps give it: no definition (no longer declared)
}
# an opened process was never ours to start: it is not started again once it ended
OPENED_REFUSED = {Ev.RESTART: set(State),
                  Ev.START: {State.PENDING, State.STOPPING, State.KILLED, State.CRASHED,
                             State.EXITED}}


def allowed(kind: Ev, svc: Service) -> bool:
    if svc.opened and svc.state in OPENED_REFUSED.get(kind, ()):
        return False
    return svc.state in ALLOWED[kind]
LIFECYCLE_LOGS = {"started", "restarted", "crashed", "killed", "exited", "stopped",
                  "continued", "removed"}


# ---- helpers -------------------------------------------------------------------------------


def created(*, delay: float = 0.0, restart_limit: int = 0, create_stopped: bool = False,
            name: str = "svc") -> Service:
    svc, _ = new_created(name, ("/bin/prog", "arg"), restart_limit=restart_limit,
                         create_stopped=create_stopped, delay=delay, now=NOW, mono=MONO)
    return svc


def running(pid: int = 100, **kw) -> Service:
    svc, _ = step(created(**kw), Event(Ev.SPAWNED, pid=pid), NOW + 1, MONO + 1)
    assert svc.state is State.RUNNING
    return svc


def opened(pid: int = 200, *, stopped: bool = False) -> Service:
    svc, _ = new_opened("adopted", ("/usr/bin/thing",), pid, stopped=stopped,
                        started_at=NOW - 50)
    return svc


def in_state(state: State, *, opened_: bool = False) -> Service:
    """A plausible service in ``state`` (for the table-wide tests)."""
    svc = opened() if opened_ else running()
    if state is State.PENDING:
        return created(delay=3.0)
    alive = state in (State.RUNNING, State.STOPPED, State.STOPPING)
    return dataclasses.replace(svc, state=state, alive=alive)


def signals(effects) -> list[int]:
    return [e.signo for e in effects if isinstance(e, Signal)]


def logs(effects) -> list[str]:
    return [e.event for e in effects if isinstance(e, Log)]


def exit_ev(*, code: int | None = None, sig: int | None = None) -> Event:
    return Event(Ev.EXITED, code=code, signal=sig)


# ---- the table -----------------------------------------------------------------------------


def test_table_has_exactly_every_state_event_pair():
    expected = set(itertools.product(State, Ev))
    assert set(TABLE) == expected
    assert len(TABLE) == len(State) * len(Ev)
    assert all(callable(h) for h in TABLE.values())


def test_facts_and_commands_partition_the_events():
    assert set(FACTS) | set(COMMANDS) == set(Ev)
    assert not set(FACTS) & set(COMMANDS)


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.name)
@pytest.mark.parametrize("kind", FACTS, ids=lambda e: e.name)
def test_facts_are_never_refused(state, kind):
    # A fact is something that happened; the machine may ignore it, never refuse it.
    assert TABLE[(state, kind)] is not machine.refuse


@pytest.mark.parametrize(
    ("state", "opened_"),
    [(s, o) for s in State for o in (False, True) if not (o and s is State.PENDING)],
    ids=lambda v: v.name if isinstance(v, State) else ("opened" if v else "created"),
)
@pytest.mark.parametrize("kind", COMMANDS, ids=lambda e: e.name)
def test_commands_refused_exactly_where_spec_says(kind, state, opened_):
    svc = in_state(state, opened_=opened_)
    before = dataclasses.replace(svc)
    ev = Event(kind, signal=signal.SIGUSR1 if kind is Ev.SIGNAL else None)
    if allowed(kind, svc):
        step(svc, ev, NOW + 10, MONO + 10)  # does not raise
    else:
        with pytest.raises(Refused) as info:
            step(svc, ev, NOW + 10, MONO + 10)
        assert info.value.code == "bad-state"
        assert info.value.code in protocol.ERRORS
        assert svc.name in str(info.value)
        assert svc == before  # no change


def test_refused_carries_the_status_users_see():
    with pytest.raises(Refused, match="is RUNNING: cannot resume"):
        step(running(), Event(Ev.RESUME), NOW, MONO)
    # a stopping service shows RUNNING, from which a suspend is allowed: the why instead
    # (never the internal state's name)
    svc = dataclasses.replace(running(), state=State.STOPPING)
    with pytest.raises(Refused, match=r"is being stopped: cannot suspend it$"):
        step(svc, Event(Ev.SUSPEND), NOW, MONO)


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.name)
def test_declare_changes_the_flag_and_nothing_else(state):
    svc = in_state(state)
    new, effects = step(svc, Event(Ev.DECLARE, definition='{"command": ["/bin/prog"]}'),
                        NOW + 10, MONO + 10)
    assert effects == []
    assert new.declared and new.definition == '{"command": ["/bin/prog"]}'
    assert dataclasses.replace(new, declared=False, definition=None) == svc
    back, effects = step(new, Event(Ev.DECLARE), NOW + 11, MONO + 11)
    assert effects == [] and not back.declared and back.definition is None


def test_an_opened_process_cannot_be_declared():
    with pytest.raises(Refused, match="opened"):
        step(opened(), Event(Ev.DECLARE, definition="{}"), NOW, MONO)


def test_autostart_false_waits_pending_for_a_start():
    svc, effects = new_created("idle", ("/bin/prog",), autostart=False, now=NOW, mono=MONO)
    assert svc.state is State.PENDING and svc.due is None and svc.pid is None
    assert not any(isinstance(e, Spawn | ArmTimer) for e in effects)
    assert step(svc, Event(Ev.DUE), NOW + 1, MONO + 1) == (svc, [])  # no timer starts it
    _, effects = step(svc, Event(Ev.START), NOW + 2, MONO + 2)
    assert any(isinstance(e, Spawn) for e in effects)


def test_stopping_shows_as_running():
    assert State.STOPPING.status == "RUNNING"
    assert {s.status for s in State} == STATUSES


# ---- create ------------------------------------------------------------------------------


@pytest.mark.parametrize("create_stopped", [False, True])
def test_create_immediate_spawns_at_once(create_stopped):
    svc, effects = new_created("web", ("/bin/web", "-v"), restart_limit=2,
                               create_stopped=create_stopped, now=NOW, mono=MONO)
    assert effects == [Spawn(stopped=create_stopped)]
    assert svc.state is State.NEW  # until the spawn's outcome is known
    assert svc.status == "PENDING"
    assert svc.pid is None
    assert svc.restarts == 0
    assert svc.restart_limit == 2
    assert svc.next_start == NOW
    assert svc.due is None
    assert svc.command == ("/bin/web", "-v")
    assert not svc.opened
    assert not svc.alive


@pytest.mark.parametrize("create_stopped", [False, True])
def test_create_delayed_arms_a_timer(create_stopped):
    svc, effects = new_created("web", ("/bin/web",), delay=2.5,
                               create_stopped=create_stopped, now=NOW, mono=MONO)
    assert [e for e in effects if not isinstance(e, Log)] == [ArmTimer(due=MONO + 2.5)]
    assert not any(isinstance(e, Spawn) for e in effects)
    assert svc.state is State.PENDING
    assert svc.due == MONO + 2.5
    assert svc.next_start == NOW + 2.5
    assert svc.pid is None

    svc, effects = step(svc, Event(Ev.DUE), NOW + 2.5, MONO + 2.5)
    assert effects == [Spawn(stopped=create_stopped)]
    assert svc.state is State.PENDING
    assert svc.due is None


def test_fractional_delay():
    svc, effects = new_created("x", ("/bin/x",), delay=0.125, now=NOW, mono=MONO)
    assert ArmTimer(MONO + 0.125) in effects
    assert svc.next_start == NOW + 0.125


# ---- spawned -----------------------------------------------------------------------------


def test_spawned_makes_it_running():
    svc, effects = step(created(), Event(Ev.SPAWNED, pid=4242), NOW + 1, MONO + 1)
    assert svc.state is State.RUNNING
    assert svc.pid == 4242
    assert svc.alive
    assert svc.started_at == NOW + 1
    assert svc.next_start is None
    assert svc.due is None
    assert logs(effects) == ["started"]
    assert not signals(effects)


def test_spawned_stopped_makes_it_stopped():
    svc, effects = step(created(create_stopped=True), Event(Ev.SPAWNED, pid=7, stopped=True),
                        NOW, MONO)
    assert svc.state is State.STOPPED
    assert svc.pid == 7
    assert svc.alive
    assert logs(effects) == ["started"]
    # and resume-service lets it run
    svc, effects = step(svc, Event(Ev.RESUME), NOW, MONO)
    assert svc.state is State.RUNNING
    assert signals(effects) == [signal.SIGCONT]


def test_a_first_start_that_cannot_spawn_refuses_the_create():
    # decided here, not undone by the shell: the create fails and nothing is left of it
    svc, effects = step(created(), Event(Ev.SPAWN_FAILED, error="/bin/prog: ENOEXEC"),
                        NOW, MONO)
    assert effects == [CancelTimer(), Forget(),
                       Reject("spawn-failed", "cannot start /bin/prog: ENOEXEC")]
    assert svc.pid is None  # it never had a process


@pytest.mark.parametrize("restart_limit", [0, 3])
def test_a_restart_that_cannot_spawn_is_retried_with_back_off(restart_limit):
    # EAGAIN, ENOMEM, a missing file: often passing, so retried whatever the policy (s6's
    # trystart), with a delay that doubles; never CRASHED for good on the first miss
    svc = running(restart_limit=3)
    svc, _ = step(svc, exit_ev(sig=signal.SIGSEGV), NOW, MONO)
    svc = dataclasses.replace(svc, restart_limit=restart_limit)
    delays = []
    for i in range(4):
        svc, effects = step(svc, Event(Ev.SPAWN_FAILED, error="EAGAIN"), NOW + i, MONO + i)
        assert svc.state is State.PENDING, svc
        assert svc.error == "EAGAIN"
        assert not svc.alive
        [arm] = [e for e in effects if isinstance(e, ArmTimer)]
        delays.append(arm.due - (MONO + i))
        assert logs(effects) == ["crashed"]
        svc, effects = step(svc, Event(Ev.DUE), NOW + i, MONO + i)
        assert Spawn() in effects
    assert delays[0] >= machine.SPAWN_RETRY
    assert delays[1:] == [d * 2 for d in delays[:-1]]
    svc, _ = step(svc, Event(Ev.SPAWNED, pid=555), NOW + 9, MONO + 9)
    assert svc.state is State.RUNNING and svc.pid == 555


def test_spawn_failures_count_for_the_start_limit():
    svc = running(restart_limit=None)
    svc = dataclasses.replace(svc, start_limit=machine.StartLimit(2, 60.0))
    svc, _ = step(svc, exit_ev(code=1), NOW, MONO)
    svc, effects = step(svc, Event(Ev.SPAWN_FAILED, error="ENOMEM"), NOW + 1, MONO + 1)
    assert svc.state is State.PENDING  # 2 failures within 60 s: allowed
    svc, effects = step(svc, Event(Ev.SPAWN_FAILED, error="ENOMEM"), NOW + 2, MONO + 2)
    assert svc.state is State.CRASHED
    assert "start limit" in next(e for e in effects if isinstance(e, Log)).message
    # it shows why (the spawn), not the exit code of the run before the failed starts
    assert svc.error == "ENOMEM" and svc.exit_code is None and svc.signal is None


def test_pids_history_across_restarts():
    svc = running(pid=100, restart_limit=5)
    all_logs = []
    for pid in (101, 102, 103):
        svc, effects = step(svc, exit_ev(sig=signal.SIGSEGV), NOW, MONO)
        assert svc.state is State.PENDING
        assert Spawn() in effects
        svc, effects = step(svc, Event(Ev.SPAWNED, pid=pid), NOW, MONO)
        all_logs += logs(effects)
        assert svc.pid == pid
    assert svc.restarts == 3
    assert all_logs == ["restarted"] * 3


# ---- suspend / resume / outside changes ---------------------------------------------------


def test_suspend_and_resume_signal_the_process():
    svc, effects = step(running(), Event(Ev.SUSPEND), NOW, MONO)
    assert svc.state is State.STOPPED
    assert signals(effects) == [signal.SIGSTOP]
    assert logs(effects) == ["stopped"]
    svc, effects = step(svc, Event(Ev.RESUME), NOW, MONO)
    assert svc.state is State.RUNNING
    assert signals(effects) == [signal.SIGCONT]
    assert logs(effects) == ["continued"]
    assert svc.pid == 100


@pytest.mark.parametrize("make", [running, opened], ids=["created", "opened"])
def test_stop_and_continue_from_outside(make):
    svc, effects = step(make(), Event(Ev.STOPPED_SEEN), NOW, MONO)
    assert svc.state is State.STOPPED
    assert logs(effects) == ["stopped"]
    assert not signals(effects)
    svc, effects = step(svc, Event(Ev.CONTINUED_SEEN), NOW, MONO)
    assert svc.state is State.RUNNING
    assert logs(effects) == ["continued"]
    assert not signals(effects)


def test_repeated_observations_are_ignored():
    svc = running()
    assert step(svc, Event(Ev.CONTINUED_SEEN), NOW, MONO) == (svc, [])
    stopped = dataclasses.replace(svc, state=State.STOPPED)
    assert step(stopped, Event(Ev.STOPPED_SEEN), NOW, MONO) == (stopped, [])


# ---- close-service -----------------------------------------------------------------------


@pytest.mark.parametrize("suspended", [False, True])
def test_close_sends_sigkill_and_never_restarts(suspended):
    svc = running(restart_limit=3)
    if suspended:
        svc, _ = step(svc, Event(Ev.SUSPEND), NOW, MONO)
    svc, effects = step(svc, Event(Ev.KILL), NOW, MONO)
    assert svc.state is State.KILLED
    assert signals(effects) == [signal.SIGKILL]
    assert logs(effects) == ["killed"]
    # the process is then reaped: still KILLED, how it ended recorded, no restart
    svc, effects = step(svc, exit_ev(sig=signal.SIGKILL), NOW, MONO)
    assert svc.state is State.KILLED
    assert svc.signal == signal.SIGKILL
    assert not svc.alive
    assert svc.restarts == 0
    assert not any(isinstance(e, Spawn) for e in effects)


def test_close_opened_service_kills_it():
    svc, effects = step(opened(), Event(Ev.KILL), NOW, MONO)
    assert svc.state is State.KILLED
    assert signals(effects) == [signal.SIGKILL]


# ---- exits, as docs/reference.md "Statuses" says ---------------------------------------


@pytest.mark.parametrize("restart_limit", [0, 3])
@pytest.mark.parametrize("suspended", [False, True])
def test_exit_code_zero_is_exited(restart_limit, suspended):
    svc = running(restart_limit=restart_limit)
    if suspended:
        svc = dataclasses.replace(svc, state=State.STOPPED)
    svc, effects = step(svc, exit_ev(code=0), NOW, MONO)
    assert svc.state is State.EXITED
    assert svc.exit_code == 0
    assert svc.signal is None
    assert not svc.alive
    assert svc.restarts == 0
    assert logs(effects) == ["exited"]
    assert not any(isinstance(e, Spawn) for e in effects)


@pytest.mark.parametrize("restart_limit", [0, 3])
@pytest.mark.parametrize("sig", KILLED_BY, ids=lambda s: signal.Signals(s).name)
def test_kill_signals_are_killed_never_restarted(sig, restart_limit):
    svc, effects = step(running(restart_limit=restart_limit), exit_ev(sig=sig), NOW, MONO)
    assert svc.state is State.KILLED
    assert svc.signal == sig
    assert svc.restarts == 0
    assert logs(effects) == ["killed"]
    assert not any(isinstance(e, Spawn) for e in effects)


FAILURES = [{"sig": s} for s in CRASHED_BY] + [{"code": c} for c in (1, 2, 127, 255)]


def _failure_id(kw):
    return signal.Signals(kw["sig"]).name if "sig" in kw else f"code{kw['code']}"


@pytest.mark.parametrize("failure", FAILURES, ids=_failure_id)
def test_failure_without_restarts_is_crashed(failure):
    svc, effects = step(running(), exit_ev(**failure), NOW, MONO)
    assert svc.state is State.CRASHED
    assert svc.exit_code == failure.get("code")
    assert svc.signal == failure.get("sig")
    assert not svc.alive
    assert logs(effects) == ["crashed"]
    assert not any(isinstance(e, Spawn) for e in effects)


@pytest.mark.parametrize("failure", FAILURES, ids=_failure_id)
def test_failure_with_restarts_left_restarts_at_once(failure):
    svc, effects = step(running(restart_limit=1), exit_ev(**failure), NOW + 3, MONO + 3)
    assert svc.state is State.PENDING
    assert svc.restarts == 1
    assert Spawn(stopped=False) in effects
    assert "crashed" in logs(effects)
    assert svc.next_start == NOW + 3
    svc, effects = step(svc, Event(Ev.SPAWNED, pid=101), NOW + 3, MONO + 3)
    assert svc.state is State.RUNNING
    assert logs(effects) == ["restarted"]
    # the restart used up the only one: the next failure is final
    svc, effects = step(svc, exit_ev(**failure), NOW + 4, MONO + 4)
    assert svc.state is State.CRASHED
    assert svc.restarts == 1
    assert not any(isinstance(e, Spawn) for e in effects)


def test_restart_limit_is_exact():
    svc = running(restart_limit=3)
    for n in range(1, 4):
        svc, effects = step(svc, exit_ev(code=1), NOW, MONO)
        assert (svc.state, svc.restarts) == (State.PENDING, n)
        assert Spawn() in effects
        svc, _ = step(svc, Event(Ev.SPAWNED, pid=100 + n), NOW, MONO)
    svc, effects = step(svc, exit_ev(code=1), NOW, MONO)
    assert svc.state is State.CRASHED
    assert svc.restarts == 3
    assert svc.pid == 103


def test_stopped_service_that_crashes_is_restarted():
    svc = dataclasses.replace(running(restart_limit=1), state=State.STOPPED)
    svc, effects = step(svc, exit_ev(sig=signal.SIGSEGV), NOW, MONO)
    assert svc.state is State.PENDING
    assert Spawn() in effects


@given(
    how=st.one_of(
        st.builds(dict, code=st.integers(0, 255)),
        st.builds(dict, sig=st.sampled_from(KILLED_BY + CRASHED_BY)),
    ),
    restart_limit=st.integers(0, 5),
    restarts=st.integers(0, 5),
    suspended=st.booleans(),
)
def test_exit_classification_property(how, restart_limit, restarts, suspended):
    restarts = min(restarts, restart_limit)
    svc = dataclasses.replace(running(restart_limit=restart_limit), restarts=restarts)
    if suspended:
        svc = dataclasses.replace(svc, state=State.STOPPED)
    new, effects = step(svc, exit_ev(**how), NOW, MONO)
    code, sig = how.get("code"), how.get("sig")
    if sig is None and code == 0:
        expected = State.EXITED
    elif sig in KILLED_BY:
        expected = State.KILLED
    elif restarts < restart_limit:
        expected = State.PENDING
    else:
        expected = State.CRASHED
    assert new.state is expected
    assert (Spawn() in effects) == (expected is State.PENDING)
    assert new.restarts == restarts + (expected is State.PENDING)
    assert new.restarts <= restart_limit
    assert new.exit_code == code and new.signal == sig
    assert not new.alive


# ---- opened services -------------------------------------------------------------------------


@pytest.mark.parametrize("stopped", [False, True])
def test_open_adopts_a_running_process(stopped):
    svc, effects = new_opened("db", ("/usr/bin/db", "--x"), 321, stopped=stopped,
                              started_at=NOW - 100)
    assert svc.state is (State.STOPPED if stopped else State.RUNNING)
    assert svc.opened
    assert svc.alive
    assert svc.pid == 321
    assert svc.started_at == NOW - 100
    assert svc.restarts == 0
    assert not any(isinstance(e, Spawn | Signal) for e in effects)


@pytest.mark.parametrize("stopped", [False, True])
def test_opened_exit_is_exited_with_unknown_code(stopped):
    svc, effects = step(opened(stopped=stopped), exit_ev(), NOW, MONO)
    assert svc.state is State.EXITED
    assert svc.exit_code is None
    assert svc.signal is None
    assert not svc.alive
    assert logs(effects) == ["exited"]
    assert not any(isinstance(e, Spawn) for e in effects)


def test_opened_service_is_never_restarted():
    svc = dataclasses.replace(opened(), restart_limit=5)  # even if it somehow had a limit
    svc, effects = step(svc, exit_ev(), NOW, MONO)
    assert svc.state is State.EXITED
    assert not any(isinstance(e, Spawn) for e in effects)


# ---- remove / cancel ------------------------------------------------------------------------


@pytest.mark.parametrize("state", [State.RUNNING, State.STOPPED, State.STOPPING])
def test_remove_live_created_kills_then_forgets(state):
    svc = dataclasses.replace(running(), state=state)
    _, effects = step(svc, Event(Ev.REMOVE), NOW, MONO)
    kinds = [type(e) for e in effects]
    assert signals(effects) == [signal.SIGKILL]
    assert Forget in kinds
    assert kinds.index(Signal) < kinds.index(Forget)
    assert "removed" in logs(effects)
    assert kinds[0] is CancelTimer  # a recurring service has its next start armed


@pytest.mark.parametrize("state", [State.RUNNING, State.STOPPED])
def test_remove_opened_forgets_without_a_signal(state):
    svc = dataclasses.replace(opened(), state=state)
    _, effects = step(svc, Event(Ev.REMOVE), NOW, MONO)
    assert not signals(effects)
    assert Forget() in effects
    assert "removed" in logs(effects)


@pytest.mark.parametrize("state", [State.EXITED, State.CRASHED, State.KILLED])
def test_remove_dead_service_just_forgets(state):
    svc = dataclasses.replace(running(), state=state, alive=False)
    _, effects = step(svc, Event(Ev.REMOVE), NOW, MONO)
    assert not signals(effects)
    assert Forget() in effects


def test_remove_pending_cancels_its_timer():
    _, effects = step(created(delay=5), Event(Ev.REMOVE), NOW, MONO)
    assert CancelTimer() in effects
    assert Forget() in effects
    assert not signals(effects)


def test_cancel_pending_cancels_timer_and_forgets():
    svc = created(delay=60)
    _, effects = step(svc, Event(Ev.CANCEL), NOW, MONO)
    assert [e for e in effects if not isinstance(e, Log)] == [CancelTimer(), Forget()]
    assert logs(effects) == ["removed"]
    assert not signals(effects)


@pytest.mark.parametrize("state", [s for s in State if s is not State.PENDING])
def test_cancel_refused_unless_pending(state):
    svc = in_state(state)
    with pytest.raises(Refused):
        step(svc, Event(Ev.CANCEL), NOW, MONO)


# ---- instance shutdown ------------------------------------------------------------------------


@pytest.mark.parametrize("state", [State.RUNNING, State.STOPPED])
def test_terminate_live_created_sends_sigterm_and_sigcont(state):
    svc = dataclasses.replace(running(), state=state)
    new, effects = step(svc, Event(Ev.TERMINATE), NOW, MONO)
    assert new.state is State.STOPPING
    assert new.status == "RUNNING"
    assert signals(effects) == [signal.SIGTERM, signal.SIGCONT]
    assert Forget() not in effects


@pytest.mark.parametrize("state", [State.RUNNING, State.STOPPED])
def test_terminate_opened_releases_untouched(state):
    svc = dataclasses.replace(opened(), state=state)
    new, effects = step(svc, Event(Ev.TERMINATE), NOW, MONO)
    assert not signals(effects)
    assert Forget() in effects
    assert new.state is state


def test_terminate_pending_cancels_and_forgets():
    _, effects = step(created(delay=9), Event(Ev.TERMINATE), NOW, MONO)
    assert CancelTimer() in effects
    assert Forget() in effects
    assert not signals(effects)


@pytest.mark.parametrize("state", [State.EXITED, State.CRASHED, State.KILLED])
def test_terminate_dead_service_forgets(state):
    svc = dataclasses.replace(running(), state=state, alive=False)
    _, effects = step(svc, Event(Ev.TERMINATE), NOW, MONO)
    assert Forget() in effects
    assert not signals(effects)


def test_shutdown_kills_after_the_grace_then_the_exit_ends_it():
    svc, effects = step(running(restart_limit=3), Event(Ev.TERMINATE, timeout=5.0), NOW, MONO)
    assert svc.state is State.STOPPING and svc.stopping == "shutdown"
    assert ArmTimer(MONO + 5.0, slot="stop") in effects  # the daemon's grace
    # a second shutdown request changes nothing
    assert step(svc, Event(Ev.TERMINATE, timeout=5.0), NOW, MONO) == (svc, [])
    new, effects = step(svc, Event(Ev.STOP_TIMEOUT), NOW + 5, MONO + 5)
    assert signals(effects) == [signal.SIGKILL]
    assert "killed" in logs(effects)
    new, effects = step(new, exit_ev(sig=signal.SIGKILL), NOW + 5, MONO + 5)
    assert new.state is State.KILLED
    assert not new.alive
    assert CancelTimer(slot="stop") in effects
    assert not any(isinstance(e, Spawn) for e in effects)


def test_shutdown_waits_a_service_own_stop_timeout():
    svc = dataclasses.replace(running(), stop_timeout=30.0, stop_signal=signal.SIGINT)
    svc, effects = step(svc, Event(Ev.TERMINATE, timeout=5.0), NOW, MONO)
    assert signals(effects) == [signal.SIGINT, signal.SIGCONT]
    assert ArmTimer(MONO + 30.0, slot="stop") in effects


def test_stopping_exit_by_sigterm_is_killed_not_restarted():
    svc, _ = step(running(restart_limit=3), Event(Ev.TERMINATE), NOW, MONO)
    svc, effects = step(svc, exit_ev(sig=signal.SIGTERM), NOW, MONO)
    assert svc.state is State.KILLED
    assert not any(isinstance(e, Spawn) for e in effects)


@pytest.mark.parametrize("state", [s for s in State if s is not State.STOPPING])
def test_stop_timeout_outside_stopping_is_ignored(state):
    svc = in_state(state)
    assert step(svc, Event(Ev.STOP_TIMEOUT), NOW, MONO) == (svc, [])


# ---- stop / start / restart / signal (docs/reference.md "Lifecycle verbs") ---------------


def always(**kw) -> Service:
    return dataclasses.replace(running(), restart_mode="always", restart_limit=None,
                               start_limit=machine.StartLimit(5, 10.0), **kw)


@pytest.mark.parametrize("state", [State.RUNNING, State.STOPPED])
def test_stop_sends_the_stop_signal_then_ends_exited_never_restarted(state):
    svc = dataclasses.replace(always(), state=state)
    svc, effects = step(svc, Event(Ev.STOP), NOW, MONO)
    assert svc.state is State.STOPPING and svc.status == "RUNNING"
    # to its process group, then SIGCONT so that a stopped one acts on it (as systemd)
    assert [e for e in effects if isinstance(e, Signal)] == [Signal(signal.SIGTERM),
                                                               Signal(signal.SIGCONT)]
    assert ArmTimer(MONO + machine.STOP_TIMEOUT, slot="stop") in effects
    svc, effects = step(svc, exit_ev(code=0), NOW + 1, MONO + 1)
    assert svc.state is State.EXITED and svc.exit_code == 0
    assert svc.exited_at == NOW + 1
    assert CancelTimer(slot="stop") in effects
    assert not any(isinstance(e, Spawn | ArmTimer) for e in effects)  # policy "always"


def test_stop_ended_by_its_signal_is_exited_with_that_signal():
    svc, _ = step(always(), Event(Ev.STOP), NOW, MONO)
    svc, effects = step(svc, exit_ev(sig=signal.SIGTERM), NOW, MONO)
    assert (svc.state, svc.signal) == (State.EXITED, signal.SIGTERM)
    assert not any(isinstance(e, Spawn) for e in effects)


def test_stop_timeout_escalates_to_sigkill_and_ends_killed():
    svc = dataclasses.replace(always(), stop_signal=signal.SIGINT, stop_timeout=2.5)
    svc, effects = step(svc, Event(Ev.STOP), NOW, MONO)
    assert signals(effects) == [signal.SIGINT, signal.SIGCONT]
    assert ArmTimer(MONO + 2.5, slot="stop") in effects
    svc, effects = step(svc, Event(Ev.STOP_TIMEOUT), NOW + 2.5, MONO + 2.5)
    assert effects[0] == Signal(signal.SIGKILL)  # to the group, and to its cgroup
    assert svc.state is State.STOPPING and svc.killing
    svc, effects = step(svc, exit_ev(sig=signal.SIGKILL), NOW + 3, MONO + 3)
    assert svc.state is State.KILLED
    assert not any(isinstance(e, Spawn) for e in effects)


@pytest.mark.parametrize("end, final", [
    (exit_ev(sig=signal.SIGTERM), State.EXITED),  # its stop signal got there first
    (exit_ev(code=0), State.EXITED),  # it exited on its own meanwhile
    (exit_ev(sig=signal.SIGKILL), State.KILLED),
    (Event(Ev.EXITED), State.KILLED),  # how it ended is not knowable: SIGKILL was sent
])
def test_a_stop_is_killed_only_where_sigkill_ended_it(end, final):
    svc = dataclasses.replace(always(), stop_timeout=0.0)
    svc, _ = step(svc, Event(Ev.STOP), NOW, MONO)
    svc, effects = step(svc, Event(Ev.STOP_TIMEOUT), NOW, MONO)
    assert signals(effects)[0] == signal.SIGKILL and svc.killing
    svc, effects = step(svc, end, NOW, MONO)
    assert svc.state is final
    assert logs(effects) == ["killed" if final is State.KILLED else "exited"]


def test_stop_calls_off_a_pending_restart():
    svc = dataclasses.replace(always(), restart_delay=5.0)
    svc, effects = step(svc, exit_ev(code=1), NOW, MONO)
    assert svc.state is State.PENDING and svc.due == MONO + 5.0
    svc, effects = step(svc, Event(Ev.STOP), NOW + 1, MONO + 1)
    assert svc.state is State.EXITED and svc.due is None
    assert CancelTimer() in effects
    # a late firing of the timer starts nothing
    assert step(svc, Event(Ev.DUE), NOW + 5, MONO + 5) == (svc, [])


@pytest.mark.parametrize("state", [State.EXITED, State.KILLED, State.CRASHED])
def test_stop_of_an_ended_service_does_nothing(state):
    svc = dataclasses.replace(running(), state=state, alive=False)
    assert step(svc, Event(Ev.STOP), NOW, MONO) == (svc, [])


def test_restart_stops_then_starts_with_a_fresh_count():
    svc = dataclasses.replace(running(restart_limit=3), restarts=2, starts=(MONO,))
    svc, effects = step(svc, Event(Ev.RESTART), NOW, MONO)
    assert svc.state is State.STOPPING and svc.stopping == "restart"
    assert signals(effects) == [signal.SIGTERM, signal.SIGCONT]
    svc, effects = step(svc, exit_ev(sig=signal.SIGTERM), NOW + 1, MONO + 1)
    assert Spawn() in effects and svc.state is State.PENDING
    assert (svc.restarts, svc.starts) == (0, ())
    svc, effects = step(svc, Event(Ev.SPAWNED, pid=777), NOW + 1, MONO + 1)
    assert (svc.state, svc.pid) == (State.RUNNING, 777)
    assert svc.command == running().command  # the definition is kept


@pytest.mark.parametrize("kind", [Ev.START, Ev.RESTART])
@pytest.mark.parametrize("state", [State.EXITED, State.KILLED, State.CRASHED])
def test_start_or_restart_of_an_ended_service_starts_it_now(kind, state):
    svc = dataclasses.replace(running(restart_limit=2), state=state, alive=False, restarts=2)
    svc, effects = step(svc, Event(kind), NOW, MONO)
    assert Spawn() in effects and svc.restarts == 0 and svc.state is State.PENDING


def test_start_of_a_pending_service_starts_it_now():
    svc, effects = step(created(delay=60), Event(Ev.START), NOW, MONO)
    assert effects == [CancelTimer(), Spawn()]
    assert svc.due is None


@pytest.mark.parametrize("state", [State.RUNNING, State.STOPPED])
def test_start_of_a_service_that_runs_does_nothing(state):
    svc = dataclasses.replace(running(), state=state)
    assert step(svc, Event(Ev.START), NOW, MONO) == (svc, [])


def test_a_stop_under_way_takes_another_goal():
    svc, _ = step(running(), Event(Ev.STOP), NOW, MONO)
    svc, effects = step(svc, Event(Ev.START), NOW, MONO)  # start once stopped
    assert effects == [] and svc.stopping == "restart"
    svc, effects = step(svc, exit_ev(sig=signal.SIGTERM), NOW, MONO)
    assert Spawn() in effects
    svc, _ = step(running(), Event(Ev.RESTART), NOW, MONO)
    svc, _ = step(svc, Event(Ev.STOP), NOW, MONO)  # no start after all
    svc, effects = step(svc, exit_ev(code=0), NOW, MONO)
    assert svc.state is State.EXITED and not any(isinstance(e, Spawn) for e in effects)


def test_opened_services_are_stopped_but_never_started():
    svc, effects = step(opened(), Event(Ev.STOP), NOW, MONO)
    assert svc.state is State.STOPPING
    assert signals(effects) == [signal.SIGTERM, signal.SIGCONT]
    svc, _ = step(svc, exit_ev(), NOW, MONO)
    assert svc.state is State.EXITED
    for kind in (Ev.START, Ev.RESTART):
        with pytest.raises(Refused, match="opened"):
            step(svc, Event(kind), NOW, MONO)
    with pytest.raises(Refused):
        step(opened(), Event(Ev.RESTART), NOW, MONO)


def test_signal_goes_to_the_process_alone():
    svc = running()
    new, effects = step(svc, Event(Ev.SIGNAL, signal=signal.SIGHUP), NOW, MONO)
    assert new == svc
    assert [e for e in effects if isinstance(e, Signal)] == [Signal(signal.SIGHUP, group=False)]
    with pytest.raises(Refused, match="no process"):
        step(created(delay=5), Event(Ev.SIGNAL, signal=signal.SIGHUP), NOW, MONO)


# ---- restart policy: systemd's Restart= (docs/reference.md "Restart policy") -------------

ENDS = {"exit 0": {"code": 0}, "exit 1": {"code": 1}, "SIGKILL": {"sig": signal.SIGKILL},
        "SIGTERM": {"sig": signal.SIGTERM}, "SIGPIPE": {"sig": signal.SIGPIPE},
        "SIGSEGV": {"sig": signal.SIGSEGV}}
RESTARTED = {  # mode -> the ends after which it restarts
    "on-crash": {"exit 1", "SIGSEGV"},  # the seed's -r K alone
    "on-failure": {"exit 1", "SIGSEGV", "SIGKILL"},  # SIGKILL: the OOM killer's signal
    "always": set(ENDS),
    "never": set(),
}


@pytest.mark.parametrize("mode", list(RESTARTED))
@pytest.mark.parametrize("end", list(ENDS))
def test_restart_modes(mode, end):
    svc = dataclasses.replace(running(), restart_mode=mode, restart_limit=None)
    svc, effects = step(svc, exit_ev(**ENDS[end]), NOW, MONO)
    assert (Spawn() in effects) == (end in RESTARTED[mode]), (mode, end, svc.state)


def test_always_restarting_a_quick_exit_ends_crashed_at_the_start_limit():
    # --restart always /bin/true: the start limit counts starts, successes included
    svc = always()  # 1 start so far
    starts = 1
    for i in range(20):
        svc, effects = step(svc, exit_ev(code=0), NOW + i * 0.01, MONO + i * 0.01)
        if svc.state is State.CRASHED:
            break
        svc, _ = step(svc, Event(Ev.SPAWNED, pid=1000 + i), NOW, MONO + i * 0.01)
        starts += 1
    assert svc.state is State.CRASHED
    assert starts == 5
    assert "start limit" in next(e for e in effects if isinstance(e, Log)).message


def test_the_start_limit_holds_whatever_the_back_off():
    # --restart always --restart-delay 1 --start-limit 5/30s /usr/bin/false: the doubling
    # delays (1, 2, 4, 8 s...) do not space the starts out of the window
    svc = dataclasses.replace(always(), restart_delay=1.0, start_limit=machine.StartLimit(
        5, 30.0))
    mono = MONO + 1
    for i in range(10):
        svc, effects = step(svc, exit_ev(code=1), NOW, mono)
        if svc.state is State.CRASHED:
            break
        [arm] = [e for e in effects if isinstance(e, ArmTimer)]
        mono = arm.due
        svc, effects = step(svc, Event(Ev.DUE), NOW, mono)
        svc, _ = step(svc, Event(Ev.SPAWNED, pid=1000 + i), NOW, mono)
    assert svc.state is State.CRASHED, svc


def test_start_resets_the_start_limit():
    svc = always()
    svc = dataclasses.replace(svc, state=State.CRASHED, alive=False,
                              starts=(MONO,) * 5)
    svc, effects = step(svc, Event(Ev.START), NOW, MONO + 1)
    assert Spawn() in effects and svc.starts == ()


# ---- logs ----------------------------------------------------------------------------------


def test_lifecycle_log_event_names():
    seen: list[Log] = []

    def go(svc, kind, **kw):
        new, effects = step(svc, Event(kind, **kw), NOW, MONO)
        seen.extend(e for e in effects if isinstance(e, Log))
        return new

    svc = go(created(restart_limit=1), Ev.SPAWNED, pid=1)  # started
    svc = go(svc, Ev.SUSPEND)  # stopped
    svc = go(svc, Ev.RESUME)  # continued
    svc = go(svc, Ev.EXITED, signal=signal.SIGABRT)  # crashed
    svc = go(svc, Ev.SPAWNED, pid=2)  # restarted
    svc = go(svc, Ev.KILL)  # killed
    go(svc, Ev.REMOVE)  # removed
    go(go(running(), Ev.EXITED, code=0), Ev.REMOVE)  # exited
    assert {log.event for log in seen} >= LIFECYCLE_LOGS
    for log in seen:
        assert log.message
        assert 0 <= log.priority <= 7


# ---- purity --------------------------------------------------------------------------------


def test_machine_imports_neither_os_nor_time():
    tree = ast.parse(inspect.getsource(machine))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            imported.add("__import__")
    assert not imported & {"os", "time", "__import__"}, imported
    assert "os" not in vars(machine) and "time" not in vars(machine)


# ---- random event sequences ---------------------------------------------------------------

# every event but the two a service is born with (the shell sends them once, to a NEW one)
event_kinds = st.sampled_from([e for e in Ev if e not in (Ev.CREATE, Ev.OPEN)])
exits = st.one_of(
    st.just({}),  # not knowable
    st.builds(dict, code=st.integers(0, 255)),
    st.builds(dict, signal=st.sampled_from(KILLED_BY + CRASHED_BY + (signal.SIGUSR1,))),
)


class MachineSequences(RuleBasedStateMachine):
    """Any sequence of facts and commands: only Refused is ever raised, and the invariants
    of the service object hold after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.pids = itertools.count(1000)
        self.now = NOW
        self.mono = MONO
        self.svc: Service | None = None
        self.forgotten = 0

    def _new(self, data) -> None:
        if data.draw(st.booleans(), label="opened"):
            self.svc, effects = new_opened(
                "o", ("/bin/o",), next(self.pids), stopped=data.draw(st.booleans()),
                started_at=self.now)
        else:
            self.svc, effects = new_created(
                "c", ("/bin/c",), restart_limit=data.draw(st.integers(0, 3)),
                create_stopped=data.draw(st.booleans()),
                delay=data.draw(st.sampled_from([0.0, 0.5, 30.0])), now=self.now,
                mono=self.mono)
        self._check_effects(effects)

    def _check_effects(self, effects, kind: Ev | None = None) -> None:
        assert isinstance(effects, list)
        for e in effects:
            assert isinstance(e, Spawn | Signal | ArmTimer | CancelTimer | Forget | Reject
                              | Log), e
            if isinstance(e, Signal):
                assert e.signo in (signal.SIGSTOP, signal.SIGCONT, signal.SIGKILL,
                                   signal.SIGTERM) or kind is Ev.SIGNAL
        if self.svc.opened:
            # we never start or restart a process we did not create, and closing the
            # instance lets it go untouched
            assert not any(isinstance(e, Spawn) for e in effects)
            if kind is Ev.TERMINATE:
                assert signal.SIGTERM not in signals(effects)

    @initialize(data=st.data())
    def start(self, data) -> None:
        self._new(data)

    @rule(kind=event_kinds, stopped=st.booleans(), how=exits, dt=st.floats(0, 100),
          data=st.data())
    def event(self, kind, stopped, how, dt, data) -> None:
        self.now += dt
        self.mono += dt
        ev = Event(kind, pid=next(self.pids) if kind is Ev.SPAWNED else None,
                   stopped=stopped, error="boom" if kind is Ev.SPAWN_FAILED else None,
                   timeout=5.0 if kind is Ev.TERMINATE else None,
                   **(how if kind is Ev.EXITED else
                      {"signal": signal.SIGUSR1} if kind is Ev.SIGNAL else {}))
        if self.svc.opened and kind in (Ev.SPAWNED, Ev.SPAWN_FAILED, Ev.DUE):
            return  # the shell never reports these for an opened service
        if self.svc.opened and kind is Ev.EXITED:
            ev = Event(Ev.EXITED)  # a pidfd cannot tell how a non-child ended
        before = self.svc
        try:
            new, effects = step(before, ev, self.now, self.mono)
        except Refused:
            assert kind in COMMANDS
            assert not allowed(kind, before)
            assert self.svc is before and self.svc == dataclasses.replace(before)
            return
        self.svc = new
        self._check_effects(effects, kind)
        # its pid is the last process the shell reported, and never one it made up
        assert new.pid == before.pid or (kind is Ev.SPAWNED and new.pid == ev.pid)
        if kind in COMMANDS:
            assert allowed(kind, before)
        if any(isinstance(e, Forget) for e in effects):
            self.forgotten += 1
            self._new(data)  # the shell dropped it; go on with a new one

    @invariant()
    def a_process_state_is_alive(self) -> None:
        if self.svc.state in (State.RUNNING, State.STOPPED, State.STOPPING):
            assert self.svc.alive, self.svc

    @invariant()
    def status_is_a_spec_status(self) -> None:
        assert self.svc.status in STATUSES

    @invariant()
    def restarts_within_limit(self) -> None:
        assert 0 <= self.svc.restarts <= self.svc.restart_limit

    @invariant()
    def stopping_has_a_goal(self) -> None:
        assert (self.svc.state is State.STOPPING) == (self.svc.stopping is not None)

    @invariant()
    def pid_is_none_only_before_first_start(self) -> None:
        svc = self.svc
        if svc.pid is None:
            # PENDING (or NEW) before its first start, even one that could not spawn and
            # waits to retry -- or CRASHED when such retries hit the start limit.
            assert svc.status == "PENDING" or (
                svc.state is State.CRASHED and svc.error is not None), svc

    @invariant()
    def not_started_means_not_alive(self) -> None:
        if self.svc.pid is None:
            assert not self.svc.alive


MachineSequences.TestCase.settings = settings(max_examples=120, stateful_step_count=40,
                                              deadline=None)
TestMachineSequences = MachineSequences.TestCase


def test_a_run_that_outlasts_many_intervals_costs_one_skip_then_the_exit_arms_the_next():
    from supervisor.schedule import Schedule

    every = Schedule.every(0.01, MONO, wall=False)
    svc, effects = new_created("tick", ("/bin/slow",), schedule=every, now=NOW, mono=MONO)
    assert Spawn() in effects
    svc, _ = step(svc, Event(Ev.SPAWNED, pid=10), NOW, MONO)
    assert svc.due == MONO + 0.01
    # the first firing while it runs: skipped, logged once, and nothing armed after it
    svc, effects = step(svc, Event(Ev.DUE), NOW + 0.01, MONO + 0.01)
    assert logs(effects) == ["skipped"] and not any(isinstance(e, ArmTimer) for e in effects)
    assert svc.due is None and svc.next_start is None and svc.state is State.RUNNING
    # no timer fires while it runs on; a stray one changes nothing
    assert step(svc, Event(Ev.DUE), NOW + 5, MONO + 5) == (svc, [])
    # it ends after 5.003 s: the next start is the next one on the grid after now
    svc, effects = step(svc, exit_ev(code=0), NOW + 5.003, MONO + 5.003)
    [arm] = [e for e in effects if isinstance(e, ArmTimer)]
    assert svc.state is State.PENDING
    assert arm.due == pytest.approx(MONO + 5.01) and svc.due == arm.due


@pytest.mark.parametrize("state", [State.PENDING, State.EXITED, State.CRASHED])
def test_a_start_now_of_a_recurring_service_keeps_its_next_start_on_the_schedule(state):
    """start-service of an --every/--cron service is an extra run: its next start stays
    where the schedule put it (the daemon re-arms from next_start after a reload or a
    restart; a next_start of "now" ran the job again, off schedule)."""
    from supervisor.schedule import Schedule

    every = Schedule.every(3600, MONO, wall=False)
    svc, _ = new_created("job", ("/bin/job",), schedule=every, now=NOW, mono=MONO)
    svc, _ = step(svc, Event(Ev.SPAWNED, pid=10), NOW, MONO)
    svc, _ = step(svc, exit_ev(code=0 if state is not State.CRASHED else 1), NOW + 1, MONO + 1)
    assert svc.state is State.PENDING and svc.next_start == pytest.approx(NOW + 3600)
    svc = dataclasses.replace(svc, state=state)
    svc, effects = step(svc, Event(Ev.START), NOW + 60, MONO + 60)
    assert Spawn() in effects and CancelTimer() not in effects
    svc, _ = step(svc, Event(Ev.SPAWNED, pid=11), NOW + 60, MONO + 60)
    assert svc.next_start == pytest.approx(NOW + 3600)
    assert svc.due == pytest.approx(MONO + 3600)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_the_fast_copy_is_dataclasses_replace(data):
    """machine._r (a copy through the slots' setters) makes what dataclasses.replace would."""
    svc = Service(name="x", command=("/bin/true",), pid=7, restarts=2, error="e")
    names = data.draw(st.sets(st.sampled_from(["pid", "restarts", "state", "alive",
                                               "error", "exit_code", "starts"])))
    values = {"pid": st.none() | st.integers(1, 1 << 22), "restarts": st.integers(0, 99),
              "state": st.sampled_from(list(State)), "alive": st.booleans(),
              "error": st.none() | st.text(max_size=5),
              "exit_code": st.none() | st.integers(0, 255),
              "starts": st.tuples(st.floats(0, 1e6))}
    changes = {name: data.draw(values[name]) for name in names}
    fast, slow = machine._r(svc, **changes), dataclasses.replace(svc, **changes)
    assert type(fast) is Service
    assert all(getattr(fast, f.name) == getattr(slow, f.name)
               for f in dataclasses.fields(Service))
    assert svc == Service(name="x", command=("/bin/true",), pid=7, restarts=2, error="e")
