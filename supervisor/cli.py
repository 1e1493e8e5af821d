"""supervisor: command a supervisor instance.

Usage:
  supervisor init [-i N] [--json]
  supervisor list-supervisors [--json]
  supervisor close [-i N] [--json]
  supervisor reload [-i N] [--json]
  supervisor create-service [-i N] [-n NAME] [-r K] [-c] [-d S] [--at TIME] [--every INTERVAL] [--cron EXPR] [--restart MODE] [--restart-delay S] [--start-limit K/T] [-o OUT] [-e K=V]... [--env-file FILE] [-C DIR] [-u USER] [--stop-signal SIG] [--stop-timeout S] [--json] <path> [--] [<args>...]
  supervisor open-service <pid> [-i N] [-n NAME] [--json]
  supervisor stop-service <svc>... [-i N] [--json]
  supervisor start-service <svc>... [-i N] [--json]
  supervisor restart-service <svc>... [-i N] [--json]
  supervisor signal-service <svc> <signal> [-i N] [--json]
  supervisor show-service <svc>... [-i N] [--json]
  supervisor suspend-service <svc> [-i N] [--json]
  supervisor resume-service <svc> [-i N] [--json]
  supervisor close-service <svc> [-i N] [--json]
  supervisor remove-service <svc> [-i N] [--json]
  supervisor service-status <svc> [-i N] [--json]
  supervisor list-supervisor [-i N] [--json]
  supervisor supervisor-freelist <svc>... [-i N] [--json]
  supervisor supervisor-cancel <svc> [-i N] [--json]
  supervisor logs [<svc>] [-i N] [-n LINES] [-f] [--since TIME] [-p PRIORITY] [--json]
  supervisor apply [-i N] [--dry-run] [--prune] [--json]
  supervisor export [-i N] [--json]
  supervisor save [-i N] [--json]
  supervisor (-h | --help)
  supervisor --version

Commands:
  init                 Make sure instance N runs (start its daemon detached if not).
  list-supervisors     The instances that run: number, pid, socket, services, uptime.
  close                Shut instance N down: services it created are stopped (their stop
                       signal, then SIGKILL after their stop timeout, or the daemon's
                       grace period); opened ones are released.
  reload               Re-execute instance N's daemon in place (same pid): services
                       keep running, clients keep their connections.
  create-service       Start <path> with <args>; prints the service's name and pid.
                       Its options go before <path>: after it every word is the
                       program's, but for a trailing -i N or --json.
  open-service         Adopt a running process that the daemon did not start.
  stop-service         Stop gracefully: the stop signal to the service's process group,
                       SIGKILL to all of it after the stop timeout. Waits until stopped;
                       never restarted by its policy. Nothing to do: exit 0.
  start-service        Start services that do not run (a pending one now); their
                       restart count and start limit begin again.
  restart-service      stop-service, then start-service: a new pid.
  signal-service       Send any signal (TERM, SIGTERM or 15) to the service's process.
  show-service         Every field of the service, one "key: value" a line.
  suspend-service      SIGSTOP: RUNNING -> STOPPED.
  resume-service       SIGCONT: STOPPED -> RUNNING.
  close-service        SIGKILL: -> KILLED (never restarted).
  remove-service       Forget a service whatever its status (a created one still running
                       is killed first; an opened one is left running).
  service-status       The status of one service.
  list-supervisor      Every service of instance N, with CPU (share of one CPU since it
                       started) and memory.
  supervisor-freelist  Remove several services in one request.
  supervisor-cancel    Cancel a PENDING service and remove it.
  logs                 The output and lifecycle entries of a service, or of every
                       service of instance N, from the journal (by SUPERVISOR_INSTANCE
                       and SERVICE_NAME); stderr lines have priority 3 (err).
  apply                Make instance N match its config file (see Files): create the
                       declared services that are missing, restart (gracefully) those
                       whose definition changed, stop and remove those that left the
                       file; unchanged ones keep their process. All or nothing: an
                       invalid file changes nothing (exit 2, naming file, line, key).
  export               The instance's services as a config file that apply accepts.
  save                 Write them to the instance's config file: they become declared
                       and come back whenever the daemon starts.

Options:
  -i N, --instance N       The instance, 0 to 99 [default: 0].
  -n NAME, --name NAME     The service's name (default: the program's basename, made
                           unique with -2, -3...). For logs: -n LINES, how many of the
                           last entries to show (default 10; all with --since).
  -r K, --restart-times K  Restart after a crash at most K times (default 0, or no
                           limit when a restart mode is given).
  -c, --create-stopped     The process exists and has a pid, but none of the program's
                           code runs until resume-service.
  -d S, --delay S          Start after S seconds (fractions allowed); PENDING until then
                           [default: 0].
  --at TIME                Start at TIME: ISO-8601 (2026-12-01T08:00), or HH:MM[:SS] for
                           the next such time; without an offset, in the zone of the
                           command (its TZ), turned into an instant before it is sent.
  --every INTERVAL         Start now and every INTERVAL (30s, 5m, 1h30m) on
                           CLOCK_BOOTTIME; a start due while the last run still runs is
                           skipped.
  --cron EXPR              Start when the cron expression fires ("*/5 * * * *", @daily),
                           in the daemon's zone (its TZ or /etc/localtime).
  --restart MODE           on-failure (not after exit 0, SIGTERM, SIGINT, SIGHUP,
                           SIGPIPE), always (after any end no command asked for), or
                           never.
  --restart-delay S        Wait S seconds before a restart, doubled after each quick
                           failure up to 60 s [default: 0].
  --start-limit K/T        More than K starts within T seconds end in CRASHED (default
                           5/10s when restarts are unlimited).
  -o OUT, --output OUT     Where the service's stdout and stderr go: journal (one entry
                           a line, SYSLOG_IDENTIFIER=<name>), null, inherit (the
                           daemon's own, as journal when init started it), or a
                           file, appended to [default: journal].
  -e K=V, --env K=V        Set an environment variable (repeat for more); over the
                           daemon's environment and --env-file.
  --env-file FILE          KEY=VALUE lines (# comments), read at each start.
  -C DIR, --cwd DIR        The working directory (default: the current one).
  -u USER, --user USER     Run as USER[:GROUP] with USER's groups (root's daemon only).
  --stop-signal SIG        The signal that asks it to stop [default: TERM].
  --stop-timeout S         Seconds from the stop signal to SIGKILL (default 10; on
                           close, the daemon's grace period).
  -f, --follow             logs: keep showing new entries as they come.
  --since TIME             logs: entries since TIME: 10m (ago), HH:MM, or ISO-8601.
  -p PRIORITY              logs: entries of this priority or more urgent: emerg, alert,
                           crit, err, warning, notice, info, debug, or 0-7.
  --dry-run                apply: print what it would do, change nothing.
  --prune                  apply: also stop and remove services made by create-service.
  --json                   Print one JSON document on stdout (logs -f: one entry a
                           line, as they come).
  -h, --help               Show this text.
  --version                Show the version.

<svc> is a service name, any pid the service has had, or (for commands that take
several) a shell pattern such as 'web-*'. After create-service's <path>, -- makes every
following word the program's, a trailing -i N or --json too.

Files: instance N's config file is $SUPERVISOR_CONFIG_DIR/N.toml, else
/etc/supervisor/N.toml for root, else $XDG_CONFIG_HOME/supervisor/N.toml
(~/.config/supervisor/N.toml), with every N.d/*.toml beside it; one [services.NAME]
table a service, its keys create-service's long options with _ (command = [...]). The
daemon applies it when it starts. Services made by create-service are ephemeral: they
survive a crash or a reload of the daemon, not a close, unless saved.

Exit codes: 0 done; 1 the daemon refused or failed; 2 usage error; 3 the instance is not
running or not reachable.
"""

