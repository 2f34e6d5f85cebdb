"""Training throughput at batch size 1: naive loop vs K models vectorised vs batch 64.

Prints images/s of (a) ``train.gan_step`` on one model at batch 1 (what ``train.fit`` runs),
(b) ``multi.StackedGan.step`` for K models at batch 1 each, (c) ``train.gan_step`` on one model
at batch 64 or ``--batch`` (a proxy for what the hardware can do; the batch a batch-1 recipe
replaces), and the ratios b/a and b/c. The three are
timed in alternating windows and the median window is reported, so a load change on a shared
machine hits all three alike. Synthetic images: the speed does not depend on pixel values.

    python benchmarks/train_throughput.py --quick            # ~1 minute
    python benchmarks/train_throughput.py --channels 1 --json
    python benchmarks/train_throughput.py --profile          # top ops of the vectorised step
    python benchmarks/train_throughput.py --norm instance --models 3 --batch 16 --threads 1
                                   # issue 30's batch-1 cost: a stack of 3 against batch 16
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from pkdgan.core.config import LossWeights, ModelConfig, RunConfig, TrainConfig
from pkdgan.training.stacked_engine import StackedGan
from pkdgan.training.train import GanState, gan_step


def _states(cfg: ModelConfig, k: int) -> list[GanState]:
    device = torch.device("cpu")
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(GanState.create(cfg, TrainConfig(), device))
    return out


def naive(cfg: ModelConfig, batch: int, precision: str = "fp32") -> tuple[Callable[[], None], int]:
    """One model, ``train.gan_step`` on batches of ``batch``: (step, images per step)."""
    state = _states(cfg, 1)[0]
    x = torch.rand(batch, cfg.channels, cfg.image_size, cfg.image_size) * 2 - 1
    weights = LossWeights()
    return (lambda: gan_step(state, x, weights, 1e-5, precision)), batch


def vectorised(cfg: ModelConfig, k: int) -> tuple[Callable[[], None], int]:
    """K models stacked, one image each per step."""
    stack = StackedGan(_states(cfg, k), _states(cfg, 1)[0].model)
    x = torch.rand(k, cfg.channels, cfg.image_size, cfg.image_size) * 2 - 1
    run = RunConfig(model=cfg)
    return (lambda: stack.step(x, run)), k


def images_per_second(step: Callable[[], None], per_step: int, seconds: float) -> tuple[float, float]:
    """(images per wall second, images per CPU second of this process) over one window.

    CPU seconds count every thread of this process, so on a machine shared with other jobs
    the second figure is the cost of the work itself, the first what this run got.
    """
    step()
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while (elapsed := time.perf_counter() - t0) < seconds:
        step()
        n += 1
    return n * per_step / elapsed, n * per_step / max(time.process_time() - c0, 1e-9)


Settings = dict[str, tuple[Callable[[], None], int]]


def add_timing_args(p: argparse.ArgumentParser, window: float, quick_help: str) -> None:
    """The options every training benchmark shares: rounds, window, --quick, threads, --json."""
    p.add_argument("--rounds", type=int, default=5, help="alternating timing rounds")
    p.add_argument("--window", type=float, default=window, help="seconds per setting per round")
    p.add_argument("--quick", action="store_true", help=f"3 rounds of 4 s ({quick_help})")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def apply_timing_args(args: argparse.Namespace) -> None:
    if args.quick:
        args.rounds, args.window = 3, 4.0
    if args.threads:
        torch.set_num_threads(args.threads)


def alternate(settings: Settings, rounds: int, window: float
              ) -> tuple[dict[str, float], dict[str, float], dict[str, list[float]]]:
    """Each (step, images per step) timed in ``rounds`` alternating windows, so a change of load
    on a shared machine hits every setting alike: median images per wall second, median images
    per CPU second, and the wall samples."""
    samples: dict[str, list[float]] = {k: [] for k in settings}
    cpu: dict[str, list[float]] = {k: [] for k in settings}
    for _ in range(rounds):
        for name, (step, per_step) in settings.items():
            wall, per_cpu = images_per_second(step, per_step, window)
            samples[name].append(wall)
            cpu[name].append(per_cpu)
    return ({k: statistics.median(v) for k, v in samples.items()},
            {k: statistics.median(v) for k, v in cpu.items()}, samples)


def profile(step: Callable[[], None], rows: int) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for _ in range(2):
        step()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", type=int, default=3, help="3 = CIFAR-size, 1 = MNIST-size (32x32)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--nz", type=int, default=100)
    p.add_argument("--models", type=int, default=10, help="K models in the vectorised path")
    p.add_argument("--norm", default="batch", choices=["batch", "instance", "batch-per-image"])
    p.add_argument("--batch", type=int, default=64, help="batch size of the comparison (c)")
    p.add_argument("--profile", action="store_true", help="print the top ops of the vectorised step")
    add_timing_args(p, 8.0, "about a minute")
    args = p.parse_args()
    apply_timing_args(args)
    cfg = ModelConfig(image_size=args.image_size, channels=args.channels, nz=args.nz,
                      width=args.width, norm=args.norm)
    big = f"batch{args.batch}"
    settings = {"naive_bs1": naive(cfg, 1), "vectorised_bs1": vectorised(cfg, args.models),
                big: naive(cfg, args.batch)}
    if args.profile:
        print(profile(settings["vectorised_bs1"][0], 25))
        return
    med, med_cpu, samples = alternate(settings, args.rounds, args.window)
    out = {
        **{k: round(v, 2) for k, v in med.items()},
        "ratio_vs_naive": round(med["vectorised_bs1"] / med["naive_bs1"], 3),
        f"ratio_vs_{big}": round(med["vectorised_bs1"] / med[big], 3),
        "per_cpu_second": {k: round(v, 2) for k, v in med_cpu.items()},
        "cpu_ratio_vs_naive": round(med_cpu["vectorised_bs1"] / med_cpu["naive_bs1"], 3),
        f"cpu_ratio_vs_{big}": round(med_cpu["vectorised_bs1"] / med_cpu[big], 3),
        "settings": {"image_size": args.image_size, "channels": args.channels, "width": args.width,
                     "nz": args.nz, "models": args.models, "norm": args.norm,
                     "threads": torch.get_num_threads(), "rounds": args.rounds,
                     "window_s": args.window, "torch": torch.__version__},
        "samples": {k: [round(x, 2) for x in v] for k, v in samples.items()},
    }
    if args.json:
        print(json.dumps(out))
        return
    print(f"{args.image_size}x{args.image_size}x{args.channels}, width {args.width}, nz {args.nz}, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} x {args.window:.0f} s windows")
    print(f"(a) naive batch-1 loop        {med['naive_bs1']:8.1f} images/s")
    print(f"(b) vectorised batch 1, K={args.models:<3d} {med['vectorised_bs1']:8.1f} images/s")
    print(f"(c) batch {args.batch:<3d}, one model      {med[big]:8.1f} images/s")
    print(f"b/a = {out['ratio_vs_naive']:.2f}   b/c = {out[f'ratio_vs_{big}']:.2f}")
    pc = out["per_cpu_second"]
    print(f"per CPU second of this process: a {pc['naive_bs1']:.1f}, b {pc['vectorised_bs1']:.1f}, "
          f"c {pc[big]:.1f};  b/a = {out['cpu_ratio_vs_naive']:.2f}   "
          f"b/c = {out[f'cpu_ratio_vs_{big}']:.2f}")


if __name__ == "__main__":
    main()
