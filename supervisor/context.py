"""A service's context beyond its command: its environment and who it runs as.

- environment: the daemon's (without what belongs to its own manager), then the lines of
  ``--env-file`` (read at each start, as systemd reads ``EnvironmentFile=``), then each
  ``--env K=V``; with ``--user``, ``USER``, ``LOGNAME``, ``HOME`` and ``SHELL`` of that
  user come first, so that the others may set them otherwise.
- ``--user USER[:GROUP]``: a name or a number for each; the groups are the user's own
  (initgroups), the group the given one or the user's primary one. Resolved at each start
  (the user database may change); only a daemon running as root may use it.
"""

from __future__ import annotations

import os
import re
import stat

from supervisor.process import Ids

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_ENV_FILE = 1 << 20


def env_pair(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` (``--env``) as a pair; ValueError with a sentence otherwise."""
    key, eq, value = text.partition("=")
    if not eq or not _KEY.fullmatch(key):
        raise ValueError(f"--env {text!r}: expected KEY=VALUE, KEY made of letters, digits "
                         "and _ (not starting with a digit)")
    if "\0" in value:
        raise ValueError(f"--env {key}: a value may not contain NUL")
    return key, value


def read_env_file(path: str) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of ``path`` (blank lines and ``#`` comments skipped; a value
    in matching single or double quotes is taken without them). OSError when it cannot be
    read, ValueError naming the line that is not such a line. Only a regular file is
    read: a FIFO or a device could block the daemon (opened without blocking, checked
    before any read)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path}: not a regular file")
        data = f.read(MAX_ENV_FILE + 1)
    if len(data) > MAX_ENV_FILE:
        raise ValueError(f"{path}: larger than 1 MiB")
    out: dict[str, str] = {}
    for number, raw in enumerate(data.decode("utf-8", "surrogateescape").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        key, eq, value = line.partition("=")
        key = key.strip()
        if not eq or not _KEY.fullmatch(key):
            raise ValueError(f"{path}:{number}: not KEY=VALUE: {raw[:60]!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if "\0" in value:  # no environment can carry it: it would cut the value short
            raise ValueError(f"{path}:{number}: a value may not contain NUL")
        out[key] = value
    return out


def resolve_user(spec: str) -> tuple[Ids, dict[str, str]]:
    """``USER[:GROUP]`` as ids, and the variables a login would set (USER, LOGNAME, HOME,
    SHELL). ValueError when the user or group does not exist."""
    import grp
    import pwd

    name, colon, group = spec.partition(":")
    if not name:
        raise ValueError("no user named (USER or USER:GROUP)")
    if colon and not group:
        raise ValueError("no group named after the ':' (USER or USER:GROUP)")
    try:
        pw = pwd.getpwuid(int(name)) if name.isascii() and name.isdigit() \
            else pwd.getpwnam(name)
    except (KeyError, OverflowError):
        raise ValueError(f"no such user: {name!r}") from None
    gid = pw.pw_gid
    if group:
        try:
            gid = grp.getgrgid(int(group)).gr_gid if group.isascii() and group.isdigit() \
                else grp.getgrnam(group).gr_gid
        except (KeyError, OverflowError):
            raise ValueError(f"no such group: {group!r}") from None
    groups = os.getgrouplist(pw.pw_name, gid)
    env = {"USER": pw.pw_name, "LOGNAME": pw.pw_name, "HOME": pw.pw_dir,
           "SHELL": pw.pw_shell or "/bin/sh"}
    return Ids(pw.pw_uid, gid, groups), env


def environment(base: dict[str, str], env: tuple[tuple[str, str], ...],
                env_file: str | None, user_env: dict[str, str] | None) -> dict[str, str]:
    """A service's environment (see the module doc). ``base`` itself when nothing is added:
    most services share it (and its encoded form)."""
    if not env and env_file is None and not user_env:
        return base
    out = dict(base)
    if user_env:
        out.update(user_env)
    if env_file is not None:
        out.update(read_env_file(env_file))
    out.update(env)
    return out
