"""The pidfd watcher: the one place where a watched process's pidfd is registered with the
loop, and, once it becomes readable, unregistered, reaped, closed and reported, in that
order (as CPython's ``PidfdChildWatcher`` and trio's ``_close_pidfd`` do in one place).

The daemon's services and the log relay both go through it, so an exit is reaped exactly
once, by the right party, and a pidfd is never left registered after it was closed.
Stop/continue reports of children (SIGCHLD) are matched to their process here too:
:meth:`PidfdWatcher.child` (see ``docs/design.md``, "Reaping").
"""

from __future__ import annotations

import functools
import selectors
from collections.abc import Callable

from supervisor import process
from supervisor.process import Proc

# on_exit(proc, exit code, killing signal): both None where the kernel cannot tell
OnExit = Callable[[Proc, "int | None", "int | None"], None]


class PidfdWatcher:
    def __init__(self, sel: selectors.BaseSelector) -> None:
        self.sel = sel
        self.procs: dict[int, Proc] = {}  # every watched process, by pid

    def watch(self, proc: Proc, on_exit: OnExit) -> None:
        """Report ``proc``'s end to ``on_exit`` (once, after it was reaped and its pidfd
        closed)."""
        self.procs[proc.pid] = proc
        self.sel.register(proc, selectors.EVENT_READ,
                          functools.partial(self._ready, proc, on_exit))

    def child(self, pid: int) -> Proc | None:
        """The watched child with this pid (for its stop/continue reports), or None."""
        proc = self.procs.get(pid)
        return proc if proc is not None and proc.child else None

    @property
    def children(self) -> int:
        """How many watched processes are our children (still to be reaped)."""
        return sum(1 for p in self.procs.values() if p.child)

    def release(self, proc: Proc) -> None:
        """Stop watching a process that is not ours to reap (an opened one we let go)."""
        if self.procs.get(proc.pid) is proc:
            del self.procs[proc.pid]
            self.sel.unregister(proc)
        proc.close()

    def _ready(self, proc: Proc, on_exit: OnExit, mask: int) -> None:
        self.sel.unregister(proc)
        del self.procs[proc.pid]
        try:
            code, signo = process.reap(proc)
        finally:
            proc.close()
        on_exit(proc, code, signo)

    def close(self) -> None:
        """Stop watching everything (the daemon is going away; children are not reaped)."""
        for proc in list(self.procs.values()):
            self.release(proc)
