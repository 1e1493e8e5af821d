"""Benchmark Supervisor against supervisord 4.3.0 and circus 0.19.0, in one run.

    make bench          # = .venv/bin/python bench/run.py --out docs/benchmarks.md
    make bench-smoke    # = .venv/bin/python bench/run.py --smoke --out bench/results/smoke.md

Run it with our venv's python (``import supervisor`` must be ours); the peers and
matplotlib come from ``bench/.peers/venv`` (built by ``make bench`` from
bench/requirements-peers.txt). Writes the report (markdown) to ``--out``, its PNG figures
beside it, and the raw samples to ``bench/results/<name>.json``.

Figures (one module each): fig_restart (crash -> restart), fig_detect (external
stop/continue/exit), fig_scale (cold start, idle cost, RSS, list-supervisor at the largest
N), fig_cli (CLI latency), fig_throughput (pipelined requests/s).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
from common import BENCH, REPO, log

FIGURES = ("restart", "detect", "scale", "cli", "throughput")


def settings(smoke: bool) -> argparse.Namespace:
    full = dict(
        restart_bare=100, restart_ours=200, restart_window=30.0, restart_peers=100,
        restart_cap=30.0, beside_ours=[1000, 10000], beside_peers=[1000], beside_restarts=40,
        detect_rounds=30, detect_peer_rounds=20, detect_peer_stop_rounds=3,
        detect_bound_stop=3.0, detect_bound_exit=6.0,
        ns_ours=[10, 100, 1000, 10000], ns_peers=[10, 100, 1000], settle=2.0,
        idle_window=20.0, cold_cap=180.0, list_reps=7,
        cli_runs=40, cli_warmup=3,
        tput_requests=20000, tput_reps=5, tput_rtt=2000,
    )
    quick = dict(
        restart_bare=10, restart_ours=10, restart_window=1.0, restart_peers=10,
        restart_cap=1.5, beside_ours=[20], beside_peers=[20], beside_restarts=3,
        detect_rounds=3, detect_peer_rounds=3, detect_peer_stop_rounds=1,
        detect_bound_stop=0.3, detect_bound_exit=1.5,
        ns_ours=[5, 20], ns_peers=[5, 20], settle=0.2,
        idle_window=1.0, cold_cap=20.0, list_reps=3,
        cli_runs=3, cli_warmup=1,
        tput_requests=2000, tput_reps=2, tput_rtt=200,
    )
    return argparse.Namespace(smoke=smoke, **(quick if smoke else full))


def _on_signal(signo, frame):
    raise KeyboardInterrupt(f"signal {signo}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true",
                    help="small N and 1-2 s windows: checks the harness in well under a minute")
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "benchmarks.md"),
                    help="the markdown report; PNGs go beside it (default docs/benchmarks.md)")
    ap.add_argument("--only", default=",".join(FIGURES),
                    help=f"comma-separated subset of {','.join(FIGURES)}")
    ap.add_argument("--journald", choices=["hide", "as-is"], default="hide",
                    help="hide (default): our daemon logs to its stderr log file like the "
                         "peers log to theirs, whether or not a journald runs; as-is: it "
                         "logs to journald when one answers")
    ap.add_argument("--from-json", metavar="FILE",
                    help="do not measure: rewrite the report and plots from saved results")
    args = ap.parse_args(argv)
    only = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = set(only) - set(FIGURES)
    if unknown:
        ap.error(f"unknown figure(s): {', '.join(sorted(unknown))}")

    common.use_peer_packages()
    out = os.path.abspath(args.out)
    stem = os.path.splitext(os.path.basename(out))[0]
    raw_path = os.path.join(BENCH, "results", f"{stem}.json")

    if args.from_json:
        with open(args.from_json) as f:
            results = json.load(f)  # Infinity (never) and NaN load as floats
    else:
        results = measure(settings(args.smoke), only, args.journald)
        os.makedirs(os.path.dirname(raw_path), exist_ok=True)
        with open(raw_path, "w") as f:
            json.dump(results, f, indent=1)
        log(f"raw results: {os.path.relpath(raw_path, REPO)}")

    import plot
    import report

    os.makedirs(os.path.dirname(out), exist_ok=True)
    images = plot.all_figures(results, os.path.dirname(out), prefix="bench-" if
                              not results["settings"]["smoke"] else "smoke-")
    with open(out, "w") as f:
        f.write(report.render(results, images))
    log(f"report: {os.path.relpath(out, os.getcwd())} ({len(images)} figures)")
    if results.get("errors"):
        log(f"{len(results['errors'])} figure(s) failed: {', '.join(results['errors'])}")
        return 1
    return 0


def measure(cfg: argparse.Namespace, only: list[str], journald: str) -> dict:
    import fig_cli
    import fig_detect
    import fig_restart
    import fig_scale
    import fig_throughput

    modules = {"restart": fig_restart, "detect": fig_detect, "scale": fig_scale,
               "cli": fig_cli, "throughput": fig_throughput}
    journal_mode = common.hide_journald() if journald == "hide" else "as is"
    log(f"journald: {journal_mode}")
    environment = common.use_bench_env()
    common.become_subreaper()
    signal.signal(signal.SIGTERM, _on_signal)
    results: dict = {"settings": vars(cfg), "machine": common.machine(),
                     "versions": common.peer_versions(), "errors": {}, "seconds": {},
                     "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                     "loadavg_before": common.loadavg(), "loadavg": {},
                     "journald_mode": journal_mode, "environment": environment}
    results["versions"]["ours"] = _our_version()
    t_all = time.perf_counter()
    try:
        for name in only:
            t = time.perf_counter()
            load_before = common.loadavg()
            try:
                results[name] = modules[name].run(cfg)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # record it, carry on with the other figures
                log(f"{name} FAILED: {exc!r}")
                results["errors"][name] = traceback.format_exc()
            finally:
                left = common.sweep()
                if left:
                    log(f"{name}: killed {left} leftover process(es)")
            results["seconds"][name] = time.perf_counter() - t
            results["loadavg"][name] = [load_before, common.loadavg()]
            log(f"{name}: {results['seconds'][name]:.1f} s")
    finally:
        left = common.sweep()
        if left:
            log(f"killed {left} leftover process(es)")
    results["seconds"]["total"] = time.perf_counter() - t_all
    results["loadavg_after"] = common.loadavg()
    return results


def _our_version() -> str:
    import subprocess

    from supervisor import __version__

    try:
        rev = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return f"{__version__} ({rev})" if rev else __version__


if __name__ == "__main__":
    sys.exit(main())
