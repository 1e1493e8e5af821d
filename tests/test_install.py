"""What `make install` puts on a machine, each part tried the way a user meets it: the man
page through man(1) and groff, bash completion through a real bash, zsh completion
through a real zsh, and the install itself into a prefix (slow: it builds a venv)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from timeouts import TIMEOUT

from supervisor import __version__, cli, manpage

ROOT = Path(__file__).resolve().parent.parent
BIN = str(Path(sys.executable).parent)  # where `supervisor` is, as after an install
COMMANDS = sorted({ln.split()[1] for ln in cli.__doc__.split("Usage:\n")[1].split("\n\n")[0]
                   .splitlines() if not ln.split()[1].startswith(("-", "("))})


def _man(page: Path) -> str:
    return subprocess.run(["man", "-l", str(page)], capture_output=True, text=True,
                          check=True, timeout=TIMEOUT, env={**os.environ, "MANWIDTH": "100",
                                                            "MAN_KEEP_FORMATTING": "0"}).stdout


def test_the_man_page_is_the_usage_text(tmp_path):
    page = tmp_path / "supervisor.1"
    page.write_text(manpage.render(cli.__doc__, __version__))
    # groff's own warnings (-ww) about the page: none
    lint = subprocess.run(["groff", "-man", "-ww", "-z", str(page)], capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert lint.returncode == 0 and lint.stderr == ""
    text = re.sub(r".\x08", "", _man(page))
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "OPTIONS", "EXIT STATUS",
                    "FILES", "SEE ALSO"):
        assert f"\n{section}\n" in text
    for command in COMMANDS:
        assert f"supervisor {command}" in text  # its synopsis
        assert re.search(rf"^ {{7}}{re.escape(command)}\b", text, re.M)  # its entry
    for option in ("--stop-timeout", "--env-file", "--since", "--cron"):
        assert re.search(rf"^ {{7}}.*{option}", text, re.M)
    assert re.search(r"^ {7}3 +the instance is not running", text, re.M)
    assert f"supervisor {__version__}" in text


def _bash(line: str, sup_env: dict) -> list[str]:
    """What bash completes for ``line`` (the word being typed is its last one; a line that
    ends with a space starts a new word), with completion/supervisor.bash loaded."""
    words = line.split(" ")
    script = (f"source {ROOT}/completion/supervisor.bash\n"
              f"COMP_WORDS=({' '.join(_quote(w) for w in words)})\n"
              f"COMP_CWORD={len(words) - 1}\n"
              "_supervisor\n"
              "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    out = subprocess.run(["bash", "--norc", "-c", script], capture_output=True, text=True,
                         timeout=TIMEOUT, env=sup_env, check=True)
    assert out.stderr == ""
    return [w for w in out.stdout.splitlines() if w]


def _quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


@pytest.fixture
def shell_env(sup):
    """The environment of a user's shell: `supervisor` on PATH, talking to ``sup``."""
    return {**sup.env, "PATH": f"{BIN}:{os.environ['PATH']}"}


def test_bash_completes_commands_options_and_live_names(sup, shell_env, tmp_path):
    sup.ok("create-service", "-n", "web-1", "/bin/sleep", "60")
    sup.ok("create-service", "-n", "web-2", "/bin/sleep", "60")
    sup.ok("create-service", "-n", "db", "/bin/sleep", "60")
    assert _bash("supervisor st", shell_env) == ["stop-service", "start-service"]
    assert sorted(_bash("supervisor ", shell_env)) == COMMANDS
    assert _bash("supervisor stop-service ", shell_env) == ["web-1", "web-2", "db"]
    assert _bash("supervisor stop-service web", shell_env) == ["web-1", "web-2"]
    # a name already on the line is not offered again; a one-service command takes one
    assert _bash("supervisor restart-service web-1 ", shell_env) == ["web-2", "db"]
    assert _bash("supervisor close-service db ", shell_env) == []
    assert _bash("supervisor signal-service db HU", shell_env) == ["HUP"]
    assert _bash("supervisor create-service --stop-t", shell_env) == ["--stop-timeout"]
    assert _bash("supervisor create-service --restart a", shell_env) == ["always"]
    assert _bash("supervisor logs -p w", shell_env) == ["warning"]
    assert _bash("supervisor logs -i 0 d", shell_env) == ["db"]
    assert _bash("supervisor list-supervisor -i ", shell_env) == ["0"]
    # files where a file goes: the program's own words, --env-file, -C (directories)
    (tmp_path / "env.list").write_text("A=1\n")
    (tmp_path / "envdir").mkdir()
    stem = str(tmp_path / "env")
    assert _bash(f"supervisor create-service --env-file {stem}", shell_env) == [
        f"{stem}.list", f"{stem}dir"]
    assert _bash(f"supervisor create-service -C {stem}", shell_env) == [f"{stem}dir"]
    assert _bash(f"supervisor create-service /bin/cat {stem}", shell_env) == [
        f"{stem}.list", f"{stem}dir"]
    # after the program, its options are its own: nothing of ours is offered
    assert _bash("supervisor create-service /bin/ls --sto", shell_env) == []


