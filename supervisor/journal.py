"""Journal entries through systemd-python, with ``SYSLOG_IDENTIFIER=supervisor``.

Where no journald runs (or systemd-python is missing) entries go to stderr instead, one
line each; the daemon never fails because it cannot log.
"""

from __future__ import annotations

import contextlib
import os
import sys

try:
    from systemd import journal as _journal
except ImportError:  # pragma: no cover - systemd-python is a dependency
    _journal = None

IDENTIFIER = "supervisor"
JOURNAL_SOCKET = "/run/systemd/journal/socket"


class Journal:
    """Sends structured entries. Field names are upper-case journal fields."""

    def __init__(self, instance: int) -> None:
        self.instance = instance
        self.to_journal = _journal is not None and os.path.exists(JOURNAL_SOCKET)

    def send(self, message: str, priority: int = 6, **fields) -> None:
        clean = {k: v for k, v in fields.items() if v is not None}
        if self.to_journal:
            try:
                _journal.send(message, PRIORITY=priority, SYSLOG_IDENTIFIER=IDENTIFIER,
                              SUPERVISOR_INSTANCE=self.instance, **clean)
                return
            except OSError:
                pass  # journald went away: fall back for this entry
        extra = " ".join(f"{k}={v}" for k, v in clean.items())
        line = f"supervisor[{self.instance}] <{priority}> {message}  {extra}".rstrip()
        with contextlib.suppress(OSError, ValueError):
            print(line.replace("\n", "\\n"), file=sys.stderr, flush=True)
