"""Teacher training throughput in float32 and bf16 autocast, timed side by side.

``train.gan_step`` (generator + discriminator update) on one width-64 EDE-GAN at the cpu
preset's batch size, fp32 and bf16 in alternating windows (median window reported, so a load
change hits both alike), for MNIST-size (1 channel) and CIFAR-size (3 channels) images. The
AUROC side of the comparison is in docs/performance.md (same classes and seeds, both ways).

    python benchmarks/precision_throughput.py --quick --json
"""

from __future__ import annotations

import argparse
import json

import torch
from train_throughput import add_timing_args, alternate, apply_timing_args, naive  # same folder

from pkdgan.core.config import ModelConfig
from pkdgan.core.presets import PRESETS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=PRESETS["cpu"].batch_size)
    p.add_argument("--width", type=int, default=64)
    add_timing_args(p, 6.0, "about a minute")
    args = p.parse_args()
    apply_timing_args(args)
    out: dict = {"settings": {"batch_size": args.batch_size, "width": args.width,
                              "threads": torch.get_num_threads(), "rounds": args.rounds,
                              "window_s": args.window, "torch": torch.__version__}}
    for name, channels in (("mnist", 1), ("cifar10", 3)):
        cfg = ModelConfig(channels=channels, width=args.width)
        med, med_cpu, _ = alternate({"fp32": naive(cfg, args.batch_size, "fp32"),
                                     "bf16": naive(cfg, args.batch_size, "bf16")},
                                    args.rounds, args.window)
        out[name] = {"fp32": round(med["fp32"], 1), "bf16": round(med["bf16"], 1),
                     "bf16_speedup": round(med["bf16"] / med["fp32"], 3),
                     "bf16_speedup_per_cpu_second": round(med_cpu["bf16"] / med_cpu["fp32"], 3)}
    if args.json:
        print(json.dumps(out))
        return
    for name in ("mnist", "cifar10"):
        r = out[name]
        print(f"{name:8s} fp32 {r['fp32']:7.1f} images/s  bf16 {r['bf16']:7.1f}  "
              f"speed-up {r['bf16_speedup']:.2f} (per CPU second {r['bf16_speedup_per_cpu_second']:.2f})")


if __name__ == "__main__":
    main()
