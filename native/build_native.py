"""cffi API-mode (out-of-line) build of the signalfd/timerfd bindings.

``pip install .`` (and ``pip install -e .``) compile this into ``supervisor._native``.
Only declarations live here; the Pythonic wrappers are in ``supervisor/native.py``.
"""

from pathlib import Path

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef((Path(__file__).with_name("native.h")).read_text())
ffibuilder.set_source(
    "supervisor._native",
    """
    #include <signal.h>
    #include <time.h>
    #include <sys/signalfd.h>
    #include <sys/timerfd.h>
    """,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
