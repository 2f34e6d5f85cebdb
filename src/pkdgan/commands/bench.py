"""``pkdgan bench RUN_DIR [--teacher RUN_DIR] --json OUT``: scoring speed on every backend and precision."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    desc = ("Throughput at batch 256 and batch-1 latency (p50, p99) of a run's scoring model on "
            "PyTorch (BatchNorm folded; fp32, bf16), ONNX Runtime (fp32) and OpenVINO (fp32, bf16, "
            "int8 calibrated on the run's held-out normal training images), with each one's test "
            "AUROC, parity with PyTorch fp32 and the FLOP-limit throughput. A precision whose AUROC "
            "drops more than 0.5 point is never 'best' nor a default. Records the fastest fp32 "
            "runtime in the run's deploy cache, for predict --backend auto. bf16 is measured only "
            "where the CPU runs it natively (AVX-512 BF16 / AMX); elsewhere it is listed as skipped.")
    p = sub.add_parser("bench", help="scoring speed of a run (and its teacher) per backend and precision",
                       description=desc)
    p.add_argument("run_dir", type=Path, help="run folder (usually a student: pkdgan distill)")
    p.add_argument("--teacher", type=Path, default=None, help="teacher run folder, for the wall-time ratio")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="write all results as JSON here")
    p.add_argument("--threads", type=int, default=None, help="cores to use (default: all this process may)")
    p.add_argument("--max-test", type=int, default=None, help="score only the first N test images for AUROC")
    p.add_argument("--no-int8", action="store_true", help="skip OpenVINO int8 (NNCF) quantization")
    p.add_argument("--quick", action="store_true", help="short timing windows (a smoke test, not numbers)")
    p.add_argument("--include-emulated", action="store_true",
                   help="also measure precisions this CPU only emulates (bf16 without AVX-512 "
                        "BF16 / AMX: skipped by default, and named in the output with the reason)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pkdgan.core import runs
    from pkdgan.deploy import bench

    out = bench.run(args.run_dir, args.teacher, args.threads, args.quick, args.max_test, not args.no_int8,
                    args.include_emulated)
    if args.json is not None:
        runs.atomic_write_bytes(args.json, (json.dumps(out, indent=2) + "\n").encode())
    print(bench.describe(out))
    return 0
