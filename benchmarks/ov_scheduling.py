"""How should OpenVINO schedule a tiny student on 2 cores? images/s of one IR, best first.

The probe behind ``deploy.OvRunner``'s scheduling (docs/performance.md, "Quiet-machine numbers,
second run"). Two ways to score, each over several settings, alternating rounds in this one
process (medians), random inputs in [-1, 1], 2 threads (the cores of this machine):

- ``sync``: synchronous calls of 256 images, split into chunks over requests on OpenVINO
  streams (the old runner: 2 streams x 128), or one request of 256 under a hint;
- ``pipelined``: a long input in chunks with several requests in flight (a large array in one call).

    OMP_NUM_THREADS=2 python benchmarks/ov_scheduling.py RUN/deploy/<cache>/openvino/model.xml \\
        --precisions bf16,f32

Run it on a quiet machine; it chooses settings, it is not a benchmark of record (``pkdgan bench``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import openvino as ov

BATCH = 256


def compiled(core: ov.Core, base: Any, batch: int, conf: dict[str, Any]) -> Any:
    m = base.clone()
    image = [d.get_length() for d in list(base.inputs[0].get_partial_shape())[1:]]
    m.reshape({base.inputs[0].get_any_name(): [batch, *image]})
    return core.compile_model(m, "CPU", conf)


def sync_split(core: ov.Core, base: Any, x: np.ndarray, prec: str, chunk: int, streams: int
               ) -> Callable[[], None]:
    """One call of 256 images cut into ``256 / chunk`` requests on ``streams`` streams."""
    conf = {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": streams, "INFERENCE_PRECISION_HINT": prec}
    reqs = [compiled(core, base, chunk, conf).create_infer_request() for _ in range(BATCH // chunk)]

    def call() -> None:
        for k, r in enumerate(reqs):
            r.start_async({0: x[k * chunk:(k + 1) * chunk]}, share_inputs=True)
        for r in reqs:
            r.wait()
    return call


def sync_one(core: ov.Core, base: Any, x: np.ndarray, prec: str, hint: str) -> Callable[[], None]:
    """One call of 256 images through one request whose operators use both cores."""
    conf: dict[str, Any] = {"PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": 2,
                            "INFERENCE_PRECISION_HINT": prec}
    if hint == "THROUGHPUT":
        conf["NUM_STREAMS"] = 1
    req = compiled(core, base, BATCH, conf).create_infer_request()
    return lambda: req.infer({0: x}, share_inputs=True)


def pipelined(core: ov.Core, base: Any, xs: np.ndarray, prec: str, chunk: int, streams: int,
              in_flight: int) -> Callable[[], None]:
    """A long input in ``chunk``-image pieces, ``in_flight`` requests kept busy on the streams."""
    conf = {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": streams, "INFERENCE_PRECISION_HINT": prec}
    if streams == 1:
        conf["INFERENCE_NUM_THREADS"] = 2
    reqs = [compiled(core, base, chunk, conf).create_infer_request() for _ in range(in_flight)]

    def call() -> None:
        busy = [False] * len(reqs)
        for k, i in enumerate(range(0, len(xs), chunk)):
            j = k % len(reqs)
            if busy[j]:
                reqs[j].wait()
            reqs[j].start_async({0: xs[i:i + chunk]}, share_inputs=True)
            busy[j] = True
        for j, r in enumerate(reqs):
            if busy[j]:
                r.wait()
    return call


def rate(fn: Callable[[], None], images: int, seconds: float) -> float:
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n * images / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ir", help="OpenVINO IR (model.xml) of a run's scoring graph")
    ap.add_argument("--precisions", default="bf16,f32", help="INFERENCE_PRECISION_HINT values")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.5, help="per setting and round")
    args = ap.parse_args()
    core = ov.Core()
    base = core.read_model(args.ir)
    shape = list(base.inputs[0].get_partial_shape())[1:]
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (BATCH, *[d.get_length() for d in shape])).astype(np.float32)
    xs = np.concatenate([x] * 40)
    cases: dict[str, tuple[Callable[[], None], int]] = {}
    for p in args.precisions.split(","):
        for chunk, streams in ((128, 2), (64, 2), (64, 4), (32, 2)):
            cases[f"{p} sync, {BATCH // chunk} x {chunk} on {streams} streams"] = (
                sync_split(core, base, x, p, chunk, streams), BATCH)
        for hint in ("LATENCY", "THROUGHPUT"):
            cases[f"{p} sync, one request, {hint}"] = (sync_one(core, base, x, p, hint), BATCH)
        for chunk in (256, 512):
            for streams, in_flight in ((1, 1), (1, 2), (2, 2), (2, 4)):
                cases[f"{p} pipelined, chunks of {chunk}, {streams} streams, {in_flight} in flight"] = (
                    pipelined(core, base, xs, p, chunk, streams, in_flight), len(xs))
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.rounds):
        for name, (fn, n) in cases.items():
            samples[name].append(rate(fn, n, args.seconds))
    for name, v in sorted(samples.items(), key=lambda kv: -statistics.median(kv[1])):
        print(f"{statistics.median(v):>10,.0f}  {name}")


if __name__ == "__main__":
    main()
