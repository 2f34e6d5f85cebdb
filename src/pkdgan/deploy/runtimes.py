"""Runners of exported scoring graphs: ONNX Runtime and OpenVINO, without torch (the generated
C kernels' runner is ``deploy.native.runner``; ``deploy.backends`` chooses between them).

Nothing here imports torch or scikit-learn, so ``pkdgan predict`` on a run with a cached export
starts in a fraction of a second (``deploy.lean``). A runner takes float32 images
``(N, C, S, S)`` in [-1, 1] and returns float32 scores ``(N,)``, exactly what the exported
graph computes (``inference.graph.ScoreGraph``).

Choices (measured, docs/performance.md): ONNX Runtime scores the tiny students fastest with
one single-threaded session per core working on separate slices of the batch (streams, driven
from a thread pool, on the plain graph), rather than one session whose operators are split over
the cores: its width-3 convolutions are too small to share. OpenVINO runs the BatchNorm-folded
graph in the form ``writers.scoring_graph`` picks (small students as row-banded matrix
products, others polyphase: its transposed convolutions are slow) with static shapes: a batch
of up to 256 images goes through one request whose operators use every core (``LATENCY`` hint;
156k vs 139k images/s for the bf16 MNIST student, polyphase, split over two single-core
streams); longer inputs are cut into 256-image chunks kept in flight on its streams, two
requests per stream (166k); the last chunk is padded.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pkdgan.core.cpu import default_threads
from pkdgan.core.errors import UsageError
from pkdgan.deploy.streams import Streams


def _import(module: str, extra: str) -> Any:
    """The runtime's module, or one clear UsageError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"the {module} runtime is not installed: pip install 'pkdgan[{extra}]'") from None


class OrtRunner:
    """ONNX Runtime (CPU) on an exported graph; ``streams`` sessions of one thread each."""

    backend = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None, streams: bool = True,
                 chunk: int = 128) -> None:
        ort = _import("onnxruntime", "onnx")

        threads = threads or default_threads()
        n_sessions, per = (threads, 1) if streams else (1, threads)
        sessions = []
        for _ in range(n_sessions):
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = per
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.log_severity_level = 3
            sessions.append(ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]))
        self.input = sessions[0].get_inputs()[0].name
        self.precision = "int8" if "int8" in Path(path).stem else "fp32"
        self.threads = threads
        self._streams = Streams([self._engine(s) for s in sessions], chunk)

    def _engine(self, session: Any) -> Callable[[np.ndarray], np.ndarray]:
        name = self.input
        return lambda x: session.run(None, {name: x})[0].reshape(-1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._streams(np.ascontiguousarray(x, dtype=np.float32))


class OvRunner:
    """OpenVINO (CPU device) on an IR (``.xml``) or ONNX file.

    ``precision`` fp32 or bf16 is OpenVINO's ``INFERENCE_PRECISION_HINT`` on the same model;
    int8 needs a quantized IR (``writers.quantize_openvino``). Three static-shape
    requests, each compiled on first use and reused (quiet-machine probes, bf16 MNIST student,
    2 cores): batch 1 on one thread (latency); up to ``chunk`` images padded to ``chunk`` on one
    request using every core (156k images/s at 256, against 139k for two single-core streams
    of 128); more images in ``chunk``-sized pieces over OpenVINO's streams (``THROUGHPUT``,
    one per core), two requests in flight per stream so a stream never waits on Python (166k).
    """

    backend = "openvino"

    def __init__(self, path: str | Path, precision: str = "fp32", threads: int | None = None,
                 chunk: int = 256) -> None:
        ov = _import("openvino", "openvino")
        if precision not in ("fp32", "bf16", "int8"):
            raise UsageError(f"OpenVINO precision must be fp32, bf16 or int8, got {precision!r}")
        self.precision = precision
        self.threads = threads or default_threads()
        self.core = ov.Core()
        self.model = self.core.read_model(str(path))
        self.input = self.model.inputs[0]
        self.shape = [d.get_length() for d in list(self.input.get_partial_shape())[1:]]
        self.chunk = chunk
        self._hint = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}[self.precision]
        self._queue: Any = None
        self._single: Any = None
        self._block: Any = None
        self._lock = threading.Lock()

    def _compiled(self, batch: int, conf: dict[str, Any]) -> Any:
        m = self.model.clone()
        m.reshape({self.input.get_any_name(): [batch, *self.shape]})
        return self.core.compile_model(m, "CPU", conf | {"INFERENCE_PRECISION_HINT": self._hint})

    def _one(self, x: np.ndarray) -> np.ndarray:
        if self._single is None:
            conf = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 1}
            self._single = self._compiled(1, conf).create_infer_request()
        self._single.infer({0: x}, share_inputs=True)
        return self._single.get_output_tensor(0).data.reshape(-1).copy()

    def _pad(self, x: np.ndarray) -> np.ndarray:
        """Static shapes: fill a short chunk up to ``chunk`` images (their scores are dropped)."""
        m = len(x)
        if m == self.chunk:
            return x
        return np.concatenate([x, np.full((self.chunk - m, *x.shape[1:]), -1.0, np.float32)])

    def _whole(self, x: np.ndarray) -> np.ndarray:
        """Up to ``chunk`` images in one request on every core: no stream waits for another."""
        if self._block is None:
            conf = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": self.threads}
            self._block = self._compiled(self.chunk, conf).create_infer_request()
        self._block.infer({0: self._pad(x)}, share_inputs=True)
        return self._block.get_output_tensor(0).data.reshape(-1)[:len(x)].copy()

    def _many(self, x: np.ndarray) -> np.ndarray:
        if self._queue is None:  # two requests per stream, used round robin
            conf = {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": self.threads}
            compiled = self._compiled(self.chunk, conf)
            self._queue = [compiled.create_infer_request() for _ in range(2 * self.threads)]
        reqs, n, b = self._queue, len(x), self.chunk
        out = np.empty(n, np.float32)
        busy: list[tuple[int, int, np.ndarray] | None] = [None] * len(reqs)

        def collect(j: int) -> None:
            job = busy[j]
            if job is not None:
                reqs[j].wait()
                i, m, _ = job
                out[i:i + m] = reqs[j].get_output_tensor(0).data.reshape(-1)[:m]
                busy[j] = None

        for k, i in enumerate(range(0, n, b)):
            j = k % len(reqs)
            collect(j)
            m = len(x[i:i + b])
            xb = self._pad(x[i:i + b])
            reqs[j].start_async({0: xb}, share_inputs=True)  # xb stays referenced in busy[j]
            busy[j] = (i, m, xb)
        for j in range(len(reqs)):
            collect(j)
        return out

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) == 0:
            return np.empty(0, np.float32)
        with self._lock:  # one batch at a time through the queue
            if len(x) == 1:
                return self._one(x)
            return self._whole(x) if len(x) <= self.chunk else self._many(x)