from __future__ import annotations

import sys

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3


class UsageError(Exception):
    pass


def _usage_line(argv: list[str]) -> str:
    lines = [ln.strip() for ln in __doc__.split("Usage:")[1].split("\n\n")[0].splitlines()]
    for word in argv:
        if not word.startswith("-"):
            match = [ln for ln in lines if ln.split()[1:2] == [word]]
            if match:
                return match[0]
            break
    return "supervisor <command> [options]"


def _number(text: str, what: str, *, integer: bool) -> float:
    import math

    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number of seconds"
        raise UsageError(f"{what} must be {kind} >= 0, not {text!r}") from None
    if value < 0 or not math.isfinite(value):
        raise UsageError(f"{what} must be >= 0, not {text!r}")
    return value


def _cwd() -> str:
    """The caller's directory, where a service runs and relative paths start."""
    import os

    try:
        return os.getcwd()
    except FileNotFoundError:
        raise UsageError("the current directory no longer exists: cd to one that does") \
            from None


def _resolve_path(path: str, cwd: str) -> str:
    import os
    import shutil

    if "/" not in path:
        found = shutil.which(path)
        if found:
            return os.path.join(cwd, found)
    return os.path.normpath(os.path.join(cwd, path))


def _schedule_opts(opts: dict) -> dict:
    """--at, --every, --cron, --restart...: --at and --every turned from text into seconds
    (a time of day is the caller's local time); the rest is passed on as written. The
    daemon checks them all (a wrong value is exit 2 from there too)."""
    out: dict = {}
    try:
        if opts["--at"] is not None:
            import time

            from supervisor import schedule

            out["at"] = schedule.parse_at(opts["--at"], time.time())
        if opts["--every"] is not None:
            from supervisor import schedule

            out["every"] = schedule.parse_interval(opts["--every"])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for key in ("--cron", "--restart", "--start-limit"):
        if opts[key] is not None:
            out[key[2:].replace("-", "_")] = opts[key]
    if opts["--restart-delay"] not in ("0", None):
        out["restart_delay"] = _number(opts["--restart-delay"], "restart delay",
                                       integer=False)
    return out


