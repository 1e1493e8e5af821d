"""Figure 6 (first half): requests per second through our Python client.

One instance with a single service; batches of pipelined ``service-status`` requests
through ``Client.pipeline`` (the client keeps 1024 in flight), state only (``"usage":
false``) and with the usage fields (the default), and, for reference, the same request one
at a time (round trip). The list-supervisor time at the largest N is
measured in the scale run (fig_scale).
"""

from __future__ import annotations

import time

from common import log
from daemons import Ours

SLEEP = ["/bin/sleep", "100000"]


def run(cfg) -> dict:
    with Ours() as d:
        c = d.client
        c.create_service(SLEEP[0], SLEEP[1:], name="q1", cwd="/")
        # "usage": false: the state only, as the target was set (before the service object
        # had usage fields); then the default, whose three kernel file reads an answer cost
        plain = [("service-status", {"service": "q1", "usage": False})] * cfg.tput_requests
        full = [("service-status", {"service": "q1"})] * cfg.tput_requests
        c.pipeline(plain[:1000])  # warm up
        rates, rates_usage = [], []
        for rep in range(cfg.tput_reps):
            for batch, out, what in ((plain, rates, "state only"),
                                     (full, rates_usage, "with usage")):
                t = time.perf_counter()
                answers = c.pipeline(batch)
                dt = time.perf_counter() - t
                if any(not isinstance(a, dict) for a in answers):
                    raise RuntimeError("throughput: some service-status requests failed")
                out.append(len(batch) / dt)
                log(f"throughput: batch {rep + 1} ({what}): {out[-1]:,.0f} requests/s")
        rtt = []
        for _ in range(cfg.tput_rtt):
            t = time.perf_counter()
            c.service_status("q1")
            rtt.append((time.perf_counter() - t) * 1e6)
    return {"requests": cfg.tput_requests, "per_s": rates, "per_s_usage": rates_usage,
            "round_trip_us": rtt, "journald": d.journald}
