"""Which form of a run's scoring graph does OpenVINO run fastest, in fp32 and bf16? images/s.

The probe behind ``deploy.writers.scoring_graph`` and ``dense.GATHER_COST`` (docs/performance.md,
"Matrix forms"). Forms of one run's latent scoring graph, each checked against
``export.ScoreGraph`` in fp32 (1e-4 relative), timed at batch 256 in alternating 1-s windows
in this one process (median of ``--rounds``), one request using every core (``LATENCY``):

- ``polyphase``: the convolutional graph OpenVINO ran until this probe (``pkdgan.polyphase``);
- ``polyphase+dense``: the same with every layer of at most 2^20 matrix entries as a matrix;
- ``matrix/gN``: every layer a matrix, in row bands where they cost less than the whole matrix
  with a gather costing N multiply-adds per element (``never``: no bands).

    OMP_NUM_THREADS=2 python benchmarks/matrix_forms.py RUN_DIR [--gather 8,32,128]

Run it on a quiet machine; it chooses settings, it is not a benchmark of record (``pkdgan bench``).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import numpy as np
import openvino as ov
import torch

from pkdgan.core.config import ModelConfig, from_dict
from pkdgan.deploy.dense import MatrixScoreGraph
from pkdgan.deploy.export import ScoreGraph
from pkdgan.deploy.polyphase import PolyphaseScoreGraph
from pkdgan.inference.scoring import InferenceGenerator
from pkdgan.training.checkpoints import load_run_generator

BATCH = 256
NEVER = 1e18  # a gather cost that makes every band dearer than the whole matrix


def forms(run: Path, gathers: list[float]) -> tuple[dict[str, torch.nn.Module], tuple[int, int, int]]:
    cfg, gen = load_run_generator(run)
    mc = from_dict(ModelConfig, cfg["model"])
    image = (mc.channels, mc.image_size, mc.image_size)
    net = InferenceGenerator(copy.deepcopy(gen).float().eval())
    out: dict[str, torch.nn.Module] = {
        "polyphase": PolyphaseScoreGraph(net),
        "polyphase+dense": PolyphaseScoreGraph(net).densified(image, 1 << 20),
    }
    for g in gathers:
        out[f"matrix/g{g:g}"] = MatrixScoreGraph(net, image, "latent", None, g)
    out["matrix/never"] = MatrixScoreGraph(net, image, "latent", None, NEVER)
    out["reference"] = ScoreGraph(net, "latent")
    return out, image


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--gather", default="8,32,128", help="gather costs to try (multiply-adds per element)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path, help="also write the medians here")
    args = p.parse_args()
    graphs, image = forms(args.run, [float(g) for g in args.gather.split(",")])
    ref_graph = graphs.pop("reference")
    x = torch.rand(BATCH, *image, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        ref = ref_graph(x).numpy()
    core = ov.Core()
    requests = {}
    for name, graph in graphs.items():
        model = ov.convert_model(graph.eval(), example_input=x)
        model.reshape({model.inputs[0].get_any_name(): [BATCH, *image]})
        for precision in ("f32", "bf16"):
            conf = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2,
                    "INFERENCE_PRECISION_HINT": precision}
            req = core.compile_model(model, "CPU", conf).create_infer_request()
            got = req.infer({0: x.numpy()})[0].ravel()
            if precision == "f32" and np.max(np.abs(got - ref) / np.abs(ref)) > 1e-4:
                raise SystemExit(f"{name}: scores differ from ScoreGraph")
            requests[(precision, name)] = req
    xs = x.numpy()
    rates: dict[tuple[str, str], list[float]] = {k: [] for k in requests}
    for _ in range(args.rounds):
        for key, req in requests.items():
            n, t = 0, time.perf_counter()
            while time.perf_counter() - t < 1.0:
                req.infer({0: xs}, share_inputs=True)
                n += 1
            rates[key].append(BATCH * n / (time.perf_counter() - t))
    medians = {f"{k[0]} {k[1]}": round(statistics.median(v)) for k, v in sorted(rates.items())}
    for key, value in medians.items():
        print(f"{key:28s} {value:>10,} images/s")
    if args.json:
        out = {"run": str(args.run), "batch": BATCH, "images_per_s": medians}
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
