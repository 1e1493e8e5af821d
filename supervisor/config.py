"""An instance's config file: its declared services (docs/reference.md, "Declared
services").

Instance N's file is ``$SUPERVISOR_CONFIG_DIR/<N>.toml``, else ``/etc/supervisor/<N>.toml``
for root, else ``$XDG_CONFIG_HOME/supervisor/<N>.toml`` (``~/.config``); every
``<N>.d/*.toml`` beside it is merged in, in name order (a service in two files is an
error). One table a service, ``[services.NAME]``, its keys create-service's long options
with ``_`` (see :data:`KEYS`). Read with the standard library's ``tomllib``, written with
``tomli_w``.

A table is checked here for its keys and their types and turned into its canonical form
(:func:`canonical`: defaults dropped, ``command`` a list): two tables that mean the same
are equal, which is how ``apply`` tells a changed service from an unchanged one. What
needs the system (the program is executable, the directory exists, the user is known) is
checked by the daemon, as for create-service. An error names the file, the line and the
key (:class:`ConfigError`).

The file is code the daemon runs: like the runtime dir, it is trusted only when it is
root's or the daemon's user's and nobody else may write it; the same holds for the
directories files are read from (its own and ``N.d``).
"""

from __future__ import annotations

import datetime
import errno
import math
import os
import re
import shlex
import stat
import tomllib

MAX_FILE = 16 << 20  # a config file's size at most: ~50,000 services of ~300 bytes

# key: (what it must be, for messages; the check, returning the canonical value or raising
# ValueError; its default, dropped from the canonical form)
_NUMBER = "a number of seconds >= 0"


def _number(v):
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
        raise ValueError(f"must be {_NUMBER}")
    return float(v)


def _count(v):
    from supervisor.machine import MAX_RESTARTS

    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_RESTARTS:
        raise ValueError(f"must be a whole number from 0 to {MAX_RESTARTS} (no limit: "
                         "restart = \"always\" or \"on-failure\" without restart_times)")
    return v


def _text(v):
    if not isinstance(v, str) or not v or "\0" in v:
        raise ValueError("must be a non-empty string")
    return v


def _flag(v):
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


def _command(v):
    if isinstance(v, str):
        try:
            v = shlex.split(v)
        except ValueError as exc:
            raise ValueError(f"cannot be split like a shell line: {exc}") from None
    if not isinstance(v, list) or not v or not all(isinstance(a, str) and "\0" not in a
                                                   for a in v) or not v[0]:
        raise ValueError("must be a non-empty list of strings (or one string, split like "
                         "a shell line)")
    return v


def _env(v):
    if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
        raise ValueError('must be a table of strings, such as { LANG = "C.UTF-8" }')
    for key in v:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"{key!r} is not a variable name (letters, digits and _)")
    return dict(sorted(v.items()))


def _path(v):
    v = _text(v)
    if not os.path.isabs(v):
        raise ValueError("must be an absolute path")
    return os.path.normpath(v)


def _output(v):
    v = _text(v)
    return v if v in ("journal", "null", "inherit") else _path(v)


def _restart(v):
    if v not in ("on-failure", "always", "never"):
        raise ValueError('must be "on-failure", "always" or "never"')
    return v


def _at(v):
    if isinstance(v, datetime.datetime | datetime.date | datetime.time):
        return v.isoformat()
    return _text(v)


def _every(v):
    """An interval, canonical: seconds ("1m30s" and 90 are one)."""
    from supervisor.schedule import parse_interval

    if isinstance(v, str):
        try:
            return parse_interval(v)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
    v = _number(v)
    if v <= 0:
        raise ValueError("must be > 0")
    return v


def _start_limit(v):
    """"K/T", canonical: [K, seconds]."""
    from supervisor.schedule import StartLimit

    try:
        limit = StartLimit.parse(_text(v))
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    return [limit.burst, limit.interval]


