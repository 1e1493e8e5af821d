"""Where an instance keeps its socket, lock and log (docs/reference.md, "Paths and environment")."""

from __future__ import annotations

import os

INSTANCES = range(100)


def runtime_dir() -> str:
    explicit = os.environ.get("SUPERVISOR_RUNTIME_DIR")
    if explicit:
        return explicit
    if os.geteuid() == 0:
        return "/run/supervisor"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "supervisor")
    return f"/tmp/supervisor-{os.geteuid()}"


def ensure_runtime_dir() -> str:
    """Create the runtime directory (only its owner may write it) and return it."""
    path = runtime_dir()
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def socket_path(instance: int, base: str | None = None) -> str:
    return os.path.join(base or runtime_dir(), f"{instance}.sock")


def lock_path(instance: int, base: str | None = None) -> str:
    return os.path.join(base or runtime_dir(), f"{instance}.lock")


def state_path(instance: int, base: str | None = None) -> str:
    return os.path.join(base or runtime_dir(), f"{instance}.state.json")


def log_path(instance: int, base: str | None = None) -> str:
    return os.path.join(base or runtime_dir(), f"{instance}.log")


def parse_instance(text: str | int | None) -> int:
    """The instance number, or ValueError with a clear sentence."""
    if text is None:
        return 0
    try:
        n = int(text)
    except (TypeError, ValueError):
        raise ValueError(f"instance must be a number from 0 to 99, not {text!r}") from None
    if n not in INSTANCES:
        raise ValueError(f"instance must be from 0 to 99, not {n}")
    return n
