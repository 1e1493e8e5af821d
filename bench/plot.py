"""PNG figures of the distributions (matplotlib from the peers' venv, Agg backend)."""

from __future__ import annotations

import math
import os

COLORS = {"ours": "#1b9e77", "supervisord": "#d95f02", "circus (check_delay=5)": "#7570b3",
          "circus (check_delay=0.1)": "#e7298a", "bare": "#666666",
          "ours, fallback spawn": "#1b9e77"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "font.size": 9, "axes.grid": True,
                         "grid.alpha": 0.3})
    return plt


def _color(label: str) -> str:
    return COLORS.get(label, "#333333")


def _ecdf(ax, values, label, color, **kw):
    xs = sorted(v for v in values if math.isfinite(v))
    if not xs:
        return
    ys = [(i + 1) / len(values) for i in range(len(xs))]
    ax.step(xs, ys, where="post", label=f"{label} (n={len(values)})", color=color, **kw)


def restart(res: dict, path: str) -> None:
    """One panel a toy lifetime: what each supervisor adds to the least possible restart
    (over the floor; the share over the warm bare start-up in runs from before the floor),
    ECDF, log ms."""
    plt = _plt()
    lifetimes = list(res["lifetimes"])
    fig, axes = plt.subplots(1, len(lifetimes), figsize=(4.2 * len(lifetimes), 4.2),
                             squeeze=False)
    for ax, life in zip(axes[0], lifetimes, strict=True):
        for label, d in res["lifetimes"][life]["daemons"].items():
            added = d.get("over_floor_ms", d["share_ms"])
            _ecdf(ax, [max(v, 1e-3) for v in added], label, _color(label),
                  **({"linestyle": "--"} if "fallback" in label else {}))
        _ecdf(ax, res["crash_tail_ms"], "toy's crash tail", _color("bare"), linestyle=":")
        ax.set_xscale("log")
        ax.set_xlabel("ms (log)")
        ax.set_ylabel("fraction of restarts")
        what = "over the floor" if "floor_ms" in res["lifetimes"][life] else "share"
        ax.set_title(f"restart latency {what}, toy lives {life}", fontsize=9)
        ax.legend(fontsize=6, loc="lower right")
        ax.axvline(1, color="k", lw=0.8, ls="--")
        ax.text(1, 0.02, " target median 1 ms", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def detect(res: dict, path: str) -> None:
    plt = _plt()
    daemons = list(res["daemons"])
    changes = ["created STOP", "created CONT", "created exit (kill -9)", "opened STOP",
               "opened CONT", "opened exit (kill -9)"]
    bound = max(res["bound_stop_s"], res["bound_exit_s"]) * 1000
    fig, ax = plt.subplots(figsize=(11, 4.6))
    width = 0.8 / len(daemons)
    never_drawn = False
    for j, label in enumerate(daemons):
        for i, change in enumerate(changes):
            values = res["daemons"][label].get(change)
            if not values:
                continue
            x = i - 0.4 + width * (j + 0.5)
            finite = [v for v in values if math.isfinite(v)]
            if finite:
                ax.boxplot([finite], positions=[x], widths=width * 0.8, showfliers=True,
                           patch_artist=True, manage_ticks=False,
                           boxprops={"facecolor": _color(label), "alpha": 0.6},
                           medianprops={"color": "k"}, flierprops={"markersize": 2})
            if len(finite) < len(values):
                ax.scatter([x], [bound * 1.5], marker="x", color=_color(label), s=40)
                never_drawn = True
        ax.plot([], [], color=_color(label), lw=6, alpha=0.6, label=label)
    if never_drawn:
        ax.axhline(bound * 1.5, color="k", lw=0.5, ls=":")
        ax.text(len(changes) - 0.5, bound * 1.6, "x = never (bounded wait)", fontsize=7,
                ha="right")
    ax.axhline(5, color="k", lw=0.8, ls="--")
    ax.text(-0.45, 5.5, "target 5 ms", fontsize=7)
    ax.set_xticks(range(len(changes)), changes)
    ax.set_yscale("log")
    ax.set_ylabel("ms until the status shows it (log)")
    ax.set_title("external change -> seen in status (only ours can open a process)")
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def scale(res: dict, path_idle: str, path_cold: str) -> None:
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, per_n in res["daemons"].items():
        ns = sorted(per_n, key=int)
        xs = [int(n) for n in ns]
        a1.plot(xs, [per_n[n]["idle"]["cpu_exact_ms_per_s"] for n in ns], "o-",
                color=_color(label), label=label)
        a2.plot(xs, [per_n[n]["idle"]["wakeups_per_s"] for n in ns], "o-",
                color=_color(label), label=label)
    for ax, what in ((a1, "daemon CPU, ms per s (schedstat, all threads)"),
                     (a2, "daemon wakeups per s (context switches, all threads)")):
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=0.01)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("N quiet services (log)")
        ax.set_title(f"idle: {what}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path_idle)
    plt.close(fig)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, per_n in res["daemons"].items():
        ns = sorted(per_n, key=int)
        pts = [(int(n), per_n[n]["cold_start_s"]) for n in ns
               if per_n[n].get("cold_start_s") is not None]
        if pts:
            a1.plot(*zip(*pts, strict=True), "o-", color=_color(label), label=label)
        if label == "ours":
            pts = [(int(n), per_n[n]["pipeline_s"]) for n in ns]
            a1.plot(*zip(*pts, strict=True), "o--", color=_color(label),
                    label="ours: create pipeline alone")
        a2.plot([int(n) for n in ns], [per_n[n]["idle"]["rss_mb"] for n in ns], "o-",
                color=_color(label), label=label)
    a1.set_title("cold start: launch -> all N RUNNING (s)", fontsize=9)
    a2.set_title("daemon RSS (MB) with N services", fontsize=9)
    for ax in (a1, a2):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N services (log)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path_cold)
    plt.close(fig)


