"""How fast an external kill -STOP / -CONT / -9 shows in service-status: ours alone, the
same measurement as figure 2 of ``make bench`` (fig_detect), without the peers.

    .venv/bin/python bench/detect.py [--rounds N]

Starts a private instance, then for a created and for an opened process sends each signal
from outside and asks service-status in a tight loop until the status says so. Prints
median, p95 and max in milliseconds. (Querying costs ~0.1 ms a round trip, so the figure
includes up to that much of the client.)
"""

from __future__ import annotations

import argparse

from common import summary
from fig_detect import ours


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=50)
    rounds = ap.parse_args().rounds
    results, _journald = ours(rounds, bound=5.0)
    print(f"detection latency, {rounds} rounds (ms):")
    print(f"{'change':<24} {'median':>8} {'p95':>8} {'max':>8}")
    for key, values in results.items():
        s = summary(values)
        print(f"{key:<24} {s['median']:8.3f} {s['p95']:8.3f} {s['max']:8.3f}")


if __name__ == "__main__":
    main()
