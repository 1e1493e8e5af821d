"""Services found running in the instance's cgroups with no record of them to trust.

A daemon that dies leaves its services running, each in its own cgroup (``svc-<name>``),
and its state file, which says what each one is. Where that file is missing, or cannot be
trusted in whole or in part (it is set aside), a cgroup of ours with processes in it that
no service claims is still a service of this instance: it is taken back, never killed
(docs/design.md, "Nothing read back is trusted"). Only the cgroup tree is read, which
nobody but root and this daemon can write: not a word of the file set aside is used.

Its process is the oldest in the cgroup that leads a session (the one the daemon spawned,
with setsid; what it started came later, in its session). Where none does, that process
ended while no daemon watched, and what it left is not the service: it is killed as any
process no service claims, as it would have been had the daemon seen the end. Its name is
the cgroup's (``svc-<name>``, or ``svc-<name>~<k>`` for a later start). It is taken back
as what the config file declares under its name, where it does: a created service,
RUNNING, that ``apply`` then finds unchanged. Otherwise it is taken back *opened*, as
``open-service`` takes a process: watched, stopped, suspended, signalled, but never
started again, for how to start it was in the file that is gone. Either way the cgroup
stays its own: when that process ends, what it left there goes too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from supervisor import machine, process, state
from supervisor.machine import Service, State


def name_of(cgroup: str, taken: set[str]) -> str | None:
    """The service that cgroup ``svc-...`` was made for: ``svc-web`` and ``svc-web~3``
    are web's (``~`` is in no service's name), ``svc-web.3`` is web.3's. None: that
    name is taken (a service taken back already), or is no service's name."""
    rest = cgroup[len("svc-"):]
    base, tilde, k = rest.rpartition("~")
    name = base if tilde and k.isdigit() else rest
    return name if name not in taken and machine.name_problem(name) is None else None


def entries(cgroups, taken: set[str], declared: Callable[[], dict[str, Service]],
            now: float, claimed: set[str] = frozenset()) -> list[state.Stored]:
    """What :meth:`Shell.take_back` takes for each cgroup of ``cgroups`` that holds
    processes and names no service of ``taken`` (which it extends): its service, start
    ticks of its process, cgroup and pid; a cgroup of ``claimed`` is a service's taken
    back already (``svc-web.2``: web's, after a restart), never found again. ``declared()``: the
    config file's services by name, as made (asked only once something is found: a
    boot's start, with no state file, is not slowed)."""
    found = []
    made: dict[str, Service] | None = None  # declared(), once asked
    dirs = set(cgroups.dirs())
    for cgroup in sorted(dirs - claimed):
        aged = [(ticks, pid) for pid in cgroups.pids(cgroup)
                if process.session_of(pid) == pid  # its own session: what we spawned
                and (ticks := state.start_ticks(pid)) is not None]
        name = name_of(cgroup, taken) if aged else None
        if name is None:
            continue
        ticks, pid = min(aged)
        stopped = bool(process.is_stopped(pid))
        started = process.start_time(pid) or now
        if made is None:
            made = declared()
        svc = made.get(name)
        if svc is not None:
            svc = dataclasses.replace(
                svc, state=State.STOPPED if stopped else State.RUNNING, pid=pid,
                alive=True, started_at=started, next_start=None, due=None)
        else:
            command = tuple(process.cmdline(pid)) or (process.comm(pid),)
            svc, _ = machine.new_opened(name, command, pid, stopped=stopped,
                                        started_at=started)
        taken.add(name)
        found.append(state.Stored(svc, ticks, cgroup, (pid,)))
    return found
