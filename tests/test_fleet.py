"""docs/ansible/supervisor.yml, run for real: ansible-core from PyPI in a venv of its own
(made once, in .venv/ansible), the playbook against localhost with a private config and
runtime dir. Slow: the first run installs ansible-core."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, Supervisor, close_instance, wait_until

ANSIBLE_VENV = ROOT / ".venv" / "ansible"
PLAYBOOK = ROOT / "docs" / "ansible" / "supervisor.yml"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ansible_playbook():
    exe = ANSIBLE_VENV / "bin" / "ansible-playbook"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(ANSIBLE_VENV)], check=True)
        subprocess.run([str(ANSIBLE_VENV / "bin" / "pip"), "install", "-q",
                        "ansible-core>=2.15"], check=True, timeout=600)
    return exe


def _play(exe, tmp_path, rundir, services: dict, **extra) -> subprocess.CompletedProcess:
    variables = {"supervisor_instance": 0, "supervisor_services": services,
                 "supervisor_bin": str(ROOT / ".venv" / "bin" / "supervisor"),
                 "supervisor_config_dir": str(tmp_path / "conf"),
                 "supervisor_runtime_dir": rundir, **extra}
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    env = {**os.environ, "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
           "ANSIBLE_HOME": str(tmp_path / "ansible-home"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_PYTHON_INTERPRETER": sys.executable}
    return subprocess.run([str(exe), "-i", "localhost,", "-c", "local", str(PLAYBOOK),
                           "-e", f"@{tmp_path / 'vars.json'}"], capture_output=True,
                          text=True, env=env, timeout=300)


def _changed(result) -> int:
    """How many tasks the play changed (its recap line)."""
    assert result.returncode == 0, result.stdout + result.stderr
    recap = next(line for line in result.stdout.splitlines() if line.startswith("localhost"))
    return int(recap.split("changed=")[1].split()[0])


def test_the_playbook_is_idempotent_and_restarts_only_what_changed(ansible_playbook,
                                                                   tmp_path, rundir):
    services = {"web": {"command": ["/bin/sleep", "1101"], "restart": "always",
                        "env": {"GREETING": "hi there"}},
                "job": {"command": ["/bin/sleep", "1102"], "cron": "0 3 * * *"},
                "db": {"command": "/bin/sleep 1103", "stop_timeout": 5}}
    s = Supervisor(rundir)
    s.env["SUPERVISOR_CONFIG_DIR"] = str(tmp_path / "conf")
    try:
        first = _play(ansible_playbook, tmp_path, rundir, services)
        assert _changed(first) >= 2, first.stdout  # the dir and the file at least
        listing = {v["name"]: v for v in s.json("list-supervisor")["services"]}
        assert set(listing) == {"web", "job", "db"}
        assert all(v["declared"] for v in listing.values())
        wait_until(lambda: s.status("web")["status"] == "RUNNING", what="web to run")
        pids = {n: s.status(n)["pid"] for n in ("web", "db")}

        again = _play(ansible_playbook, tmp_path, rundir, services)
        assert _changed(again) == 0, again.stdout
        assert {n: s.status(n)["pid"] for n in ("web", "db")} == pids

        services["db"]["command"] = "/bin/sleep 1104"
        edited = _play(ansible_playbook, tmp_path, rundir, services)
        assert _changed(edited) == 2, edited.stdout  # the file, then apply
        shown = edited.stdout.split("TASK [What apply did]")[1]
        assert '"action": "restart"' in shown and '"service": "db"' in shown, shown
        assert shown.count('"action"') == 1, shown
        assert s.status("web")["pid"] == pids["web"]
        assert s.status("db")["pid"] != pids["db"]
    finally:
        close_instance(s)