def _signal(v):
    """A signal, canonical: its number (TERM, SIGTERM, term and 15 are one)."""
    from supervisor.commands import CommandError, parse_signal

    if isinstance(v, bool) or not isinstance(v, str | int):
        raise ValueError('must be a signal name or number ("TERM", "SIGTERM", 15)')
    try:
        return parse_signal(v)
    except CommandError as exc:
        raise ValueError(exc.message) from None


KEYS = {
    "command": (_command, None),
    "restart": (_restart, None),
    "restart_times": (_count, None),
    "restart_delay": (_number, 0.0),
    "start_limit": (_start_limit, None),
    "delay": (_number, 0.0),
    "at": (_at, None),
    "every": (_every, None),
    "cron": (_text, None),
    "create_stopped": (_flag, False),
    "env": (_env, {}),
    "env_file": (_path, None),
    "output": (_output, "journal"),
    "cwd": (_path, "/"),
    "user": (_text, None),
    "stop_signal": (_signal, 15),
    "stop_timeout": (_number, None),
    "autostart": (_flag, True),
}


class ConfigError(ValueError):
    """``FILE:LINE: message``: what is wrong, and where."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")
        self.path, self.line = path, line


def canonical(table: dict) -> dict:
    """A service's table, checked, in its canonical form. ValueError("KEY: why")."""
    if not isinstance(table, dict):
        raise ValueError("a service is a table: [services.NAME]")
    out = {}
    for key, value in table.items():
        if key not in KEYS:
            raise ValueError(f"{key}: unknown key (known: {', '.join(KEYS)})")
        check, default = KEYS[key]
        try:
            value = check(value)
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
        if value != default:
            out[key] = value
    out = {key: out[key] for key in KEYS if key in out}  # one order: KEYS'
    if out.get("start_limit") == [5, 10.0] and "restart" in out and "restart_times" not in out:
        del out["start_limit"]  # the default where restarts are unlimited
    if "command" not in out:
        raise ValueError("command: missing (the program and its arguments)")
    if sum(k in out for k in ("delay", "at", "every", "cron")) > 1:
        raise ValueError(f"{[k for k in ('delay', 'at', 'every', 'cron') if k in out][1]}: "
                         "choose one of delay, at, every and cron")
    timed = [k for k in ("delay", "at", "every", "cron") if k in out]
    if out.get("autostart") is False and timed:
        raise ValueError(f"autostart: false (started by start-service only) takes no "
                         f"{timed[0]}: drop one of the two")
    return out


# ---- files --------------------------------------------------------------------------------


def path_of(instance: int, environ=None) -> str:
    """Instance ``instance``'s config file (it may not exist)."""
    env = os.environ if environ is None else environ
    base = env.get("SUPERVISOR_CONFIG_DIR")
    if not base:
        if os.geteuid() == 0:
            base = "/etc/supervisor"
        else:
            home = env.get("XDG_CONFIG_HOME") or os.path.join(
                env.get("HOME") or os.path.expanduser("~"), ".config")
            base = os.path.join(home, "supervisor")
    return os.path.join(os.path.abspath(base), f"{instance}.toml")


def files_of(instance: int, environ=None) -> list[str]:
    """The files that declare instance ``instance``'s services, in the order they merge:
    its file (where it exists), then ``<N>.d/*.toml`` by name."""
    main = path_of(instance, environ)
    found = [main] if os.path.lexists(main) else []
    drop_in = main[:-len(".toml")] + ".d"
    try:
        names = sorted(os.listdir(drop_in))
    except FileNotFoundError:
        names = None
    except OSError as exc:
        raise ConfigError(drop_in, None, exc.strerror or str(exc)) from None
    if found or names is not None:
        _check_dir(os.path.dirname(main))
    if names is None:
        return found
    _check_dir(drop_in)
    return found + [os.path.join(drop_in, n) for n in names
                    if n.endswith(".toml") and not n.startswith(".")]


