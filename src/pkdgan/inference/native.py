"""The scoring graph as generated C: kernels for small generators, loaded with ctypes.

Why: a width-1..12 student is bound by per-operator overhead and skinny layers in every
runtime (ONNX Runtime, OpenVINO, PyTorch): their convolutions vectorise over channels, of
which these layers have 1-12. The generated kernels fill the vector lanes with something wider:
for a batch, the *images* (``native_block``: a block of ``LANES`` images, 8 with AVX2, 16 with
AVX-512, stored ``[channel][row][column][lane]``, so every multiply-add of every layer is one
full-width fused multiply-add); for a lone image or a batch's short remainder, that image's
output *positions* (``native_single``: im2col per layer phase), so batch-1 latency does not pay
for a whole block. Either way a layer's accumulators stay in registers and the whole
E1 -> D -> E2 -> score path runs in one call, on a scratch arena that fits in the core's L2 cache.

The C source is written from a ``Plan`` (``native_source``: weights as float32 literals, every
shape a constant), compiled once per CPU with the system C compiler (``cc -O3 -march=native``)
and loaded with ``ctypes`` (which releases the GIL, so one thread per core scores its slice of a
batch). Nothing here imports torch: a deploy cache holding ``model.c`` can (re)build its shared
object on a new CPU without it. ``native_plan`` builds the plan from a generator (BatchNorm
folded, transposed convolutions split into their output phases).

Without a C compiler the backend is simply absent (``available()``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import numpy as np

from pkdgan.core.cpu import default_threads
from pkdgan.core.errors import PkdganError, UsageError
from pkdgan.core.files import cache_root
from pkdgan.inference.streams import Streams

COMPILER_ENV = "PKDGAN_CC"  # the C compiler to use (default: cc, else gcc, else clang)
FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-std=c11", "-ffp-contract=fast", "-fno-math-errno")


def compiler() -> str | None:
    """The C compiler to use, or None (then this backend is not available)."""
    env = os.environ.get(COMPILER_ENV)
    if env:
        return shutil.which(env)
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    return None


def available() -> bool:
    return compiler() is not None and platform.system() in ("Linux", "Darwin")


def cpu_tag() -> str:
    """What a ``-march=native`` object depends on: the CPU's model and flags, the compiler."""
    info = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features"))]
        info += "".join(sorted(set(lines)))
    except OSError:
        info += platform.processor()
    return hashlib.sha256(f"{info}{compiler()}".encode()).hexdigest()[:12]


def _object_path(c_path: Path) -> Path:
    """``model-<cpu tag>.so`` beside the source, or in the user cache when that folder is
    read-only (named by the source's hash, so two runs never share an object)."""
    tag = cpu_tag()
    so = c_path.with_name(f"{c_path.stem}-{tag}.so")
    if so.is_file() or os.access(c_path.parent, os.W_OK):
        return so
    digest = hashlib.sha256(c_path.read_bytes()).hexdigest()[:16]
    folder = cache_root() / "native"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{digest}-{tag}.so"


def compile_source(c_path: Path) -> Path:
    """The shared object of ``c_path`` for this CPU, compiled once (atomically)."""
    cc = compiler()
    if cc is None:
        raise UsageError(f"the native backend needs a C compiler (cc, gcc or clang; or set {COMPILER_ENV})")
    so = _object_path(Path(c_path))
    if so.is_file():
        return so
    # a fresh name the compiler creates itself (with the umask's mode, as the run's other files)
    tmp = str(so.with_name(f".{so.name}.{os.getpid()}-{threading.get_ident()}.tmp"))
    try:
        proc = subprocess.run([cc, *FLAGS, "-o", tmp, str(c_path)], capture_output=True, text=True)
        if proc.returncode != 0:
            first = (proc.stderr.strip().splitlines() or ["no message"])[0]
            raise PkdganError(f"compiling the native scoring kernel failed: {first[:300]}")
        os.replace(tmp, so)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return so


class _Kernel:
    """The loaded shared object and one zeroed scratch arena per thread that calls it."""

    def __init__(self, so: Path) -> None:
        lib = ctypes.CDLL(str(so))
        lib.pk_scratch_floats.restype = ctypes.c_long
        lib.pk_lanes.restype = ctypes.c_int
        lib.pk_score.restype = None
        lib.pk_score.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        self.lib = lib
        self.lanes = int(lib.pk_lanes())
        self.floats = int(lib.pk_scratch_floats())
        chw = (ctypes.c_int * 3)()
        lib.pk_shape(chw)
        self.shape = tuple(chw)

    def scratch(self) -> np.ndarray:
        raw = np.zeros(self.floats + 16, np.float32)  # aligned to 64 bytes below
        start = (-raw.ctypes.data // 4) % 16
        return raw[start:start + self.floats]

    def __call__(self, x: np.ndarray, scratch: np.ndarray) -> np.ndarray:
        out = np.empty(len(x), np.float32)
        self.lib.pk_score(x.ctypes.data, len(x), out.ctypes.data, scratch.ctypes.data)
        return out


class NativeRunner:
    """Scores ``(N, C, H, W)`` float32 images with the compiled kernel: one thread per core,
    each on its own slice of the batch (ctypes releases the GIL during the call)."""

    backend = "native"
    precision = "fp32"

    def __init__(self, path: str | Path, threads: int | None = None, chunk: int = 128) -> None:
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"no native kernel source at {path}")
        self.kernel = _Kernel(compile_source(path))
        self.threads = threads or default_threads()
        engines = [self._engine() for _ in range(self.threads)]
        self._streams = Streams(engines, chunk)

    def _engine(self) -> Any:
        scratch = self.kernel.scratch()
        return lambda x: self.kernel(x, scratch)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image, as ``OvRunner.shape``."""
        return self.kernel.shape

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != self.shape:
            # the kernel trusts its input's size: a wrong one would read past the array
            raise UsageError(f"the native kernel scores (N, {', '.join(map(str, self.shape))}) images, "
                             f"got {x.shape}")
        return self._streams(x)
