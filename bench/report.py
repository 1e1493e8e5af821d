"""docs/benchmarks.md from the results of one run (every number in it comes from that run)."""

from __future__ import annotations

import math

from common import summary

OURS = "ours"
FALLBACK = "ours, fallback spawn"  # bench/fig_restart.py: ours with SUPERVISOR_SPAWN=fallback
REALISTIC = "0.3 s + jitter"  # bench/fig_restart.py: the lifetime of the rows beside many
SD = "supervisord"
C5 = "circus (check_delay=5)"
C01 = "circus (check_delay=0.1)"
PEERS = (SD, C5, C01)
COLUMNS = (OURS, *PEERS)


def fmt(x, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if math.isinf(x):
        return "never"
    ax = abs(x)
    if ax >= 1000:
        s = f"{x:,.0f}"
    elif ax >= 100:
        s = f"{x:.0f}"
    elif ax >= 10:
        s = f"{x:.1f}"
    elif ax >= 1:
        s = f"{x:.2f}"
    elif ax == 0:
        s = "0"
    else:
        s = f"{x:.3f}"
    return s + unit


def med_p95(values) -> str:
    if not values:
        return "—"
    s = summary(values)
    if math.isinf(s["median"]):
        return "never"
    return f"{fmt(s['median'])} / {fmt(s['p95'])}"


def ratio(ours, peer) -> str:
    if ours is None or peer is None or (isinstance(peer, float) and math.isnan(peer)):
        return ""
    if isinstance(ours, float) and math.isnan(ours):
        return ""
    if math.isinf(peer):
        return "0 (peer never)" if math.isfinite(ours) else ""
    if peer == 0:
        return "—" if ours == 0 else "∞"
    r = ours / peer
    return f"{r:.3g}×"


class Table:
    def __init__(self) -> None:
        self.rows: list[list[str]] = []
        self.misses: list[str] = []

    def add(self, metric: str, cells: dict[str, str], medians: dict[str, float | None],
            target: str = "", met: bool | None = None) -> None:
        row = [metric] + [cells.get(c, "—") for c in COLUMNS]
        row += [ratio(medians.get(OURS), medians.get(p)) for p in PEERS]
        row += [target, "" if met is None else ("yes" if met else "**NO**")]
        self.rows.append(row)
        if met is False:
            self.misses.append(f"{metric}: ours {cells.get(OURS)} (target {target})")

    def render(self) -> str:
        head = ["metric", "ours", "supervisord", "circus (5)", "circus (0.1)",
                "ours ÷ supervisord", "ours ÷ circus (5)", "ours ÷ circus (0.1)",
                "target (ours)", "met"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)


def _per_daemon(d: dict, key: str, cell, value) -> tuple[dict, dict]:
    """(cells, medians) over the daemons measured at N=``key``: ``cell(entry)`` is the text
    shown, ``value(entry)`` the number the ratios are taken of."""
    hits = {k: per[key] for k, per in d.items() if key in per}
    return {k: cell(x) for k, x in hits.items()}, {k: value(x) for k, x in hits.items()}


def _median(values):
    return summary(values)["median"] if values else None


def _percent(share) -> str:
    return "—" if share is None else f"{share * 100:.0f} %"


def summary_table(r: dict) -> Table:
    t = Table()
    if "restart" in r:
        for life, per in r["restart"]["lifetimes"].items():
            d = per["daemons"]
            t.add(f"restart latency, crash → next start, toy lives {life} "
                  "(ms, median / p95)",
                  {k: med_p95(v["latency_ms"]) for k, v in d.items()},
                  {k: _median(v["latency_ms"]) for k, v in d.items()})
            t.add(f"restart share = latency − toy's warm bare start-up, toy lives {life} "
                  "(ms, median / p95)",
                  {k: med_p95(v["share_ms"]) for k, v in d.items()},
                  {k: _median(v["share_ms"]) for k, v in d.items()})
            if "floor_ms" not in per:  # a run from before the floor was measured
                continue
            over = d.get(OURS, {}).get("over_floor_ms", [])
            s = summary(over)
            t.add(f"restart over the floor = latency − least possible restart (the harness "
                  f"restarting the toy: {med_p95(per['floor_ms'])}), toy lives {life} "
                  "(ms, median / p95)",
                  {k: med_p95(v["over_floor_ms"]) for k, v in d.items()},
                  {k: _median(v["over_floor_ms"]) for k, v in d.items()},
                  "≤ 1 / ≤ 3", bool(over) and s["median"] <= 1 and s["p95"] <= 3)
        beside = r["restart"].get("beside", {})
        for n, d in beside.get("daemons", {}).items():
            over = d.get(OURS, {}).get("over_floor_ms", [])
            s = summary(over)
            t.add(f"restart over the floor beside N={int(n):,} quiet services (the floor "
                  f"with N processes beside it: {med_p95(beside['floor_ms'][n])}), toy lives "
                  f"{REALISTIC} (ms, median / p95)",
                  {k: med_p95(v["over_floor_ms"]) for k, v in d.items()},
                  {k: _median(v["over_floor_ms"]) for k, v in d.items()},
                  "≤ 1 / ≤ 3", bool(over) and s["median"] <= 1 and s["p95"] <= 3)
            t.add(f"daemon CPU a restart beside N={int(n):,} quiet services (ms)",
                  {k: fmt(v["cpu_ms_per_restart"]) for k, v in d.items()},
                  {k: v["cpu_ms_per_restart"] for k, v in d.items()})
    if "detect" in r:
        d = r["detect"]["daemons"]
        for kind in ("created", "opened"):
            for change in ("STOP", "CONT", "exit (kill -9)"):
                key = f"{kind} {change}"
                values = d.get(OURS, {}).get(key, [])
                s = summary(values)
                t.add(f"external {change} of a {kind} process → status (ms, median / p95)",
                      {k: med_p95(v.get(key, [])) for k, v in d.items()},
                      {k: _median(v.get(key, [])) for k, v in d.items()},
                      "≤ 5 (p95)", bool(values) and s["p95"] <= 5)
    if "scale" in r:
        d = r["scale"]["daemons"]
        ns = sorted({int(n) for per in d.values() for n in per})
        for n in ns:
            key = str(n)
            cells, meds = _per_daemon(
                d, key, lambda x: f"{fmt(x['idle']['cpu_exact_ms_per_s'])} "
                                  f"({x['idle']['cpu_ms_per_s']:.1f})",
                lambda x: x["idle"]["cpu_exact_ms_per_s"])
            met = None
            if n == 1000 and key in d.get(OURS, {}):
                idle = d[OURS][key]["idle"]
                met = idle["cpu_exact_ms_per_s"] < 0.05 and round(idle["cpu_ms_per_s"], 1) == 0
            t.add(f"idle CPU, N={n:,} (ms/s: schedstat (stat ticks))", cells, meds,
                  "0.0 at N=1,000" if n == 1000 else "", met)
        for n in ns:
            key = str(n)
            cells, meds = _per_daemon(
                d, key, lambda x: f"{fmt(x['idle']['wakeups_per_s'])} ({x['idle']['threads']} thr)",
                lambda x: x["idle"]["wakeups_per_s"])
            met = None
            if n == 1000 and key in d.get(OURS, {}):
                met = d[OURS][key]["idle"]["ctx_switches"] == 0
            t.add(f"idle wakeups, N={n:,} (context switches/s, all threads)", cells, meds,
                  "0 at N=1,000" if n == 1000 else "", met)
        for n in ns:
            if n < 100:
                continue
            key = str(n)
            cells, meds = {}, {}
            for k, per in d.items():
                if key in per:
                    v = per[key]
                    if v.get("cold_start_s") is None:
                        cells[k] = v.get("note", "never")
                        meds[k] = math.inf
                        continue
                    cells[k] = fmt(v["cold_start_s"])
                    if k == OURS:
                        cells[k] += f" (pipeline {fmt(v['pipeline_s'])})"
                    meds[k] = v["cold_start_s"]
            met = None
            if n == 1000 and key in d.get(OURS, {}):
                met = d[OURS][key]["cold_start_s"] <= 0.6
            median_of = ", the median of 3" if n <= 1000 else ""
            t.add(f"cold start of N={n:,} → all RUNNING (s; ours: daemon start + create "
                  f"pipeline{median_of})", cells, meds,
                  "≤ 0.6 s at N=1,000" if n == 1000 else "", met)
            floor = r["scale"].get("spawn_floor", {}).get(key)
            if floor:
                t.add(f"spawn floor, N={n:,}: bare posix_spawn calls from the harness (s, "
                      "median); the toys' own start-up CPU (s)",
                      {OURS: f"{fmt(_median(floor['wall_s']))}; "
                             f"{fmt(_median(floor['toys_cpu_s']))} CPU"}, {})
        for n in ns:
            key = str(n)
            cells, meds = _per_daemon(d, key, lambda x: fmt(x["idle"]["rss_mb"]),
                                      lambda x: x["idle"]["rss_mb"])
            target, met = "", None
            if n in (1000, 10000) and key in d.get(OURS, {}):
                limit = 30 if n == 1000 else 100
                target, met = f"≤ {limit} MB", d[OURS][key]["idle"]["rss_mb"] <= limit
            t.add(f"daemon RSS with N={n:,} (MB)", cells, meds, target, met)
    if "cli" in r:
        c = r["cli"]["commands"]
        floor = c.get("floor: python -c pass", {}).get("ms", [])
        ours = next((v["ms"] for k, v in c.items() if k.startswith("ours")), [])
        sd = c.get("supervisorctl status q1", {}).get("ms", [])
        ci = c.get("circusctl status q1", {}).get("ms", [])
        cells = {OURS: med_p95(ours), SD: med_p95(sd), C5: med_p95(ci)}
        meds = {OURS: _median(ours), SD: _median(sd), C5: _median(ci)}
        met = None
        if ours and floor:
            met = _median(ours) <= _median(floor) + 20 and (not sd or _median(ours) < _median(sd))
        t.add("CLI: one service's status, end to end (ms, median / p95; circus column: "
              "circusctl)", cells, meds,
              f"≤ floor + 20 = {fmt(_median(floor) + 20) if floor else '?'}, < supervisorctl",
              met)
        t.add("CLI floor: `python -c pass`, same interpreter (ms, median / p95)",
              {OURS: med_p95(floor), SD: med_p95(floor), C5: med_p95(floor)}, {})
    if "throughput" in r:
        tp = r["throughput"]
        med = _median(tp["per_s"])
        t.add("pipelined service-status through the Python client, state only (`\"usage\": "
              "false`) (requests/s, median)", {OURS: fmt(med)}, {}, "≥ 20,000", med >= 20000)
        if tp.get("per_s_usage"):
            t.add("pipelined service-status with the usage fields (the default: three kernel "
                  "file reads an answer) (requests/s, median)",
                  {OURS: fmt(_median(tp["per_s_usage"]))}, {})
        t.add("service-status one at a time, round trip (µs, median / p95)",
              {OURS: med_p95(tp["round_trip_us"])}, {})
    if "scale" in r:
        for n, v in r["scale"]["daemons"].get(OURS, {}).items():
            if "list_supervisor_ms" in v:
                s = summary(v["list_supervisor_ms"])
                target, met = ("≤ 250 ms", s["median"] <= 250) if int(n) >= 10000 else ("", None)
                t.add(f"list-supervisor with {int(n):,} services, client call, state only "
                      "(`\"usage\": false`) (ms, median / p95)",
                      {OURS: med_p95(v["list_supervisor_ms"])}, {}, target, met)
            if "list_supervisor_usage_ms" in v:
                t.add(f"list-supervisor with {int(n):,} services and their usage (the "
                      "default, the CLI's; ms, median / p95)",
                      {OURS: med_p95(v["list_supervisor_usage_ms"])}, {})
    return t


def _detail(rows: list[tuple[str, list]], unit: str) -> str:
    lines = [f"| series | n | median {unit} | p95 {unit} | min {unit} | max {unit} |",
             "|---|---|---|---|---|---|"]
    for label, values in rows:
        s = summary(values)
        lines.append(f"| {label} | {s['n']} | {fmt(s['median'])} | {fmt(s['p95'])} | "
                     f"{fmt(s['min'])} | {fmt(s['max'])} |")
    return "\n".join(lines)


def _journald_line(r: dict) -> str:
    mode = r.get("journald_mode", "as is")
    seen = []
    for fig in ("restart", "detect", "scale", "cli", "throughput"):
        x = r.get(fig)
        if not isinstance(x, dict):
            continue
        flags = [x.get("journald"), x.get("ours_journald"),
                 x.get("daemons", {}).get(OURS, {}).get("journald")]
        flags += [v.get("journald") for v in x.get("daemons", {}).get(OURS, {}).values()
                  if isinstance(v, dict)] if fig == "scale" else []
        if any(flags):
            seen.append(fig)
    text = f"{mode}; our daemon logged every command and event to "
    text += (f"journald in: {', '.join(seen)}" if seen else "its stderr log file throughout")
    return text


def render(r: dict, images: dict[str, str]) -> str:
    cfg = r["settings"]
    m = r["machine"]
    v = r["versions"]
    out = []
    w = out.append
    w("# Benchmarks: Supervisor vs supervisord and circus\n")
    w("Generated by `make bench` (`bench/run.py`"
      + (" --smoke: SMOKE RUN, small N and short windows, not representative" if cfg["smoke"]
         else "") + f") on {r['started']}. Every figure below comes from that one run: the "
      "three supervisors measured one after the other on the same machine, with the same "
      "toy programs. Raw samples: `bench/results/*.json` (not committed).\n")
    w("## Machine\n")
    w("| | |\n|---|---|")
    w(f"| CPUs (nproc) | {m['nproc']} |")
    w(f"| CPU model | {m['cpu']} |")
    w(f"| kernel | {m['kernel']} |")
    w(f"| OS | {m['distro']} |")
    w(f"| memory | {m['memory_gib']} GiB |")
    w(f"| python | {m['python']} |")
    w(f"| RLIMIT_NOFILE (soft/hard) | {m['nofile']} |")
    w(f"| journald | {_journald_line(r)} |")
    if r.get("environment"):
        w("| environment (harness, every daemon, every toy) | "
          + " ".join(f"`{k}={v}`" for k, v in r["environment"].items()) + " |")
    w(f"| load average before / after | {' '.join(r['loadavg_before'])} / "
      f"{' '.join(r.get('loadavg_after', ['?']))} |")
    w(f"| ours | pidfd-supervisor {v.get('ours', '?')} |")
    w(f"| peers | supervisor (supervisord) {v.get('supervisor', '?')}, circus "
      f"{v.get('circus', '?')} (pyzmq {v.get('pyzmq', '?')}, tornado {v.get('tornado', '?')},"
      f" psutil {v.get('psutil', '?')}); plots: matplotlib {v.get('matplotlib', '?')} |\n")

    t = summary_table(r)
    w("## Summary\n")
    w("Cells are median / p95 unless said otherwise. Ratios are ours ÷ peer on the median "
      "(below 1: ours takes less time, CPU, memory); \"0 (peer never)\" where the peer "
      "never reports the change. \"met\" judges ours against the project's targets.\n")
    w(t.render() + "\n")
    if t.misses:
        w("**Targets missed in this run:**\n")
        for miss in t.misses:
            w(f"- {miss}")
        w("")
    if r.get("errors"):
        w("**Figures that failed in this run** (see the raw results for the traceback): "
          + ", ".join(r["errors"]) + "\n")

    if "restart" in r:
        rs = r["restart"]
        w("## 1. Crash → restart latency\n")
        if "restart" in images:
            w(f"![restart latency]({images['restart']})\n")
        w("The toy `bench/toys/crash_toy` is a `/bin/sh` script: `date +%s%N` to its record "
          "file when it starts, then it lives a while (`sleep`: 0.3 s plus a random part of "
          "0.3 s, 0.3 s, 0.05 s, or not at all), `date` again right before `kill -SEGV $$`. "
          "A toy that crashes at once restarts back to back, which keeps the kernel's locks "
          "and caches warm (a write to `cgroup.procs` waits for an RCU grace period unless "
          "another came just before): the longer lifetimes are the realistic ones. Each row "
          f"also runs ours with the spawn path kept for kernels without clone3's "
          f"CLONE_INTO_CGROUP (`{FALLBACK}`: posix_spawn, the daemon stepping into the "
          "service's cgroup for the spawn, which is how every restart was made before). "
          "Restart latency = next "
          "start record − crash record. Bare start-up = the same toy run straight from the "
          "harness (posix_spawn; start record − spawn time), in the run's one environment "
          "(see Machine), which every supervisor passes on to its toy as well: the toy's "
          "start-up depends on it (a UTF-8 `LANG` makes `date` load locale files); *share* "
          "= latency − median bare start-up. The toy's crash tail (crash record → the "
          "harness sees it dead on a pidfd) is in every supervisor's latency as well; it is "
          "not subtracted from the share and is shown for reference. The bare start-up is "
          "warm (back to back); a toy that lived a while starts on a machine that idled "
          "meanwhile, which costs every supervisor alike: so each lifetime also has its "
          "*floor*, the least possible restart, measured with the harness itself as the "
          "supervisor (wait on the toy's pidfd, reap, posix_spawn it again at once, output "
          "to /dev/null); *over the floor* = latency − the floor's median at that lifetime "
          "is what a supervisor adds, and what the target judges.\n")
        w("Configuration: ours `create-service -r K`; supervisord `startsecs=0`, "
          "`autorestart=true`, `startretries=1000000`; circus `respawn = True`, "
          "`check_flapping = False` (otherwise it stops a crash loop), `copy_env = True` "
          "(the run's environment, as the others pass on), `check_delay` 5 "
          "(its default) and 0.1. circus has no SIGCHLD handler: it reaps and respawns "
          "only on its `check_delay` timer.\n")
        rows = [("toy's bare start-up", rs["bare_startup_ms"]),
                ("toy's crash tail", rs["crash_tail_ms"])]
        notes = []
        for life, per in rs["lifetimes"].items():
            if "floor_ms" in per:
                rows.append((f"{life}: floor (the harness restarts it): latency",
                             per["floor_ms"]))
            for label, dd in per["daemons"].items():
                rows.append((f"{life}: {label}: latency", dd["latency_ms"]))
                rows.append((f"{life}: {label}: share", dd["share_ms"]))
                if "over_floor_ms" in dd:
                    rows.append((f"{life}: {label}: over the floor", dd["over_floor_ms"]))
                if dd.get("note"):
                    notes.append(f"- toy lives {life}, {label}: {dd['note']}")
        w(_detail(rows, "(ms)") + "\n")
        if notes:
            w("\n".join(notes) + "\n")
        if rs.get("beside"):
            w(f"Beside many: the toy that lives {REALISTIC} restarted beside N quiet "
              "services (`sleep`, started first, output to /dev/null), counted from once all "
              "N run; over the floor, where the floor is measured as above with N other "
              "processes on the machine (the harness's own `sleep`s: a machine of 10,000 "
              "processes restarts a toy more slowly whoever does it), and the daemon's own "
              "CPU a restart (schedstat "
              "of its threads over the window ÷ the restarts in it, with the harness's "
              "status polls, one each 0.5 s). A supervisor whose every change rewrites its "
              "whole state, or that walks every service on each event, shows it here. "
              "Ours writes the services that changed to its state file's log, one line a "
              "save (`supervisor/state.py`, `StateFile`); before, it rewrote the whole "
              "document: 12.95 ms of CPU a restart beside 6,000 services, against 1.25 "
              "beside none (measured 2026-12-06 by /proc/<pid>/stat over 200 restarts of "
              "the 0 s toy). What still grows with N is the kernel's: on each end of a "
              "child, SIGCHLD, whose drain (`waitid(P_ALL, WSTOPPED | WCONTINUED)`, the only "
              "way to see a child stop) walks every child the daemon has (`perf record` of "
              "the daemon, 300 restarts beside 10,000: `wait_consider_task` 11.5 % of its "
              "samples). A child given no exit signal (clone3's `exit_signal` 0) sends "
              "SIGCHLD all the same once it has exec'd (tried here), so the drain stays; "
              "but a SIGCHLD that says a child ended is drained 20 ms later "
              "(`daemon.DRAIN_AFTER_END`), off the path of the restart it starts (only a "
              "stop that came while that SIGCHLD was pending needs it; a SIGCHLD that says "
              "stop or continue is drained at once). In the same turn as the spawn, it "
              "shared the 2 CPUs with the toy's start-up: median latency beside 10,000 3.55 "
              "→ 2.8 ms (one run of 40 restarts each, 2026-12-06).\n")
            rows, notes = [], []
            for n, per in rs["beside"]["daemons"].items():
                rows.append((f"N={int(n):,}: floor, N processes beside it: latency",
                             rs["beside"]["floor_ms"][n]))
                for label, dd in per.items():
                    rows.append((f"N={int(n):,}: {label}: over the floor",
                                 dd["over_floor_ms"]))
                    if dd.get("note"):
                        notes.append(f"- N={int(n):,}, {label}: {dd['note']}")
            w(_detail(rows, "(ms)") + "\n")
            if notes:
                w("\n".join(notes) + "\n")

    if "detect" in r:
        dt = r["detect"]
        w("## 2. External stop / continue / exit → status\n")
        if "detect" in images:
            w(f"![detection latency]({images['detect']})\n")
        w("A fresh `/bin/sleep 100000` per round is sent `kill -STOP`, `kill -CONT`, then "
          "`kill -9` from outside; the status API is asked in a tight loop (one request in "
          "flight) until it shows the change: ours `service-status` through the Python "
          "client; supervisord `getProcessInfo` over XML-RPC; circus `list <watcher>` (the "
          "pid has gone) and `status <watcher>` over its ZeroMQ socket. Each time includes up "
          "to one round trip of the asking client. supervisord and circus have no stopped "
          f"state: a STOP is waited for {dt['bound_stop_s']:g} s and counted as never, and "
          "so is the CONT after it (there is nothing to leave). Exits are waited for at most "
          f"{dt['bound_exit_s']:g} s. \"opened\" = a process the daemon did not start, "
          "adopted with open-service: only ours can.\n")
        rows = []
        for label, dd in dt["daemons"].items():
            for change, values in dd.items():
                if values:
                    rows.append((f"{label}: {change}", values))
        w(_detail(rows, "(ms)") + "\n")

    if "scale" in r:
        sc = r["scale"]["daemons"]
        w("## 3. Idle cost with N quiet services\n")
        if "idle" in images:
            w(f"![idle cost]({images['idle']})\n")
        w(f"N services `/bin/sleep 100000`; after all run and a {cfg['settle']:g} s pause, "
          f"with no client connected, the daemon is watched for {cfg['idle_window']:g} s: "
          "CPU = utime + stime from `/proc/<pid>/stat` (10 ms ticks, in brackets) and the "
          "exact on-CPU time from `/proc/<pid>/task/*/schedstat`; wakeups = voluntary + "
          "nonvoluntary context switches summed over `/proc/<pid>/task/*/status` (every "
          "thread).\n")
        w("| daemon | N | CPU ms/s (schedstat) | CPU ms/s (stat) | wakeups/s | context "
          "switches | threads | RSS MB | children |")
        w("|---|---|---|---|---|---|---|---|---|")
        for label, per in sc.items():
            for n in sorted(per, key=int):
                x = per[n]
                i = x["idle"]
                w(f"| {label} | {int(n):,} | {fmt(i['cpu_exact_ms_per_s'])} | "
                  f"{i['cpu_ms_per_s']:.2f} | {fmt(i['wakeups_per_s'])} | {i['ctx_switches']} "
                  f"| {i['threads']} | {fmt(i['rss_mb'])} | {x.get('children', '?')} |")
        w("")
        w("## 4. Cold start of N services, and RSS\n")
        if "coldstart" in images:
            w(f"![cold start and RSS]({images['coldstart']})\n")
        w("Ours: `init` starts the daemon, then one `Client.pipeline` of N create-service "
          "requests (each answered RUNNING; a list-supervisor confirms). Peers: their config "
          "file lists N programs; from launching the daemon until their status API reports "
          "all N running (polled every 20 ms). RSS: VmRSS of the daemon at the end of the "
          "idle window.\n")
        floors = r["scale"].get("spawn_floor", {})
        if floors:
            w("The spawn floor: the same N toys started by N back-to-back `posix_spawn` "
              "calls (new session each, as ours) from the small harness process, with no "
              "pidfd, cgroup, log entry or protocol: the floor, on this machine, for a "
              "supervisor that starts its services one at a time with posix_spawn. Most "
              "of a spawn is the caller waiting for the child's `exec` (vfork semantics). "
              "Beside it, the CPU the N toys burn to get started (exec, dynamic loading; "
              "from their /proc/<pid>/schedstat): any cold start shares the "
              f"{next(iter(floors.values()))['cpus']} CPUs with that work.\n")
            w("| N | N bare posix_spawn calls (s, median) | the toys' own start-up CPU "
              "(s, median) | that CPU spread over all CPUs (s) |")
            w("|---|---|---|---|")
            for n, v in sorted(floors.items(), key=lambda kv: int(kv[0])):
                cpu = _median(v["toys_cpu_s"])
                w(f"| {int(n):,} | {fmt(_median(v['wall_s']))} | {fmt(cpu)} | "
                  f"{fmt(cpu / v['cpus'])} |")
            w("")
        w("| daemon | N | launch → all running (s) | of which: daemon start (s) | create "
          "pipeline (s) | daemon's CPU in it (s) | the toys' CPU (s) | CPUs busy in it | "
          "RSS MB | shutdown (s) |")
        w("|---|---|---|---|---|---|---|---|---|---|")
        for label, per in sc.items():
            for n in sorted(per, key=int):
                x = per[n]
                cold = x.get("cold_start_s")
                cold_text = fmt(cold) if cold is not None else x.get("note", "never")
                w(f"| {label} | {int(n):,} | {cold_text} | "
                  f"{fmt(x.get('daemon_start_s'))} | {fmt(x.get('pipeline_s'))} | "
                  f"{fmt(x.get('daemon_cpu_s'))} | {fmt(x.get('toys_cpu_s'))} | "
                  f"{_percent(x.get('cpus_busy'))} | "
                  f"{fmt(x['idle']['rss_mb'])} | {fmt(x.get('shutdown_s'))} |")
        w("")
        w("On 2 CPUs a cold start cannot end before (daemon's CPU + the toys' CPU) / CPUs: "
          "each toy's own start-up (exec, dynamic loading; `perf stat /bin/sleep 0`: "
          "0.58 ms task-clock here) is work no supervisor can take off it, and ours "
          "adds its create (request, checks, cgroup, spawn, state, answer) to the same "
          "CPUs. Where the daemon's own CPU goes in a create pipeline of 1,000 (`perf "
          "record -F 20000 -g -p <daemon>` around the pipeline alone, the daemon's thread; "
          "measured 2026-12-05): 60 % the Python interpreter (decoding the request, the "
          "checks, the state machine, the journal entries, the state file, the answer), "
          "and in the kernel: `clone3` 12.5 % (`copy_process` 7.8 %: the child's task, "
          "cred, signal and pid structures; the parent's side only), `openat` 8.6 % (the "
          "cgroup's dir for CLONE_INTO_CGROUP and the usage of the create's answer: "
          "`cpu.stat`, and where the memory and pids controllers are off, as here, the "
          "cgroup's processes and their `/proc/<pid>/stat`), `mkdir` of the service's "
          "cgroup 7.6 %, `read` 3.4 %, `close` 2.2 %. The daemon also waits for each "
          "child's `exec` (vfork semantics: ~0.19 ms a spawn, off CPU) and for a CPU "
          "(~0.16 s over the 1,000, by its schedstat) while the toys start on both.\n")
        w("Not waiting for the child's `exec` does not make it faster. We tried it on "
          "2026-12-06: CLONE_VM without CLONE_VFORK, the children on a ring of 16 stacks, "
          "a stack used again only once CLONE_CHILD_CLEARTID's futex says its child has "
          "exec'd. That took the daemon's `clone3` from ~0.31 ms to 0.07 ms a spawn "
          "(`perf trace -s -p <daemon>`), but a cold start of 1,000 took 0.886 s against "
          "0.914 s before (medians of 7 and of 5 runs, within this VM's noise). The CPUs "
          "were already busy for most of the pipeline (the column above: ~80 % then): the "
          "toys' start-ups only moved onto the daemon's CPU. We kept the vfork spawn, "
          "which lets a create report an exec error in its own answer.\n")

    if "cli" in r:
        c = r["cli"]
        w("## 5. CLI latency\n")
        if "cli" in images:
            w(f"![CLI latency]({images['cli']})\n")
        w(f"Each command run {c['runs']} times end to end with {c['tool']}; the floor is the "
          "interpreter both venvs use, starting and doing nothing. Bytecode caches are "
          "there as in a normal installation: ours compiled by scripts/bootstrap (and "
          "`make bench`), the peers' by pip; this machine sets PYTHONDONTWRITEBYTECODE, "
          "which is dropped for these commands anyway.\n")
        rows = [(f"`{k}`", v["ms"]) for k, v in c["commands"].items()]
        w(_detail(rows, "(ms)") + "\n")
        w("Commands: " + "; ".join(f"`{v['cmd']}`" for v in c["commands"].values()) + "\n")

    if "throughput" in r or "scale" in r:
        w("## 6. Request throughput and list-supervisor at scale (ours only)\n")
        if "throughput" in images:
            w(f"![throughput]({images['throughput']})\n")
        if "throughput" in r:
            tp = r["throughput"]
            w(f"Batches of {tp['requests']:,} pipelined `service-status` requests through "
              "`supervisor.client.Client.pipeline`, one client, one service; and the same "
              "request one at a time.\n")
            w(_detail([("requests/s per batch", tp["per_s"]),
                       ("round trip, one at a time (µs)", tp["round_trip_us"])], "") + "\n")
        for n, x in r.get("scale", {}).get("daemons", {}).get(OURS, {}).items():
            if "list_supervisor_ms" in x:
                w(_detail([(f"list-supervisor, {int(n):,} services (client call)",
                            x["list_supervisor_ms"])], "(ms)") + "\n")

    w("## How long it took\n")
    w("| part | seconds | load average at start → end |\n|---|---|---|")
    for k, s in r.get("seconds", {}).items():
        la = r.get("loadavg", {}).get(k)
        w(f"| {k} | {s:.0f} | " + (f"{' '.join(la[0])} → {' '.join(la[1])}" if la else "")
          + " |")
    w("")
    w("## Reproduce\n")
    w("```sh\nmake bench        # ~10-15 min: installs the peers in bench/.peers/, measures, "
      "writes this page and its PNGs\nmake bench-smoke  # < 1 min: the same harness, small N "
      "and short windows (bench/results/smoke.md)\n"
      "# where our time goes: our daemon (or CLI) under cProfile on one workload\n"
      ".venv/bin/python bench/profile_ours.py {throughput,cold,list,restart,cli} "
      "[--n N] [--no-journald]\n```\n")
    w("Settings of this run: " + ", ".join(f"`{k}={v}`" for k, v in cfg.items()) + "\n")
    return "\n".join(out)