def test_bash_completion_of_an_instance_that_does_not_run_is_empty(sup, shell_env):
    assert _bash("supervisor stop-service -i 7 ", shell_env) == []
    assert _bash("supervisor stop-ser", shell_env) == ["stop-service"]


def test_zsh_completes_through_the_same_answers(sup, shell_env):
    """zsh's completion builtins (compadd, _files) act only inside a completion widget, which
    needs a terminal; here they are functions that print what they were given, and the
    script itself (completion/_supervisor) runs in a real zsh."""
    sup.ok("create-service", "-n", "web-1", "/bin/sleep", "60")

    def zsh(*words: str) -> list[str]:
        script = ("compadd() { [[ $1 == -a ]] && print -l -- ${(P)2} }\n"
                  "_files() { print -- __zsh_files $@ }\n"
                  "_command_names() { print -- __zsh_commands }\n"
                  f"words=({' '.join(_quote(w) for w in words)})\n"
                  f"CURRENT={len(words)}\n"
                  f"source {ROOT}/completion/_supervisor\n")
        out = subprocess.run(["zsh", "-f", "-c", script], capture_output=True, text=True,
                             timeout=TIMEOUT, env=shell_env, check=True)
        assert out.stderr == ""
        return out.stdout.splitlines()

    assert zsh("supervisor", "resu") == ["resume-service"]
    assert zsh("supervisor", "show-service", "") == ["web-1"]
    assert zsh("supervisor", "create-service", "-C", "/") == ["__zsh_files -/"]
    assert zsh("supervisor", "create-service", "") == ["__zsh_commands"]


@pytest.mark.slow
def test_make_install_into_a_prefix_and_a_staging_tree(tmp_path):
    """`make install` as a user runs it (PREFIX), and as a package build does (DESTDIR):
    the commands run from the prefix, man finds the page, the completions are where
    bash-completion and zsh look."""
    prefix = tmp_path / "usr"
    make = subprocess.run(["make", "-C", str(ROOT), "install", f"PREFIX={prefix}",
                           f"PYTHON={sys.base_prefix}/bin/python3"],
                          capture_output=True, text=True, timeout=TIMEOUT * 60)
    assert make.returncode == 0, make.stderr
    version = subprocess.run([str(prefix / "bin" / "supervisor"), "--version"],
                             capture_output=True, text=True, timeout=TIMEOUT, check=True)
    assert version.stdout.strip() == f"supervisor {__version__}"
    daemon = subprocess.run([str(prefix / "bin" / "supervisor-daemon"), "--help"],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert daemon.returncode == 0 and "supervisor-daemon" in daemon.stdout
    man = subprocess.run(["man", "supervisor"], capture_output=True, text=True,
                         timeout=TIMEOUT, env={**os.environ, "MANPATH": str(prefix / "share"
                                                                            / "man")})
    assert man.returncode == 0 and "stop-service" in man.stdout
    assert (prefix / "share/bash-completion/completions/supervisor").read_text() == (
        ROOT / "completion/supervisor.bash").read_text()
    assert (prefix / "share/zsh/site-functions/_supervisor").exists()

    stage = tmp_path / "stage"
    make = subprocess.run(["make", "-C", str(ROOT), "install", f"DESTDIR={stage}",
                           "PREFIX=/usr/local", f"PYTHON={sys.base_prefix}/bin/python3"],
                          capture_output=True, text=True, timeout=TIMEOUT * 60)
    assert make.returncode == 0, make.stderr
    staged = stage / "usr/local"
    assert os.readlink(staged / "bin/supervisor") == "/usr/local/lib/supervisor/bin/supervisor"
    script = (staged / "lib/supervisor/bin/supervisor").read_text()
    assert script.startswith("#!/usr/local/lib/supervisor/bin/python")
    assert str(stage) not in (staged / "lib/supervisor/pyvenv.cfg").read_text()
