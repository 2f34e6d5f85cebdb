"""``pkdgan train``: one EDE-GAN per normal class, each in its own run folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pkdgan.commands._common import (
    add_data_args,
    add_model_args,
    add_trace_arg,
    add_tracking_args,
    add_train_args,
    config_from_args,
    parse_classes,
)
from pkdgan.core.config import DataConfig
from pkdgan.core.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train EDE-GAN on one normal class (or several)",
                       description="Train EDE-GAN on the normal class's training images and "
                                   "score the whole test set (one-class protocol).")
    add_data_args(p)
    p.add_argument("--normal-class", default="0",
                   help="class index, a list/range (0-9, 1,3) or 'all'; several classes write "
                        "one run folder each under --out (class_K)")
    add_model_args(p)
    add_train_args(p)
    add_tracking_args(p)
    add_trace_arg(p)
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.set_defaults(func=main)


def resolve_channels(args: argparse.Namespace) -> int:
    from pkdgan.data.datasets import dataset_channels

    if args.channels is not None:
        return args.channels
    probe = DataConfig(dataset=args.dataset, data_root=args.data_root)
    return dataset_channels(probe)


def main(args: argparse.Namespace) -> int:
    from pkdgan.data.readers import download
    from pkdgan.pipeline import tracking
    from pkdgan.pipeline.train_run import train_run

    tracking.check(args.logger, args.tracking_uri)  # before hours of training, not after

    if args.download:
        from pkdgan.data.datasets import resolve_data_root

        if args.dataset not in ("mnist", "fmnist", "cifar10"):
            raise UsageError(f"--download is not available for dataset {args.dataset}")
        download(args.dataset, resolve_data_root(args.data_root))
    classes = [0] if args.dataset == "folder" else parse_classes(args.normal_class)
    channels = resolve_channels(args)
    configs = [config_from_args(args, k, channels) for k in classes]
    out = Path(args.out)
    if len(configs) == 1:
        dirs = [out]
    else:
        dirs = [out / f"class_{k}" for k in classes]
    t = configs[0].train
    if len(configs) > 1 and t.batch_size == 1 and t.precision == "fp32":
        # batch size 1 leaves the CPU idle: the classes train together, one model each (multi.py)
        from pkdgan.pipeline.train_run import train_runs

        all_metrics = train_runs(configs, dirs, resume=args.resume, progress=not args.no_progress,
                                 trace=args.trace_test)
    else:
        all_metrics = (train_run(cfg, run_dir, resume=args.resume, progress=not args.no_progress,
                                 trace=args.trace_test)
                       for cfg, run_dir in zip(configs, dirs, strict=True))
    for cfg, run_dir, metrics in zip(configs, dirs, all_metrics, strict=True):
        tracking.log_run(args.logger, run_dir, args.tracking_uri)
        print(json.dumps({"run": str(run_dir), "normal_class": cfg.data.normal_class,
                          **{k: None if metrics[k] is None else round(metrics[k], 4)
                             for k in ("auroc", "aupr")}}))
    return 0
