"""Shell completion, read from the usage text (supervisor/cli.py's docstring).

The bash and zsh scripts in ``completion/`` ask ``supervisor __complete CWORD WORD...``
(the words of the line, ``supervisor`` first, and the index of the one being completed);
the answer is one candidate a line, already filtered by what was typed, or one of three
directives the script turns into the shell's own completion: ``__files__``, ``__dirs__``,
``__commands__``. Service names and instance numbers are the live ones: a name from the
instance the line names (``-i N``, else 0), asked with a short timeout; nothing when it
does not run.
"""

from __future__ import annotations

import signal
import sys

FILES, DIRS, COMMANDS = "__files__", "__dirs__", "__commands__"

PRIORITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
OUTPUTS = ("journal", "null", "inherit")
RESTART_MODES = ("on-failure", "always", "never")


def _usage() -> tuple[dict[str, list[str]], dict[str, tuple[str, ...]], dict[str, int]]:
    """(usage line words by command, every spelling of each option, whether it takes a
    value), from the usage text."""
    from docopt import parse_options

    from supervisor import cli

    usage = cli.__doc__.split("Usage:\n", 1)[1].split("\n\n", 1)[0]
    lines: dict[str, list[str]] = {}
    for line in usage.splitlines():
        words = line.split()
        if len(words) > 1 and not words[1].startswith(("-", "(")):
            lines[words[1]] = words[2:]
    spellings: dict[str, tuple[str, ...]] = {}
    takes: dict[str, int] = {}
    for opt in parse_options(cli.__doc__):
        names = tuple(s for s in (opt.short, opt.longer) if s)
        for name in names:
            spellings[name] = names
            takes[name] = opt.argcount
    return lines, spellings, takes


def _options_of(words: list[str], spellings: dict[str, tuple[str, ...]]) -> list[str]:
    """The options a usage line names (``[-i N]``, ``[-e K=V]...``), every spelling."""
    found: list[str] = []
    for word in words:
        name = word.strip("[]().|").split("=")[0]
        if name.startswith("-") and name != "--":
            for spelling in spellings.get(name, (name,)):
                if spelling not in found:
                    found.append(spelling)
    return found


def _positionals(words: list[str]) -> list[str]:
    return [w.strip("[]().") for w in words
            if w.strip("[]().").startswith("<") and w.strip("[]().") != "<args>"]


def _instance(words: list[str]) -> int:
    for i, word in enumerate(words):
        value = None
        if word in ("-i", "--instance") and i + 1 < len(words):
            value = words[i + 1]
        elif word.startswith("--instance="):
            value = word[11:]
        elif word.startswith("-i") and len(word) > 2:
            value = word[2:]
        if value is not None and value.isascii() and value.isdigit():
            return int(value)
    return 0


def _instances() -> list[str]:
    import glob
    import os

    from supervisor import paths

    try:
        base = paths.runtime_dir()
    except Exception:
        return []
    stems = (os.path.basename(p)[:-5] for p in glob.glob(os.path.join(glob.escape(base),
                                                                      "*.sock")))
    return sorted((s for s in stems if s.isdigit()), key=int)


def _services(instance: int) -> list[str]:
    from supervisor.client import Client, SupervisorError

    try:
        with Client(instance, timeout=0.5) as c:
            return [s["name"] for s in c.list_supervisor()["services"]]
    except (SupervisorError, OSError, KeyError, TypeError):
        return []


def _value_of(option: str, spellings: dict[str, tuple[str, ...]]) -> list[str]:
    """Candidates for the value of ``option``."""
    names = set(spellings.get(option, (option,)))
    if names & {"-i", "--instance"}:
        return _instances()
    if names & {"--restart"}:
        return list(RESTART_MODES)
    if names & {"-o", "--output"}:
        return [*OUTPUTS, FILES]
    if names & {"--stop-signal"}:
        return _signals()
    if names & {"-p"}:
        return list(PRIORITIES)
    if names & {"--env-file"}:
        return [FILES]
    if names & {"-C", "--cwd"}:
        return [DIRS]
    if names & {"-u", "--user"}:
        import pwd

        return sorted({p.pw_name for p in pwd.getpwall()})
    return []


def _signals() -> list[str]:
    return [s.name[3:] for s in sorted(signal.Signals) if s.name.startswith("SIG")
            and not s.name.startswith("SIG_")]


def candidates(words: list[str], cword: int) -> list[str]:
    """What may stand at ``words[cword]`` (``words[0]`` is the program)."""
    lines, spellings, takes = _usage()
    current = words[cword] if cword < len(words) else ""
    before = words[1:cword]
    found: list[str]
    command, positional, after_path, i = None, [], False, 0
    while i < len(before):
        word = before[i]
        if command == "create-service" and after_path:
            positional.append(word)
        elif word == "--" and command == "create-service":
            after_path = bool(positional)
        elif word.startswith("-") and word != "-":
            if takes.get(word.split("=")[0]) and "=" not in word:
                i += 1
        elif command is None:
            command = word
        else:
            positional.append(word)
            if command == "create-service":
                after_path = True
        i += 1
    previous = before[-1] if before else ""
    if before and previous.startswith("-") and takes.get(previous) and not (
            command == "create-service" and after_path):
        found = _value_of(previous, spellings)
    elif command is None:
        found = (["-h", "--help", "--version"] if current.startswith("-")
                 else list(lines))
    elif command not in lines:
        found = []
    elif command == "create-service" and after_path:
        found = [FILES]  # the program's own words
    elif current.startswith("-"):
        found = _options_of(lines[command], spellings)
    else:
        names = _positionals(lines[command])
        repeats = any("<svc>..." in w for w in lines[command])
        slot = names[min(len(positional), len(names) - 1)] if names else None
        if slot is None or (len(positional) >= len(names) and not repeats):
            found = []
        elif slot == "<svc>":
            taken = set(positional)
            found = [n for n in _services(_instance(words)) if n not in taken]
        elif slot == "<signal>":
            found = _signals()
        elif slot == "<path>":
            found = [COMMANDS]
        else:
            found = []
    return [c for c in found if c in (FILES, DIRS, COMMANDS) or c.startswith(current)]


def main(argv: list[str]) -> int:
    """``supervisor __complete CWORD WORD...``: never fails, never prints an error."""
    try:
        cword = int(argv[0])
        words = argv[1:]
        for candidate in candidates(words, cword):
            print(candidate)
    except Exception:  # a shell completing must never see a traceback
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
