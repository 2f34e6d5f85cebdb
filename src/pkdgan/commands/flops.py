"""``pkdgan flops [CONFIG...]``: params, FLOPs/MACs and teacher:student ratios of named configs."""

from __future__ import annotations

import argparse
import json

from pkdgan.core.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    from pkdgan.core.registry import MODEL_NAMES

    p = sub.add_parser("flops", help="params, FLOPs and compression ratios of named configs",
                       description="Measure each registered config's scoring path (E1 -> D -> E2, "
                                   "per image) with torch's FlopCounterMode; students also show "
                                   "the teacher:student FLOPs ratio at their dataset's image shape.")
    p.add_argument("configs", nargs="*", metavar="CONFIG",
                   help=f"names from the registry (default: all): {', '.join(MODEL_NAMES)}")
    p.add_argument("--json", action="store_true", help="one JSON object keyed by config name")
    p.add_argument("--speed", action="store_true",
                   help="also measure scoring speed (images/s, randomly initialised weights) of "
                        "every config in this one process")
    p.add_argument("--batch-size", type=int, default=256, help="batch size of --speed")
    p.add_argument("--seconds", type=float, default=2.0, help="time per config of --speed")
    p.set_defaults(func=main)


def format_table(table: dict[str, dict]) -> str:
    head = (f"{'config':<16} {'width':>5} {'nz':>4} {'params':>10} {'FLOPs':>12} {'MACs':>12} "
            f"{'ratio':>8} {'paper':>8} {'params×':>8}")
    if any("images_per_second" in r for r in table.values()):
        head += f" {'images/s':>10}"
    lines = [head, "-" * len(head)]
    for name, r in table.items():
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else "-"
        paper = f"{r['paper_ratio']:.2f}" if r.get("paper_ratio") else "-"
        pr = f"{r['params_ratio']:.1f}" if "params_ratio" in r else "-"
        speed = f" {r['images_per_second']:>10.0f}" if "images_per_second" in r else ""
        lines.append(f"{name:<16} {r['width']:>5} {r['nz']:>4} {r['params']:>10,} {r['flops']:>12,} "
                     f"{r['macs']:>12,} {ratio:>8} {paper:>8} {pr:>8}{speed}")
    lines.append("scoring path E1 -> D -> E2, one image; ratio = teacher FLOPs / student FLOPs at the "
                 "student's image shape; params excludes the discriminator")
    return "\n".join(lines)


def measure_speed(table: dict[str, dict], batch_size: int, seconds: float) -> None:
    """Scoring images/s of each config, one after another in this process."""
    import torch

    from pkdgan.core.registry import get_config
    from pkdgan.models.flops import scoring_speed
    from pkdgan.models.nets import build_generator

    if batch_size < 1 or not seconds > 0:
        raise UsageError("--batch-size must be >= 1 and --seconds > 0")
    for name, row in table.items():
        cfg = get_config(name)
        row["images_per_second"] = scoring_speed(build_generator(cfg), cfg.channels, cfg.image_size,
                                                 batch_size, seconds)
        row["speed_batch_size"] = batch_size
        row["threads"] = torch.get_num_threads()


def main(args: argparse.Namespace) -> int:
    from pkdgan.core.registry import MODEL_NAMES, get_entry
    from pkdgan.models.flops import cost_table

    names = args.configs or MODEL_NAMES
    for name in names:
        get_entry(name)
    table = cost_table(list(dict.fromkeys(names)))
    if args.speed:
        measure_speed(table, args.batch_size, args.seconds)
    print(json.dumps(table, indent=2) if args.json else format_table(table))
    return 0