def _output(spec: str, cwd: str) -> str:
    import os

    return spec if spec in ("journal", "null", "inherit") else \
        os.path.normpath(os.path.join(cwd, spec))


def _svc(ref: str) -> str | int:
    return int(ref) if ref.isascii() and ref.isdigit() else ref


# ---- output -----------------------------------------------------------------------------


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    d, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    if d:
        return f"{d}d{h}h"
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


def _clock(when: float, now: float) -> str:
    """A time for people: "08:30" today, else "Tue 08:30" within a week, else the date."""
    import time

    t, today = time.localtime(when), time.localtime(now)
    if t[:3] == today[:3]:
        return time.strftime("%H:%M:%S" if t.tm_sec else "%H:%M", t)
    if abs(when - now) < 6 * 86400:
        return time.strftime("%a %H:%M", t)
    return time.strftime("%Y-%m-%d %H:%M", t)


def _in(when: float, now: float) -> str:
    """ "in 3h12m (at 08:30)": when a future time comes."""
    return f"in {_ago(when - now + 0.999)} (at {_clock(when, now)})"


def _status_text(svc: dict) -> str:
    status = svc["status"]
    if status in ("CRASHED", "EXITED", "KILLED"):
        if svc.get("signal"):
            return f"{status} ({svc['signal']})"
        if svc.get("exit_code") is not None:
            return f"{status} (code {svc['exit_code']})"
        if svc.get("error"):  # it could not be started (again)
            return f"{status} (cannot start)"
    return status


def _uptime(svc: dict, now: float) -> str:
    """How long it runs; when a pending one starts; how long ago an ended one ended."""
    if svc["status"] == "PENDING" and svc.get("next_start"):
        return f"in {_ago(svc['next_start'] - now + 0.999)}"
    if svc["pid"] is not None and svc.get("started_at"):
        return _ago(now - svc["started_at"])
    if svc.get("exited_at"):
        return f"{_ago(now - svc['exited_at'])} ago"
    return ""


def _bytes(n: int | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return ""


def _cpu(svc: dict, now: float) -> str:
    """The share of one CPU the service used since it started, as ``12.5%``."""
    cpu, since = svc.get("cpu_seconds"), svc.get("started_at")
    if cpu is None or not since or now <= since:
        return ""
    return f"{100 * cpu / (now - since):.1f}%"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    out = []
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r, widths, strict=False)] + [r[-1]]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def _service_rows(services: list[dict]) -> str:
    import shlex
    import time

    now = time.time()
    rows = [["NAME", "PID", "STATUS", "RESTARTS", "CPU", "MEM", "UPTIME", "COMMAND"]]
    for s in services:
        rows.append([s["name"], str(s["pid"]) if s["pid"] is not None else "",
                     _status_text(s), str(s["restarts"]), _cpu(s, now),
                     _bytes(s.get("memory_bytes")), _uptime(s, now),
                     shlex.join(s["command"]) + (" (opened)" if s.get("opened") else "")])
    return _table(rows)


def _show(svc: dict) -> str:
    """show-service: every field, one "key: value" a line, times for people."""
    import shlex
    import time

    now = time.time()
    out = []
    for key, value in svc.items():
        if key in ("started_at", "exited_at") and value is not None:
            text = f"{_clock(value, now)} ({_ago(now - value)} ago)"
        elif key == "next_start" and value is not None:
            text = _in(value, now) if value > now else _clock(value, now)
        elif key == "command":
            text = shlex.join(value)
        elif key == "memory_bytes" and value is not None:
            text = f"{_bytes(value)} ({value})"
        elif key == "schedule" and value is not None:
            kind, what = next(iter(value.items()))
            if kind == "at":
                what = _clock(what, now)
            elif kind == "every":
                from supervisor.schedule import format_interval

                what = format_interval(what)
            text = f"{kind} {what}"
        elif isinstance(value, list):
            text = " ".join(map(str, value))
        elif isinstance(value, float):
            text = f"{value:g}"
        elif value is None:
            text = "-"
        else:
            text = str(value).lower() if isinstance(value, bool) else str(value)
        out.append(f"{key}: {text}")
    return "\n".join(out)


