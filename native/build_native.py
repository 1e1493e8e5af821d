"""cffi API-mode (out-of-line) build of the native part of the daemon.

``pip install .`` (and ``pip install -e .``) compile this into ``supervisor._native``:
the signalfd/timerfd/inotify bindings and the service spawn in C (``native/spawn.c``: clone3 with
CLONE_PIDFD and CLONE_INTO_CGROUP). The declarations cffi checks against the compiler are
in ``native/native.h``; the Pythonic wrappers in ``supervisor/native.py`` and
``supervisor/process.py``.
"""

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent

ffibuilder = FFI()
ffibuilder.cdef((HERE / "native.h").read_text())
ffibuilder.set_source(
    "supervisor._native",
    """
    #include <signal.h>
    #include <time.h>
    #include <sys/inotify.h>
    #include <sys/signalfd.h>
    #include <sys/timerfd.h>
    """ + (HERE / "spawn.c").read_text(),
    extra_compile_args=["-O2", "-Wall", "-Wno-unused-function"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
