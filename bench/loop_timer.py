"""Does a short final busy-wait make LoopTimer more punctual, and what does it cost?

Run: .venv/bin/python bench/loop_timer.py [--rate-hz 500] [--duration-s 3] [--spin-us 0,200,500]
For each spin setting prints wake-up lateness after the scheduled tick (p50/p99/max, us),
overruns/skipped ticks and the process CPU time used per second of loop.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from policy_distill_ros.core.loop_timer import LoopTimer


def run(rate_hz: float, duration_s: float, spin_s: float) -> dict:
    late_us: list[float] = []
    timer: LoopTimer

    def tick() -> None:
        late_us.append((time.monotonic() - timer.due_s) * 1e6)

    timer = LoopTimer.at_rate(rate_hz, tick, spin_s=spin_s)
    cpu0 = time.process_time()
    with timer:
        time.sleep(duration_s)
    cpu = time.process_time() - cpu0
    late = np.array(late_us[int(rate_hz * 0.2):])  # skip the first 0.2 s
    return {"ticks": timer.ticks, "p50": np.percentile(late, 50), "p99": np.percentile(late, 99),
            "max": late.max(), "overruns": timer.overruns, "skipped": timer.skipped_ticks,
            "cpu_pct": 100.0 * cpu / duration_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate-hz", type=float, default=500.0)
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--spin-us", default="0,200,500")
    args = parser.parse_args()
    print(f"LoopTimer at {args.rate_hz:g} Hz for {args.duration_s:g} s per setting; lateness of "
          f"the callback after its scheduled time (microseconds)")
    for spin_us in (float(s) for s in args.spin_us.split(",")):
        r = run(args.rate_hz, args.duration_s, spin_us * 1e-6)
        print(f"  spin {spin_us:5.0f} us: ticks {r['ticks']:5d}  p50 {r['p50']:7.1f}  "
              f"p99 {r['p99']:7.1f}  max {r['max']:8.1f}  overruns {r['overruns']:3d}  "
              f"skipped {r['skipped']:3d}  cpu {r['cpu_pct']:5.1f} %")


if __name__ == "__main__":
    main()