def cli(res: dict, path: str) -> None:
    plt = _plt()
    labels = list(res["commands"])
    fig, ax = plt.subplots(figsize=(11, 3.6))
    data = [res["commands"][k]["ms"] for k in labels]
    ax.boxplot(data, vert=False, tick_labels=labels, showfliers=True,
               flierprops={"markersize": 2})
    for i, values in enumerate(data):
        ax.scatter(values, [i + 1] * len(values), s=6, alpha=0.4, color="#1b9e77")
    ax.set_xlabel(f"ms per command, end to end ({res['tool']}, {res['runs']} runs)")
    ax.set_title("CLI latency: one service's status")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def throughput(res: dict, scale_res: dict | None, path: str) -> None:
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
    rtt = sorted(res["round_trip_us"])
    a1.hist(rtt[:max(1, int(len(rtt) * 0.995))], bins=50, color=_color("ours"), alpha=0.8)
    a1.set_xlabel("µs per service-status, one request at a time (99.5 % shown)")
    rates = sorted(res["per_s"])
    full = sorted(res.get("per_s_usage") or [0])
    a1.set_title(f"round trip; pipelined: median {rates[len(rates) // 2]:,.0f} requests/s "
                 f"state only, {full[len(full) // 2]:,.0f} with usage", fontsize=9)
    ours = (scale_res or {}).get("daemons", {}).get("ours", {})
    listed = [(n, v["list_supervisor_ms"]) for n, v in ours.items() if "list_supervisor_ms" in v]
    if listed:
        n, ms = listed[0]
        with_usage = ours[n].get("list_supervisor_usage_ms") or []
        x = list(range(len(ms)))
        a2.bar([i - 0.2 for i in x], ms, width=0.4, color=_color("ours"), label="state only")
        if with_usage:
            a2.bar([i + 0.2 for i in range(len(with_usage))], with_usage, width=0.4,
                   color=_color("ours"), alpha=0.45, label="with usage (default)")
        a2.axhline(250, color="k", lw=0.8, ls="--")
        a2.set_xlabel("repetition")
        a2.set_ylabel("ms")
        a2.legend(fontsize=8)
        a2.set_title(f"list-supervisor with {int(n):,} services (target 250 ms, state only)",
                     fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def all_figures(results: dict, outdir: str, prefix: str = "bench-") -> dict[str, str]:
    """Draw what the results hold; returns {figure: file name relative to outdir}."""
    images = {}

    def name(stem):
        return os.path.join(outdir, f"{prefix}{stem}.png")

    if "restart" in results:
        restart(results["restart"], name("restart"))
        images["restart"] = f"{prefix}restart.png"
    if "detect" in results:
        detect(results["detect"], name("detect"))
        images["detect"] = f"{prefix}detect.png"
    if "scale" in results:
        scale(results["scale"], name("idle"), name("coldstart"))
        images["idle"] = f"{prefix}idle.png"
        images["coldstart"] = f"{prefix}coldstart.png"
    if "cli" in results:
        cli(results["cli"], name("cli"))
        images["cli"] = f"{prefix}cli.png"
    if "throughput" in results:
        throughput(results["throughput"], results.get("scale"), name("throughput"))
        images["throughput"] = f"{prefix}throughput.png"
    return images
