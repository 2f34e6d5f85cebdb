"""The backends: one table says what scores a run, how it is installed, which file of a deploy
cache it runs, its precisions, and the order ``auto`` tries them in.

``--backend``'s choices, ``auto``'s order, the deploy cache's exports, ``bench`` and ``predict``
all read ``REGISTRY``; nothing else names a backend. A backend is:

- ``unavailable()``: None when it can score here, else the reason in one line (with the fix);
- ``open(path, precision, threads)``: a runner of its exported file, ``float32 (N, C, S, S)``
  images in [-1, 1] -> ``float32 (N,)`` scores, without torch;
- ``write(path, generator, ...)``: its export of a generator (torch side), checked with
  ``parity.parity`` against PyTorch's scores before any use.

Registration order is ``auto``'s order when no benchmark of a run recorded a faster choice: the
generated C kernels (``deploy.native``, made only for small generators) scored the MNIST student
3-4x faster than ONNX Runtime and start in milliseconds; OpenVINO's polyphase fp32 graph and ONNX
Runtime were within noise of each other (contended), and OpenVINO was ahead for the teacher's
bf16/int8 (docs/performance.md); ``pkdgan bench`` records the measured winner. PyTorch comes last.

Nothing here imports torch at import time (the lean predict path reads this table).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pkdgan.core.errors import UsageError

if TYPE_CHECKING:  # the table is read by the CLI's parser: no numpy at import
    import numpy as np

AUTO = "auto"
PRECISIONS = ("fp32", "bf16", "int8")
# a precision whose test AUROC drops more than this (0.5 point) is never offered as a default
AUROC_TOLERANCE = 0.005

Runner = Callable[["np.ndarray"], "np.ndarray"]
# (path, generator, model config, score kind, stats, parity images, PyTorch's scores) -> path
Writer = Callable[..., Path]


@dataclass(frozen=True)
class Backend:
    """One way to score: where it comes from and how to run and export for it."""

    name: str
    hint: str  # how to make it available, for the one-line error
    precisions: tuple[str, ...]
    file: str | None  # its export inside a deploy cache folder; None: scores in PyTorch itself
    probe: Callable[[], str | None]  # None when available here, else "not installed" or the like
    opener: Callable[[Path, str, int | None], Runner] | None = None
    writer: Callable[[], Writer] | None = None  # returns the (torch-side) export function
    note: str = ""  # what a user reads in --help

    def unavailable(self) -> str | None:
        """None when this backend can score here; else one line with the reason and the fix."""
        why = self.probe()
        return None if why is None else f"the {self.name} backend is {why}: {self.hint}"

    def available(self) -> bool:
        return self.probe() is None

    def require(self) -> None:
        why = self.unavailable()
        if why is not None:
            raise UsageError(why)

    def check_precision(self, precision: str) -> str:
        if precision not in PRECISIONS:
            raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if precision not in self.precisions:
            raise UsageError(f"the {self.name} backend computes in {', '.join(self.precisions)} only, "
                             f"not {precision}")
        return precision

    def open(self, path: str | Path, precision: str = "fp32", threads: int | None = None) -> Runner:
        """A runner of this backend's exported file (``file`` in a deploy cache, or any path)."""
        if self.opener is None:
            raise UsageError(f"the {self.name} backend scores in PyTorch; it runs no exported file")
        self.check_precision(precision)
        self.require()
        return self.opener(Path(path), precision, threads)

    def write(self, path: Path, generator: Any, model_cfg: Any, score: str, stats: Any,
              images: Any, expected: np.ndarray) -> Path:
        """Export ``generator``'s scoring path for this backend at ``path`` (imports torch).
        ValueError: the generator is outside what this backend can run."""
        if self.writer is None:
            raise UsageError(f"the {self.name} backend scores in PyTorch; it has no export")
        return self.writer()(Path(path), generator, model_cfg, score, stats, images, expected)


REGISTRY: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    """Add a backend (last in ``auto``'s order); a name is registered once."""
    if backend.name in REGISTRY or backend.name == AUTO:
        raise ValueError(f"backend {backend.name!r} is already registered")
    REGISTRY[backend.name] = backend
    return backend