def _print(result, as_json: bool, text: str) -> None:
    if as_json:
        import json

        print(json.dumps(result, indent=2))
    elif text:
        print(text)


# ---- commands ---------------------------------------------------------------------------


def run(opts: dict) -> int:
    """Carry out the command; ``opts`` holds the keys of its usage line (see _parse)."""
    from supervisor import client, paths

    try:
        instance = paths.parse_instance(opts.get("--instance"))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    as_json = opts["--json"]

    if opts.get("list-supervisors"):
        import time

        found = client.list_supervisors()
        now = time.time()
        rows = [["INSTANCE", "PID", "SERVICES", "UPTIME", "SOCKET"]]
        rows += [[str(i["instance"]), str(i["pid"]), str(i["services"]),
                  _ago(now - i["started_at"]), i["socket"]] if "error" not in i
                 else [str(i["instance"]), "-", "-", "NOT ANSWERING", i["socket"]]
                 for i in found]
        _print({"supervisors": found}, as_json,
               _table(rows) if found else "no supervisor instance is running")
        for i in found:  # one line each on stderr too: said, not only shown
            if "error" in i and not as_json:
                print(f"supervisor: {i['error']}", file=sys.stderr)
        return EXIT_OK
    if opts.get("init"):
        info, started = client.init(instance)
        verb = "started" if started else "already running"
        _print({**info, "started": started}, as_json,
               f"instance {instance} {verb} (pid {info['pid']}, socket {info['socket']})")
        return EXIT_OK
    if opts.get("logs"):
        return _logs(instance, opts, as_json)
    if opts.get("reload"):
        with client.Client(instance) as c:
            info = c.reload()
        _print(info, as_json, f"instance {instance} re-executed (pid {info['pid']}, "
                              f"generation {info['generation']}, {info['services']} services)")
        return EXIT_OK
    if opts.get("apply") or opts.get("export") or opts.get("save"):
        return _declared(instance, opts, as_json)
    if opts.get("close"):
        answer = client.close_instance(instance)
        _print(answer, as_json, f"instance {instance} closed (pid {answer['pid']})")
        return EXIT_OK

    with client.Client(instance) as c:
        if opts.get("create-service"):
            svc = c.create_service(**_create_args(opts))
            if svc["status"] == "PENDING":
                import time

                text = f"{svc['name']} PENDING (starts {_in(svc['next_start'], time.time())})"
            else:
                text = f"{svc['name']} {svc['pid']}"
            _print(svc, as_json, text)
        elif opts.get("open-service"):
            ref = opts["<pid>"]
            if not (ref.isascii() and ref.isdigit()) or int(ref) == 0:
                raise UsageError(f"<pid> must be a positive number, not {ref!r}")
            svc = c.open_service(int(ref), name=opts["--name"])
            _print(svc, as_json, f"{svc['name']} {svc['pid']}")
        elif opts.get("list-supervisor"):
            listing = c.list_supervisor()
            _print(listing, as_json, _service_rows(listing["services"]) if listing["services"]
                   else f"instance {instance} has no services")
        elif opts.get("supervisor-freelist"):
            answer = c.supervisor_freelist([_svc(s) for s in opts["<svc>"]])
            _print(answer, as_json, "\n".join(f"removed {s['name']}" for s in answer["removed"]))
        elif any(opts.get(cmd) for cmd in _VERBS):
            return _verb(c, opts, as_json)
        else:
            ref = _svc(opts["<svc>"][0])
            for cmd, verb in (("suspend-service", "suspended"), ("resume-service", "resumed"),
                              ("close-service", "killed"), ("remove-service", "removed"),
                              ("supervisor-cancel", "cancelled"),
                              ("service-status", None)):
                if opts.get(cmd):
                    svc = c.call(cmd, service=ref)
                    text = (_service_rows([svc]) if verb is None
                            else f"{verb} {svc['name']} ({_status_text(svc)})")
                    _print(svc, as_json, text)
                    break
    return EXIT_OK


