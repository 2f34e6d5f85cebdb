"""Deployment runtimes for exported scoring graphs: ONNX Runtime, OpenVINO and the generated C
kernels (``inference.native``), without torch.

Nothing here imports torch or scikit-learn, so ``pkdgan predict`` on a run with a cached export
starts in a fraction of a second (``pkdgan.lean``). A runner takes float32 images
``(N, C, S, S)`` in [-1, 1] and returns float32 scores ``(N,)``, exactly what the exported
graph computes (``export.ScoreGraph``).

Choices (measured, docs/performance.md): ONNX Runtime scores the tiny students fastest with
one single-threaded session per core working on separate slices of the batch (streams, driven
from a thread pool, on the plain graph), rather than one session whose operators are split over
the cores: its width-3 convolutions are too small to share. OpenVINO runs the BatchNorm-folded
graph in the form ``deploy_export.scoring_graph`` picks (small students as row-banded matrix
products, others polyphase: its transposed convolutions are slow) with static shapes: a batch
of up to 256 images goes through one request whose operators use every core (``LATENCY`` hint;
156k vs 139k images/s for the bf16 MNIST student, polyphase, split over two single-core
streams); longer inputs are cut into 256-image chunks kept in flight on its streams, two
requests per stream (166k); the last chunk is padded.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pkdgan.core.cpu import default_threads
from pkdgan.core.errors import UsageError
from pkdgan.inference.streams import Streams

BACKENDS = ("torch", "onnxruntime", "openvino", "native")
RUNTIMES = ("onnxruntime", "openvino", "native")
PRECISIONS = ("fp32", "bf16", "int8")
# a precision whose test AUROC drops more than this (0.5 point) is never offered as a default
AUROC_TOLERANCE = 0.005
INPUT_NAME = "images"
EXTRAS = {"onnxruntime": "pip install 'pkdgan[onnx]'", "openvino": "pip install 'pkdgan[openvino]'",
          "native": "it needs a C compiler (cc, gcc or clang, or PKDGAN_CC)"}
# what `auto` tries when no benchmark of the run recorded a faster choice: the generated C
# kernels (``inference.native``, made only for small generators) scored the MNIST student 3-4x
# faster than ONNX Runtime and start in milliseconds; OpenVINO's polyphase fp32 graph and ONNX
# Runtime were within noise of each other (contended), and OpenVINO was ahead for the teacher's
# bf16/int8; `pkdgan bench` records the measured winner
AUTO_ORDER = ("native", "openvino", "onnxruntime", "torch")


def installed(backend: str) -> bool:
    """Whether ``backend`` can be imported (without importing it)."""
    if backend == "torch":
        return importlib.util.find_spec("torch") is not None
    if backend not in RUNTIMES:
        raise UsageError(f"unknown backend {backend!r}; choose one of auto, {', '.join(BACKENDS)}")
    if backend == "native":
        from pkdgan.inference.native import available

        return available()
    return importlib.util.find_spec(backend) is not None


def require(backend: str) -> None:
    """One clear UsageError when ``backend`` is not installed."""
    if not installed(backend):
        hint = EXTRAS.get(backend, "pip install torch")
        what = "available" if backend == "native" else "installed"
        raise UsageError(f"the {backend} backend is not {what}: {hint}")


def check_precision(precision: str, backend: str) -> str:
    if precision not in PRECISIONS:
        raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if backend == "onnxruntime" and precision == "bf16":
        raise UsageError("ONNX Runtime's CPU provider has no bf16 convolutions; use openvino or torch")
    if backend == "native" and precision != "fp32":
        raise UsageError("the native kernels compute in fp32 only")
    return precision


class OrtRunner:
    """ONNX Runtime (CPU) on an exported graph; ``streams`` sessions of one thread each."""

    backend = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None, streams: bool = True,
                 chunk: int = 128) -> None:
        require("onnxruntime")
        import onnxruntime as ort

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
    int8 needs a quantized IR (``deploy_export.quantize_openvino``). Three static-shape
    requests, each compiled on first use and reused (quiet-machine probes, bf16 MNIST student,
    2 cores): batch 1 on one thread (latency); up to ``chunk`` images padded to ``chunk`` on one
    request using every core (156k images/s at 256, against 139k for two single-core streams
    of 128); more images in ``chunk``-sized pieces over OpenVINO's streams (``THROUGHPUT``,
    one per core), two requests in flight per stream so a stream never waits on Python (166k).
    """

    backend = "openvino"

    def __init__(self, path: str | Path, precision: str = "fp32", threads: int | None = None,
                 chunk: int = 256) -> None:
        require("openvino")
        import openvino as ov

        self.precision = check_precision(precision, "openvino")
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


def make_runner(backend: str, path: str | Path, precision: str = "fp32", threads: int | None = None
                ) -> Any:
    """A runner of an exported file: ``onnxruntime`` (.onnx), ``openvino`` (.xml or .onnx) or
    ``native`` (the generated ``model.c``, compiled for this CPU on first use)."""
    if backend == "onnxruntime":
        check_precision(precision, backend)
        return OrtRunner(path, threads)
    if backend == "native":
        from pkdgan.inference.native import NativeRunner

        check_precision(precision, backend)
        require(backend)
        return NativeRunner(path, threads)
    if backend == "openvino":
        return OvRunner(path, precision, threads)
    raise UsageError(f"no exported-model runner for backend {backend!r}; use {' or '.join(RUNTIMES)}")


def resolve_backend(requested: str, recorded: str | None = None) -> str:
    """``auto`` -> the backend a benchmark of this run recorded fastest (if installed), else the
    first installed of ``AUTO_ORDER``; any other name must be installed."""
    if requested != "auto":
        require(requested)
        return requested
    if recorded and recorded in BACKENDS and installed(recorded):
        return recorded
    for b in AUTO_ORDER:
        if installed(b):
            return b
    raise UsageError("no scoring backend installed: pip install torch, 'pkdgan[onnx]' or 'pkdgan[openvino]'")