def _check_dir(path: str) -> None:
    """A directory config files are read from must be trusted as the files are: another
    user who may write in it could put a file there (sshd's StrictModes, for the
    directory that holds them)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read it: {exc.strerror}") from None
    if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022:
        raise ConfigError(path, None, "not trusted: the directory must belong to root or to "
                          "the daemon's user, and nobody else may write in it (chmod go-w)")


def _read(path: str) -> str:
    """The text of a config file we may trust (see the module's docstring)."""
    drop_in = os.path.basename(os.path.dirname(path)).endswith(".d")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
                     | (os.O_NOFOLLOW if drop_in else 0))
    except OSError as exc:
        if drop_in and exc.errno == errno.ELOOP:
            raise ConfigError(path, None, "a symbolic link: a drop-in file must be a file "
                              "of its own (links are not followed)") from None
        raise ConfigError(path, None, f"cannot read it: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(path, None, "not a regular file")
        if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022:
            raise ConfigError(path, None, "not trusted: it must belong to root or to the "
                              "daemon's user, and nobody else may write it (chmod go-w)")
        if st.st_size > MAX_FILE:
            raise ConfigError(path, None, f"over {MAX_FILE >> 20} MiB")
        data = os.read(fd, MAX_FILE + 1)
    finally:
        os.close(fd)
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise ConfigError(path, None, f"not UTF-8 text (byte {exc.start})") from None


def parse(text: str, path: str) -> dict[str, tuple[dict, int | None]]:
    """The services of one file's text: name -> (canonical table, its line)."""
    from supervisor.machine import name_problem

    try:
        doc = tomllib.loads(text)
    except RecursionError:
        raise ConfigError(path, None, "not valid TOML: nested too deeply") from None
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        line = int(m.group(1)) if m else (text.count("\n") + 1 if "end of document" in str(exc)
                                          else None)
        raise ConfigError(path, line,
                          f"not valid TOML: {re.split(r' [(]at ', str(exc))[0]}") from None
    for key in doc:
        if key != "services":
            raise ConfigError(path, _line(text, None, key),
                              f"{key}: unknown key (services are [services.NAME] tables)")
    services = doc.get("services", {})
    if not isinstance(services, dict):
        raise ConfigError(path, _line(text, None, "services"),
                          "services: must be tables, [services.NAME]")
    out = {}
    headers = _headers(text)
    for name, table in services.items():
        why = name_problem(name)
        if why is not None:
            raise ConfigError(path, _line(text, name, None), why)
        try:
            out[name] = (canonical(table), headers.get(name) or _line(text, name, None))
        except ValueError as exc:
            key = str(exc).split(":")[0]
            line = _line(text, name, key if re.fullmatch(r"\w+", key) else None)
            raise ConfigError(path, line,
                              f"[services.{name}] {exc}") from None
    return out


def load(instance: int, environ=None) -> dict[str, tuple[dict, str]]:
    """Every service instance ``instance`` declares: name -> (canonical table, "FILE:LINE"
    where it is declared). ConfigError for the first thing wrong; no file: no services."""
    found: dict[str, tuple[dict, str]] = {}
    for path in files_of(instance, environ):
        for name, (table, line) in parse(_read(path), path).items():
            if name in found:
                raise ConfigError(path, line, f"[services.{name}] is declared already, at "
                                  f"{found[name][1]}")
            found[name] = (table, f"{path}:{line}")
    return found


def _code_lines(text: str) -> list[str]:
    """The lines of ``text``, those that begin inside a multi-line string blanked: text in
    a string that looks like a key or a table header is neither."""
    if '"""' not in text and "'''" not in text:  # no such string: every line as it is
        return text.splitlines()  # (the scan below costs ~13 ms for 1,000 services)
    out, i, n, mode = [], 0, len(text), None  # mode: None, '"', "'", '"""' or "'''"
    starts_inside = False
    line_start = 0
    while i <= n:
        if i == n or text[i] == "\n":
            out.append("" if starts_inside else text[line_start:i])
            if mode in ('"', "'"):
                mode = None  # a one-line string does not go on (the file parsed, so rare)
            line_start, starts_inside = i + 1, mode is not None
            i += 1
            continue
        c = text[i]
        if mode is None:
            if c == "#":
                while i < n and text[i] != "\n":
                    i += 1
                continue
            if text.startswith(('"""', "'''"), i):
                mode, i = text[i:i + 3], i + 3
                continue
            if c in "\"'":
                mode = c
        elif mode in ('"', '"""') and c == "\\":  # an escape: the next one is text
            i += 2
            continue
        elif len(mode) == 3 and text.startswith(mode, i):
            i += 3
            while i < n and text[i] == mode[0]:  # up to two quotes more belong to it
                i += 1
            mode = None
            continue
        elif len(mode) == 1 and c == mode:
            mode = None
        i += 1
    return out


def _line(text: str, service: str | None, key: str | None) -> int | None:
    """The line (1-based) of ``[services.SERVICE]`` or of ``key`` in it (``service`` None:
    a top-level key); None when it cannot be found. Only called for an error."""
    lines = _code_lines(text)
    keyed = re.compile(rf"\s*\[*\s*['\"]?{re.escape(key or '')}['\"]?\s*[=.\]]")
    if service is None:
        return next((i + 1 for i, ln in enumerate(lines) if keyed.match(ln)), None)
    quoted = "|".join(re.escape(q) for q in (service, f'"{service}"', f"'{service}'"))
    header = re.compile(rf"\s*\[\s*services\s*\.\s*(?:{quoted})\s*(?:\.\s*(\S+?)\s*)?\]")
    dotted = re.compile(rf"\s*(?:{quoted})\s*\.\s*['\"]?{re.escape(key or '')}['\"]?\s*[=.]")
    start, inside = None, False
    for i, ln in enumerate(lines):
        m = header.match(ln)
        if m:
            if key is None or m.group(1) == key:  # [services.N], or [services.N.env]
                return i + 1
            start = i if start is None else start
            inside = m.group(1) is None
            continue
        if ln.lstrip().startswith("["):
            inside = False
            continue
        if key is not None and ((inside and keyed.match(ln)) or dotted.match(ln)):
            return i + 1
    if start is not None:
        return start + 1
    named = re.compile(rf"\s*(?:{quoted})\s*[.=]")  # [services] with NAME.key or NAME = {...}
    return next((i + 1 for i, ln in enumerate(lines) if named.match(ln)), None)


def where_of(where: str, service: str, key: str | None) -> str:
    """``FILE:LINE`` of ``key`` in ``[services.SERVICE]`` (``where``: its table's
    ``FILE:LINE``), read again from the file; ``where`` itself when not found."""
    path = where.rsplit(":", 1)[0]
    if key is None:
        return where
    try:
        line = _line(_read(path), service, key)
    except ConfigError:
        return where
    return f"{path}:{line}" if line else where


def _headers(text: str) -> dict[str, int]:
    """The line of each ``[services.NAME]`` header, in one pass."""
    found: dict[str, int] = {}
    pattern = re.compile(r"\s*\[\s*services\s*\.\s*(\"[^\"]*\"|'[^']*'|[A-Za-z0-9_.@:+-]+?)\s*\]")
    for i, ln in enumerate(_code_lines(text)):
        m = pattern.match(ln)
        if m:
            found.setdefault(m.group(1).strip("\"'"), i + 1)
    return found


# ---- from tables to create-service, and back ------------------------------------------------


def create_args(name: str, table: dict, now: float) -> dict:
    """A canonical table as create-service's arguments (as the CLI sends them)."""
    import shutil

    from supervisor import schedule

    command = table["command"]
    path = command[0]
    if "/" not in path:
        path = shutil.which(path) or path
    args = {"name": name, "path": path, "args": command[1:]}
    if "start_limit" in table:
        burst, interval = table["start_limit"]
        args["start_limit"] = f"{burst}/{interval!r}"
    for key in ("restart", "restart_times", "restart_delay", "delay", "cron",
                "create_stopped", "env", "env_file", "output", "cwd", "user", "stop_signal",
                "stop_timeout", "autostart"):
        if key in table:
            args[key] = table[key]
    key = "at"  # what a ValueError("KEY: why") is about
    try:
        if "at" in table:
            args["at"] = schedule.parse_at(table["at"], now)
        key = "every"
        if "every" in table:
            every = table["every"]
            args["every"] = schedule.parse_interval(every) if isinstance(every, str) else every
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None
    return args


def table_of(svc) -> dict:
    """A created service's definition as a canonical table (what ``export`` writes)."""
    import signal as signals

    table: dict = {"command": list(svc.command)}
    if svc.restart_mode == "on-crash":
        if svc.restart_limit:
            table["restart_times"] = svc.restart_limit
    else:
        table["restart"] = svc.restart_mode
        if svc.restart_limit is not None:
            table["restart_times"] = svc.restart_limit
    if svc.restart_delay:
        table["restart_delay"] = float(svc.restart_delay)
    if svc.start_limit is not None and (svc.restart_limit is not None or svc.start_limit
                                        != _default_limit()):
        table["start_limit"] = f"{svc.start_limit.burst}/{svc.start_limit.interval!r}"
    sch = svc.schedule
    if sch is not None:
        if sch.kind == "once":
            table["at"] = datetime.datetime.fromtimestamp(sch.at).astimezone().isoformat()
        elif sch.kind == "every":
            table["every"] = sch.interval
        else:
            table["cron"] = sch.calendar.expr
    elif svc.delay:
        table["delay"] = float(svc.delay)
    if svc.create_stopped:
        table["create_stopped"] = True
    if svc.env:
        table["env"] = dict(sorted(svc.env))
    for key in ("env_file", "user"):
        if getattr(svc, key) is not None:
            table[key] = getattr(svc, key)
    if svc.output != "journal":
        table["output"] = svc.output
    if svc.cwd != "/":
        table["cwd"] = svc.cwd
    if svc.stop_signal != signals.SIGTERM:
        table["stop_signal"] = svc.stop_signal
    if svc.stop_timeout is not None:
        table["stop_timeout"] = float(svc.stop_timeout)
    if not svc.autostart:
        table["autostart"] = False
    return canonical(table)


def _default_limit():
    from supervisor.schedule import DEFAULT_START_LIMIT

    return DEFAULT_START_LIMIT


def readable(table: dict) -> dict:
    """A canonical table as a person writes it (signal names, intervals as text); it
    reads back (``canonical``) as the same table."""
    import signal as signals

    from supervisor.machine import signal_name
    from supervisor.schedule import format_interval

    out = dict(table)
    if "stop_signal" in out:
        signo = out["stop_signal"]
        out["stop_signal"] = (f"RTMIN+{signo - signals.SIGRTMIN}"
                              if signals.SIGRTMIN <= signo <= signals.SIGRTMAX
                              else signal_name(signo))
    if "every" in out:
        out["every"] = format_interval(out["every"])
    if "start_limit" in out:
        burst, interval = out["start_limit"]
        out["start_limit"] = f"{burst}/{format_interval(interval)}"
    return out


def dumps(tables: dict[str, dict], header: str = "") -> str:
    """The TOML text of ``{name: table}`` (``tomli_w``), ``header`` as comment lines first."""
    import tomli_w

    comment = "".join(f"# {ln}\n" if ln else "#\n" for ln in header.splitlines())
    return comment + tomli_w.dumps({"services": {n: readable(t) for n, t in tables.items()}})