def _create_args(opts: dict) -> dict:
    """create-service's options as the client's arguments (paths made absolute against
    the caller's directory, numbers checked)."""
    import os

    for key, what in (("<path>", "the program's path"), ("--cwd", "--cwd"),
                      ("--output", "--output"), ("--env-file", "--env-file")):
        if opts[key] == "":  # a variable that was not set: never the caller's directory
            raise UsageError(f"{what} is empty")
    cwd = _cwd()
    args: dict = {
        "path": _resolve_path(opts["<path>"], cwd), "args": opts["<args>"],
        "name": opts["--name"], "create_stopped": opts["--create-stopped"],
        "delay": _number(opts["--delay"], "delay", integer=False),
        "cwd": os.path.normpath(os.path.join(cwd, opts["--cwd"])) if opts["--cwd"] is not None
        else cwd,
        "output": _output(opts["--output"], cwd), **_schedule_opts(opts)}
    if opts["--restart-times"] is not None:
        args["restart_times"] = int(_number(opts["--restart-times"], "restart times",
                                            integer=True))
    env = {}
    for pair in opts["--env"]:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise UsageError(f"--env {pair!r}: expected KEY=VALUE")
        env[key] = value
    if env:
        args["env"] = env
    if opts["--env-file"] is not None:
        args["env_file"] = os.path.normpath(os.path.join(cwd, opts["--env-file"]))
    if opts["--user"] is not None:  # an empty one is an error, never "as the daemon"
        args["user"] = opts["--user"]
    if opts["--stop-signal"] not in (None, "TERM"):
        args["stop_signal"] = opts["--stop-signal"]
    if opts["--stop-timeout"] is not None:
        args["stop_timeout"] = _number(opts["--stop-timeout"], "stop timeout",
                                       integer=False)
    return args


def _declared(instance: int, opts: dict, as_json: bool) -> int:
    """apply, export, save."""
    from supervisor import client, config

    with client.Client(instance) as c:
        if opts.get("export"):
            answer = c.export()
            _print(answer, as_json, config.dumps(
                answer["services"], f"Instance {instance}'s services (supervisor export)."
                + "".join(f"\nLeft out: {n} (opened, not created; or words that are not "
                          "UTF-8)" for n in answer["skipped"]))
                .rstrip("\n"))
            return EXIT_OK
        if opts.get("save"):
            answer = c.save()
            _print(answer, as_json, f"saved {len(answer['written'])} services of instance "
                                    f"{instance} to {answer['path']}" + "".join(
                                        f"\nKept: {n} (declared there, not made here: "
                                        "`supervisor apply` says why)"
                                        for n in answer.get("kept", [])))
            return EXIT_OK
        answer = c.apply(dry_run=opts["--dry-run"], prune=opts["--prune"])
    would = "would " if answer["dry_run"] else ""
    lines = [f"{a['service']}: its one-off start (at) has passed: not made"
             if a["action"] == "expired" else f"{would}{a['action']} {a['service']}"
             for a in answer["changes"] if a["action"] != "keep"]
    if not lines:
        lines = [f"instance {instance} matches its config file: nothing to do"]
    _print(answer, as_json, "\n".join(lines))
    for error in answer["errors"]:
        print(f"supervisor: {error}", file=sys.stderr)
    return EXIT_REFUSED if answer["errors"] else EXIT_OK


_VERBS = {"stop-service": "stopped", "start-service": "started",
          "restart-service": "restarted", "signal-service": "signalled",
          "show-service": None}


def _verb(c, opts: dict, as_json: bool) -> int:
    """stop/start/restart/signal/show-service: on names, pids and patterns; one line (or
    block) a service; with --json the service object where one service was named plainly,
    else ``{"instance": N, "services": [...]}`` (and ``"gone"``: names removed meanwhile)."""
    refs = [_svc(ref) for ref in opts["<svc>"]]
    cmd = next(cmd for cmd in _VERBS if opts.get(cmd))
    if cmd == "signal-service":
        answer = c.signal_service(opts["<signal>"], *refs)
    else:
        answer = getattr(c, cmd.replace("-", "_"))(*refs)
    services = answer["services"]
    plain = len(refs) == 1 and not any(ch in str(refs[0]) for ch in "*?[")
    failed = [s for s in services if s.get("error") and s["status"] == "PENDING"
              and cmd in ("start-service", "restart-service")]
    gone = answer.get("gone", [])  # removed by another command meanwhile
    overridden = answer.get("overridden", [])  # its stop given another goal meanwhile
    if as_json:
        _print(services[0] if plain and len(services) == 1 and not gone and not overridden
               else {"instance": answer.get("instance", c.instance), "services": services,
                     **({"gone": gone} if gone else {}),
                     **({"overridden": overridden} if overridden else {})}, True, "")
    elif cmd == "show-service":
        print("\n\n".join(_show(s) for s in services))
    else:
        verb = _VERBS[cmd]
        for s in services:
            if s in failed:
                line = f"{s['name']}: could not start: {s['error']} (retrying)"
            elif not s.get("changed") and cmd == "stop-service" and s["status"] == "PENDING":
                line = (f"{s['name']}: nothing to do (PENDING: it does not run; "
                        "supervisor-cancel calls off what is to come)")
            elif not s.get("changed"):
                line = f"{s['name']}: nothing to do ({_status_text(s)})"
            elif s["name"] in overridden:
                what = cmd.removesuffix("-service")
                line = (f"{s['name']}: {what} undone by another command meanwhile (now "
                        f"{_status_text(s)})")
            elif cmd == "signal-service":
                line = f"{verb} {s['name']} ({opts['<signal>']})"
            else:
                pid = f", pid {s['pid']}" if s["pid"] is not None else ""
                line = f"{verb} {s['name']} ({_status_text(s)}{pid})"
            print(line)
        for name in gone:
            print(f"{name}: removed by another command meanwhile")
    return EXIT_REFUSED if failed or gone or overridden else EXIT_OK


_PRIORITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")


def _logs(instance: int, opts: dict, as_json: bool) -> int:
    import json

    from supervisor import client, journal, outfiles, paths

    since = _since(opts["--since"]) if opts["--since"] is not None else None
    given = opts["--name"]
    lines = int(_number(given, "lines", integer=True)) if given is not None \
        else (None if since is not None else 10)
    priority = _priority(opts["-p"]) if opts["-p"] is not None else None
    ref = opts["<svc>"][0] if opts["<svc>"] else None
    if ref == "":
        raise UsageError("the service's name is empty: name one, or none for every service")
    name = ref
    to_journal = None  # where the running daemon logs, if it runs
    try:
        with client.Client(instance, timeout=5) as c:
            to_journal = c.info().get("journal")
            if ref is not None:
                name = c.service_status(_svc(ref))["name"]
    except client.NotRunning:
        pass  # its entries are still there
    except client.RemoteError as exc:
        if exc.code != "no-such-service":  # permission denied: say so, never show nothing
            raise
        # a service it no longer has: its entries are still there
    if opts["--follow"]:
        import gc

        gc.enable()
    follow = opts["--follow"]
    # --json: one document, {"instance", "service", "entries"}; followed, one entry a line
    # as they come (a stream cannot wait for its end)
    entries: list | None = [] if as_json and not follow else None

    def show(item) -> None:
        if entries is not None:
            entries.append(item)
        else:
            print(json.dumps(item) if as_json else item, flush=True)

    def done() -> int:
        if entries is not None:
            print(json.dumps({"instance": instance, "service": name, "entries": entries}))
        return EXIT_OK
    rundir = paths.runtime_dir()
    files = outfiles.services(rundir, instance)
    if name is not None:
        files = [name] if name in files else []
    try:
        # the journal's entries or, where the daemon found no journald, the output files
        # its log relay wrote in the runtime directory and its own log there; when it does
        # not run: whichever holds the newer (a journal may still hold an older daemon's
        # entries of the same instance)
        found = () if to_journal is False else journal.service_log(
            instance, name, lines=lines, as_json=as_json, since=since, priority=priority,
            timed=True)
        if to_journal is None:  # which is newer tells: all of them first
            found = list(found)
        if to_journal or (to_journal is None and (not files or (
                found and found[-1][0] >= outfiles.newest(rundir, instance, files)))):
            shown = 0
            for _when, item in found:  # as they come, where the daemon logs to the journal
                show(item)
                shown += 1
            if follow:
                for item in journal.service_log(instance, name, lines=0, follow=True,
                                                as_json=as_json, priority=priority):
                    show(item)
            elif not shown and lines != 0 and name is not None and since is None \
                    and priority is None:
                raise client.RemoteError(
                    "no-such-service",
                    f"no journal entries for service {ref!r} of instance {instance}")
            return done()
        at: dict = {}
        of = [name] if name else None
        if lines is None:  # every one since a time: printed as the files are read
            shown = outfiles.stream(rundir, instance, files, of, since=since,
                                    priority=priority, at=at)
        else:
            events = outfiles.lifecycle(rundir, instance, of, at, lines=lines, since=since,
                                        priority=priority)
            shown = outfiles.read(rundir, instance, files, lines=lines, since=since,
                                  priority=priority, at=at, events=events)
        count = 0
        for entry in shown:
            show(entry if as_json else _plain(entry))
            count += 1
        if not count and not follow and lines != 0 and name is not None and since is None \
                and priority is None:
            raise client.RemoteError("no-such-service",
                                     f"no output or lifecycle entries for service {ref!r} "
                                     f"of instance {instance} in {rundir}")
        if follow:
            for entry in outfiles.follow(rundir, instance, [name] if name else None, at,
                                         priority=priority):
                show(entry if as_json else _plain(entry))
    except KeyboardInterrupt:
        return EXIT_OK
    return done()


