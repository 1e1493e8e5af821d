"""The man page, supervisor(1), made from the usage text (supervisor/cli.py's docstring):
one text for ``--help``, docopt and ``man supervisor``.

``python -m supervisor.manpage > supervisor.1``; ``make install`` puts it in
``$(PREFIX)/share/man/man1``.
"""

from __future__ import annotations

import datetime
import re
import sys
import textwrap

SEE_ALSO = ("supervisor-daemon (the daemon itself: supervisor-daemon --help), "
            "journalctl(1), systemd.exec(5), systemd-socket-activate(1), "
            "and docs/reference.md in the source.")

FILES = [
    ("/run/supervisor (root), $XDG_RUNTIME_DIR/supervisor (a user)",
     "The runtime directory ($SUPERVISOR_RUNTIME_DIR when set); it must be the daemon's "
     "user's own and writable by no one else."),
    ("N.sock", "The control socket of instance N (0 to 99)."),
    ("N.state.json, N.state.json.log",
     "Instance N's services (the whole document, and one line a save since with the "
     "services changed): on disk before a change is answered; read back (and set aside "
     "when it is not valid) when the daemon starts again."),
]


def _escape(text: str) -> str:
    """Text as roff reads it: backslashes doubled, a leading dot or quote kept literal,
    hyphens that are minus signs in options and commands."""
    text = text.replace("\\", "\\e")
    text = re.sub(r"(?<![\w])-", r"\\-", text)
    if text.startswith((".", "'")):
        text = "\\&" + text
    return text


def _sections(doc: str) -> dict[str, list[str]]:
    """The docstring's parts: "title" (its first line), then each "Name:" section's lines,
    and "notes" for the paragraphs after the last section."""
    lines = doc.strip("\n").splitlines()
    parts: dict[str, list[str]] = {"title": [lines[0]]}
    name = "intro"
    for line in lines[1:]:
        heading = re.fullmatch(r"([A-Z][A-Za-z ]*):", line)
        if heading:
            name = heading[1].lower()
            parts[name] = []
        elif name in ("commands", "options") and line and not line.startswith(" "):
            name = "notes"
            parts.setdefault(name, []).append(line)
        else:
            parts.setdefault(name, []).append(line)
    return parts


def _entries(lines: list[str]) -> list[tuple[str, str]]:
    """A two-column section (a term, two spaces or more, its text; continued lines indented
    under the text) as (term, text) pairs."""
    entries: list[tuple[str, str]] = []
    for line in lines:
        if not line.strip():
            continue
        match = re.match(r"  (\S.*?)(?:\s{2,}(.*))?$", line)
        indented = len(line) - len(line.lstrip()) > 4
        if entries and (indented or match is None):
            term, text = entries[-1]
            entries[-1] = (term, f"{text} {line.strip()}".strip())
        elif match:
            entries.append((match[1], match[2] or ""))
    return entries


def _paragraphs(lines: list[str]) -> list[str]:
    text = "\n".join(lines).strip()
    return [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]


def render(doc: str, version: str, date: datetime.date | None = None) -> str:
    parts = _sections(doc)
    day = (date or datetime.date.today()).isoformat()
    out = [f'.TH SUPERVISOR 1 "{day}" "supervisor {version}" "User Commands"',
           ".SH NAME", "supervisor \\- " + _escape(parts["title"][0].split(": ", 1)[-1])]
    out.append(".SH SYNOPSIS")
    out.append(".nf")
    for line in parts.get("usage", []):
        if line.strip():
            for k, piece in enumerate(textwrap.wrap(line.strip(), 78, break_long_words=False,
                                                    break_on_hyphens=False)):
                out.append(_escape(("    " if k else "") + piece))
    out.append(".fi")
    out.append(".SH DESCRIPTION")
    out.append(_escape(
        "supervisor drives instances of supervisor-daemon, a process supervisor: it starts "
        "services and adopts running processes, restarts them by their policy, starts "
        "them on a schedule, stops them gracefully, and logs their output to the journal. "
        "Each instance (0 to 99) is a daemon of its own with its own control socket; "
        "every command names one with -i N (0 when not given)."))
    for title in ("commands", "options"):
        out.append(f".SH {title.upper()}")
        for term, text in _entries(parts.get(title, [])):
            out.extend([".TP", f"\\fB{_escape(term)}\\fR", _escape(text)])
    notes = _paragraphs(parts.get("notes", []))
    exits = [p for p in notes if p.startswith("Exit codes:")]
    for paragraph in (p for p in notes if p not in exits):
        out.extend([".PP", _escape(paragraph)])
    if exits:
        out.append(".SH EXIT STATUS")
        for code, meaning in re.findall(r"(\d) ([^;.]+)", exits[0].split(":", 1)[1]):
            out.extend([".TP", f"\\fB{code}\\fR", _escape(meaning.strip())])
    out.append(".SH FILES")
    for term, text in FILES:
        out.extend([".TP", _escape(term), _escape(text)])
    out.extend([".SH SEE ALSO", _escape(SEE_ALSO)])
    return "\n".join(out) + "\n"


def main() -> int:
    from supervisor import __version__, cli

    sys.stdout.write(render(cli.__doc__, __version__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
