"""Where the native backend's batch-1 latency goes: the runner call, the kernel call alone, and
the kernel on a full block of lanes, in one process (median over 15 alternating rounds of 2,000
calls, each round's p50). Run on a quiet machine:

    python benchmarks/native_bs1.py RUN_DIR/deploy/<key>/native/model.c
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from pkdgan.deploy.native.runner import NativeRunner


def p50_us(f, calls: int = 2000) -> float:
    ts = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        f()
        ts.append(time.perf_counter_ns() - t0)
    return float(np.percentile(ts, 50)) / 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_c")
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args()
    runner = NativeRunner(args.model_c)
    kernel, scratch = runner.kernel, runner.kernel.scratch()
    one = np.random.default_rng(0).uniform(-1, 1, (1, *runner.shape)).astype(np.float32)
    block = np.repeat(one, kernel.lanes, 0)
    calls = {"runner_1_image": lambda: runner(one), "kernel_1_image": lambda: kernel(one, scratch),
             f"kernel_{kernel.lanes}_images": lambda: kernel(block, scratch)}
    rounds: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(args.rounds):
        for k, f in calls.items():
            rounds[k].append(p50_us(f))
    print(json.dumps({k: {"median_us": round(float(np.median(v)), 1), "min_us": round(min(v), 1)}
                      for k, v in rounds.items()} | {"lanes": kernel.lanes}, indent=1))


if __name__ == "__main__":
    main()
