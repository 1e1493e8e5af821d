"""The runtime directory kept while the daemon runs (supervisor/control.py's
SocketKeeper, supervisor/rundir.py's RuntimeDir), with their real parts in this process:
a selector, a listening socket, inotify, the instance lock. The interleavings that a
concurrent ``rm -rf`` makes only now and then are made here every time."""

import os
import selectors
import shutil
import tempfile
import time

import pytest
from conftest import TIMEOUT

from supervisor.control import Server, SocketKeeper, bind_listener
from supervisor.lock import InstanceLock
from supervisor.rundir import RuntimeDir


@pytest.fixture
def kept(rundir, monkeypatch):
    """A kept directory as the daemon keeps it, files named as an instance 0's:
    ``(keeper, run_until, files, moved)``; ``keeper.restore`` may be wrapped; ``moved``
    lists the times the log relay was handed the directory again (its ``.out`` files)."""
    monkeypatch.setenv("SUPERVISOR_RUNTIME_DIR", rundir)
    sel = selectors.DefaultSelector()
    sock = os.path.join(rundir, "0.sock")
    state = [os.path.join(rundir, name) for name in ("0.state.json", "0.state.json.log")]
    lock = InstanceLock.take(rundir, 0, os.path.join(rundir, "0.lock"))
    said = []

    def save() -> bool:  # the state written anew: both its files
        for path in state:
            with open(path, "w") as f:
                f.write("{}\n")
        return True
    save()
    server = Server(sel, bind_listener(sock), lambda line, conn: b"", lambda n, code: b"")
    later, moved = [], []
    rdir = RuntimeDir(rundir, tuple(os.path.basename(p) for p in state),
                      log=lambda message, priority: said.append(message), lock=lambda: lock,
                      save=save, moved=lambda fd: moved.append(time.monotonic()),
                      move_log=lambda fd: False)
    keeper = SocketKeeper(server, sock, lambda m, p: said.append(m), rdir.keep,
                          lambda seconds, fn: later.append(fn))
    keeper.keep()

    def run_until(predicate, what):
        deadline = time.monotonic() + TIMEOUT
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {said}"
            for key, mask in sel.select(0.05):
                key.data(mask)
    yield keeper, run_until, [sock, lock.path, *state], moved
    keeper.close()
    rdir.close()
    server.close()
    lock.close()
    sel.close()


def after_each_look(keeper, then) -> list:
    """``then(k)`` run right after the daemon's k-th look at the directory (its
    ``restore``), as an ``rm -rf`` still going on would act; returns the looks' names."""
    restore, calls = keeper.restore, []

    def look_then(names):
        fd = restore(names)
        calls.append(names)
        then(len(calls))
        return fd
    keeper.restore = look_then
    return calls


def test_a_file_removed_while_the_directory_is_being_kept_is_made_again(kept):
    """An ``rm -rf`` goes on while the daemon makes its files again: a file it removes
    just after the daemon looked for it, before the directory was watched again, is made
    again all the same, and so is one removed after the last look. Before, the directory
    was watched only after it was looked at: that file stayed gone (CI saw the state file
    never made again, twice)."""
    keeper, run_until, files, _ = kept

    def removed(k: int) -> None:  # right after each look, by the rm still going on
        if k <= 2:
            os.unlink(files[2])
    calls = after_each_look(keeper, removed)
    os.unlink(files[1])  # the rm's first: the lock
    run_until(lambda: len(calls) >= 3 and all(os.path.exists(f) for f in files),
              f"{files} made again")


def test_an_output_file_removed_while_the_directory_is_being_kept_is_made_again(kept,
                                                                                 rundir):
    """A service's output file (``<N>.<name>.out``) removed by the ``rm -rf`` after the
    daemon was told of the first removal and before it watched again: the log relay is
    handed the directory all the same, and makes it again."""
    keeper, run_until, files, moved = kept
    out = os.path.join(rundir, "0.web.out")
    open(out, "w").close()
    removed = []

    def remove(k: int) -> None:
        if k == 1:
            os.unlink(out)
            removed.append(time.monotonic())
    after_each_look(keeper, remove)
    os.unlink(files[1])
    run_until(lambda: removed and any(t > removed[0] for t in moved),
              "the log relay to be handed the directory again")


def test_a_directory_replaced_while_it_is_being_kept_has_the_files_and_the_watch(kept,
                                                                                  rundir):
    """The directory itself is removed and made again by someone else between the
    daemon's look and its watch: the daemon's files are made in the new one, and it is
    the new one that is watched, so what is removed there later is made again too."""
    keeper, run_until, files, _ = kept

    def replaced(k: int) -> None:
        if k == 1:
            for name in os.listdir(rundir):
                os.unlink(os.path.join(rundir, name))
            os.rmdir(rundir)
            os.mkdir(rundir, 0o700)
    calls = after_each_look(keeper, replaced)
    os.unlink(files[2])
    run_until(lambda: len(calls) >= 3 and all(os.path.exists(f) for f in files),
              f"{files} made again in the new directory")
    os.unlink(files[3])  # told by the watch on the new directory
    run_until(lambda: os.path.exists(files[3]), "the state's log made again")


def test_the_lock_is_made_again_in_the_directory_held_not_whatever_is_at_its_path(kept):
    """The directory is swapped for another (someone else's) between the daemon's check
    that the one it holds is safe and the lock made again: the lock goes into the one held
    and checked, like the state and the socket; nothing of ours goes into the other.
    Before, the lock was made by its path, in the other directory."""
    keeper, _, files, _ = kept
    rdir = keeper.restore.__self__
    rundir = os.path.dirname(files[0])
    theirs, held = tempfile.mkdtemp(dir=os.path.dirname(rundir)), rundir + ".held"
    lock = rdir.lock

    def lock_after_a_swap():  # asked for right after the held directory was checked
        os.rename(rundir, held)
        os.rename(theirs, rundir)
        return lock()
    rdir.lock = lock_after_a_swap
    try:
        os.unlink(files[1])
        assert rdir.keep({os.path.basename(files[1])}) == rdir.fd
        assert os.listdir(rundir) == []
        assert sorted(os.listdir(held)) == sorted(os.path.basename(f) for f in files)
        assert os.path.samestat(os.stat(os.path.join(held, "0.lock")),
                                os.fstat(lock().file_fd))
    finally:
        shutil.rmtree(held, ignore_errors=True)
        shutil.rmtree(theirs, ignore_errors=True)