def names() -> tuple[str, ...]:
    """Every backend, in ``auto``'s order."""
    return tuple(REGISTRY)


def runtimes() -> tuple[str, ...]:
    """Backends that run an exported file (all but PyTorch), in ``auto``'s order."""
    return tuple(n for n, b in REGISTRY.items() if b.file is not None)


def get(name: str) -> Backend:
    if name not in REGISTRY:
        raise UsageError(f"unknown backend {name!r}; choose one of {AUTO}, {', '.join(REGISTRY)}")
    return REGISTRY[name]


def installed(name: str) -> bool:
    """Whether ``name`` can score here (without importing it)."""
    return get(name).available()


def require(name: str) -> None:
    """One clear UsageError when ``name`` cannot score here."""
    get(name).require()


def make_runner(name: str, path: str | Path, precision: str = "fp32", threads: int | None = None
                ) -> Runner:
    """A runner of an exported file: ``onnxruntime`` (.onnx), ``openvino`` (.xml or .onnx) or
    ``native`` (the generated ``model.c``, compiled for this CPU on first use)."""
    return get(name).open(path, precision, threads)


def resolve_backend(requested: str, recorded: str | None = None) -> str:
    """``auto`` -> the backend a benchmark of this run recorded fastest (if installed), else the
    first available in registration order; any other name must be available."""
    if requested != AUTO:
        require(requested)
        return requested
    if recorded in REGISTRY and installed(recorded):
        return recorded
    for name in REGISTRY:
        if installed(name):
            return name
    raise UsageError("no scoring backend installed: pip install torch, 'pkdgan[onnx]' or 'pkdgan[openvino]'")


def choices_help() -> str:
    """What ``--backend`` offers, from the table."""
    return "; ".join(f"{b.name}: {b.note}" for b in REGISTRY.values() if b.note)


# --- the four backends ---------------------------------------------------------------------------

def _module(name: str) -> Callable[[], str | None]:
    return lambda: None if importlib.util.find_spec(name) is not None else "not installed"


def _native_probe() -> str | None:
    from pkdgan.deploy.native.runner import available

    return None if available() else "not available"


def _open_ort(path: Path, precision: str, threads: int | None) -> Runner:
    from pkdgan.deploy.runtimes import OrtRunner

    return OrtRunner(path, threads)


def _open_ov(path: Path, precision: str, threads: int | None) -> Runner:
    from pkdgan.deploy.runtimes import OvRunner

    return OvRunner(path, precision, threads)


def _open_native(path: Path, precision: str, threads: int | None) -> Runner:
    from pkdgan.deploy.native.runner import NativeRunner

    return NativeRunner(path, threads)


def _write_onnx() -> Writer:
    from pkdgan.deploy.writers import write_onnx

    return write_onnx


def _write_openvino() -> Writer:
    from pkdgan.deploy.writers import write_openvino

    return write_openvino


def _write_native() -> Writer:
    from pkdgan.deploy.writers import write_native

    return write_native


register(Backend(
    "native", "it needs a C compiler (cc, gcc or clang, or PKDGAN_CC)", ("fp32",), "native/model.c",
    _native_probe, _open_native, _write_native,
    note="generated C kernels for small students, compiled once per CPU with the system C compiler"))
register(Backend(
    "openvino", "pip install 'pkdgan[openvino]'", PRECISIONS, "openvino/model.xml", _module("openvino"),
    _open_ov, _write_openvino, note="OpenVINO on the folded graph (bf16 and int8 with pkdgan bench)"))
register(Backend(
    "onnxruntime", "pip install 'pkdgan[onnx]'", ("fp32", "int8"), "model.onnx", _module("onnxruntime"),
    _open_ort, _write_onnx, note="ONNX Runtime on the exported graph"))
register(Backend(
    "torch", "pip install torch", ("fp32", "bf16"), None, _module("torch"),
    note="PyTorch itself (also what reconstructions and maps use)"))