def _plain(entry: dict) -> str:
    """An entry of an output file as `logs` shows a journal entry (journal._format)."""
    import datetime

    when = entry["time"]
    stamp = datetime.datetime.fromtimestamp(when).astimezone().strftime(
        "%Y-%m-%dT%H:%M:%S%z") if when is not None else "-"
    from supervisor.journal import printable

    if entry["identifier"] == "supervisor":  # a lifecycle entry of the daemon's log
        return printable(f"{stamp} supervisor: {entry['message']}")
    pid = entry["pid"] if entry["pid"] is not None else "?"
    return printable(f"{stamp} {entry['service']}[{pid}]: {entry['message']}")


def _since(text: str) -> float:
    """--since: an interval ago (10m, 1h30m), a time of day today (HH:MM[:SS]; yesterday
    if that is still to come), or an ISO-8601 date and time."""
    import time
    from datetime import datetime

    from supervisor import schedule

    now = time.time()
    try:
        return now - schedule.parse_interval(text)
    except ValueError as exc:
        if "greater than zero" in str(exc):  # 0m: from now on (an interval must be > 0)
            return now
    try:
        when = schedule.parse_at(text, now)  # HH:MM: the next such time; ISO: in the future
        return when - 86400 if ":" in text and len(text) <= 8 else when
    except ValueError as exc:
        if "in the past" not in str(exc):
            raise UsageError(f"--since {text!r}: expected 10m (ago), HH:MM or ISO-8601 "
                             "(2026-12-01T08:00)") from None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _priority(text: str) -> int:
    if text.isascii() and text.isdigit() and int(text) <= 7:
        return int(text)
    if text.lower() in _PRIORITIES:
        return _PRIORITIES.index(text.lower())
    raise UsageError(f"-p {text!r}: expected {', '.join(_PRIORITIES)} or 0-7")


_TRAILING = ("-i", "--instance")


def _split_create(argv: list[str]) -> list[str]:
    """create-service's words put in an order where docopt cannot take a program's option
    as ours: ``create-service <our options> <path> -- <the program's words>``.

    Ours are the options before <path> (the Options section says which take a value), a
    ``--`` right after <path> is dropped, and at the end of the line ``-i N``,
    ``--instance N`` and ``--json`` are ours (the seed writes ``-i`` last) unless a
    ``--`` came before them. Everything else after <path> is the program's. ``-i N`` in
    the middle of the program's words could be either: a usage error saying how to
    write it. Words that docopt must judge (no <path>, an unknown option) are left as
    they are."""
    from docopt import parse_options

    takes = {}
    for opt in parse_options(__doc__):
        for spelling in (opt.short, opt.longer):
            if spelling:
                takes[spelling] = opt.argcount
    longs = [k for k in takes if k.startswith("--")]
    ours, i = [], 1
    while i < len(argv):
        word = argv[i]
        if word == "--":
            i += 1
            break
        if not word.startswith("-") or word == "-":
            break
        ours.append(word)
        if word.startswith("--"):
            name, eq, _value = word.partition("=")
            match = [k for k in longs if k == name] or [k for k in longs if k.startswith(name)]
            if len(match) != 1:
                return argv
            if takes[match[0]] and not eq:
                ours.extend(argv[i + 1:i + 2])
                i += 1
        else:
            for j in range(1, len(word)):
                arity = takes.get("-" + word[j])
                if arity is None:
                    return argv
                if arity:
                    if j == len(word) - 1:
                        ours.extend(argv[i + 1:i + 2])
                        i += 1
                    break
        i += 1
    if i >= len(argv):
        return argv
    path, rest = argv[i], argv[i + 1:]
    if rest[:1] == ["--"]:
        return [argv[0], *ours, path, "--", *rest[1:]]
    tail: list[str] = []
    if "--" not in rest:
        while rest:
            if rest[-1] == "--json":
                tail[:0], rest = rest[-1:], rest[:-1]
            elif len(rest) >= 2 and rest[-2] in _TRAILING and _instance_like(rest[-1]):
                tail[:0], rest = rest[-2:], rest[:-2]
            elif rest[-1].startswith("--instance=") and _instance_like(rest[-1][11:]):
                tail[:0], rest = rest[-1:], rest[:-1]
            elif _glued_instance(rest[-1]):  # -i40
                tail[:0], rest = ["-i", rest[-1][2:]], rest[:-1]
            else:
                break
        for k, word in enumerate(rest):
            if _glued_instance(word):
                raise UsageError(
                    f"is '{word}' the instance, or an argument of {path}? For the instance "
                    f"put it before <path> (create-service -i {word[2:]} {path} ...); for "
                    f"the program, put its words after --: create-service {path} -- "
                    f"{' '.join(rest)}")
            if k + 1 < len(rest) and word in _TRAILING and _instance_like(rest[k + 1]):
                raise UsageError(
                    f"is '{word} {rest[k + 1]}' the instance, or an argument of {path}? "
                    f"For the instance put it before <path> (create-service {word} "
                    f"{rest[k + 1]} {path} ...); for the program, put its words after --: "
                    f"create-service {path} -- {' '.join(rest)}")
    return [argv[0], *ours, *tail, path, "--", *rest]


def _instance_like(word: str) -> bool:
    """What -i could take (leading zeros too: -i 0070 is instance 70)."""
    return word.isascii() and word.isdigit() and len(word.lstrip("0")) <= 3


def _glued_instance(word: str) -> bool:
    """``-i40``: -i and its instance in one word."""
    return word.startswith("-i") and _instance_like(word[2:])


def _command_doc(argv: list[str]) -> str | None:
    """The usage text cut down to the usage line of argv's command and the whole Options
    section, or None when argv does not start with a command."""
    if not argv or argv[0].startswith("-"):
        return None
    usage = __doc__.split("Usage:\n", 1)[1].split("\n\n", 1)[0]
    lines = [ln for ln in usage.splitlines() if ln.split()[1] == argv[0]]
    if not lines:
        return None
    options = __doc__[__doc__.index("\nOptions:\n"):].split("\n\n", 1)[0]
    return "Usage:\n" + "\n".join(lines) + "\n" + options + "\n"


def _parse(argv: list[str]) -> dict:
    """docopt on the usage line of argv's command alone, the git-style pattern: matching
    argv against all the usage lines costs ~8 ms, against one ~0.7 ms. The Options section
    is whole, so options (abbreviations, arguments, defaults) are read as with the whole
    text; what the short text does not accept (help, version, a usage error, options before
    the command) is parsed again with the whole text, which prints and raises as before.
    The dict holds the keys of that command's usage line only; an argument that another
    command repeats (<svc>...) is a list, as the whole text makes it."""
    from docopt import DocoptExit, docopt

    if argv[:1] == ["create-service"]:
        argv = _split_create(argv)
    doc = _command_doc(argv)
    if doc is not None:
        try:
            opts = docopt(doc, argv=argv, default_help=False)
        except DocoptExit:
            pass
        else:
            for key, value in opts.items():
                if isinstance(value, str) and f"{key}..." in __doc__:
                    opts[key] = [value]
            return opts
    from supervisor import __version__

    return docopt(__doc__, argv=argv, version=f"supervisor {__version__}")


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the program itself, which exits once the command is done
        import gc

        # Collections free nothing in a run of tens of milliseconds, and the imports
        # (docopt, re, typing, json) trigger ~18 of them, ~1-2 ms. logs --follow, which
        # may run for days, turns them back on.
        gc.disable()
        argv = sys.argv[1:]
        # an argument or a service's command line that is not UTF-8 arrives
        # surrogate-escaped: print it back as the bytes it was, never fail on it
        # (a stream closed by the caller, `>&-`, is None: what goes there is dropped)
        if sys.stdout is not None:
            sys.stdout.reconfigure(errors="surrogateescape")
        if sys.stderr is not None:
            sys.stderr.reconfigure(errors="backslashreplace")
    if argv[:1] == ["__complete"]:  # the shells' completion scripts ask (completion/)
        from supervisor import completion

        return completion.main(argv[1:])
    from docopt import DocoptExit

    try:
        opts = _parse(argv)
    except BrokenPipeError:  # --help or --version into a reader that closed early
        return _stdout_gone()
    except DocoptExit:
        print(f"supervisor: usage: {_usage_line(argv)}  (see supervisor --help)",
              file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"supervisor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from supervisor.client import SupervisorError
    from supervisor.protocol import clamp  # a message may quote a word of 1 MiB

    try:
        return run(opts)
    except UsageError as exc:
        print(f"supervisor: {clamp(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except SupervisorError as exc:
        print(f"supervisor: {clamp(exc.message)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # stdout closed early (| head)
        return _stdout_gone()
    except OSError as exc:  # anything else the system refused: one line, never a traceback
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"supervisor: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_REFUSED
    except UnicodeError as exc:  # text that no byte or character stands for
        print(f"supervisor: cannot use {exc.object[exc.start:exc.end]!r}: {exc.reason}",
              file=sys.stderr)
        return EXIT_USAGE


def _stdout_gone() -> int:
    """The reader of our stdout went away (``| head``): done, quietly. What is still
    buffered goes to /dev/null, so that the flush at exit cannot fail again."""
    import os

    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, sys.stdout.fileno())
    os.close(null)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
