"""The scoring graph as generated C: kernels for small generators, loaded with ctypes.

Why: a width-1..12 student is bound by per-operator overhead and skinny layers in every
runtime (ONNX Runtime, OpenVINO, PyTorch): their convolutions vectorise over channels, of
which these layers have 1-12. The generated kernels fill the vector lanes with something wider:
for a batch, the *images* (``block``: a block of ``LANES`` images, 8 with AVX2, 16 with
AVX-512, stored ``[channel][row][column][lane]``, so every multiply-add of every layer is one
full-width fused multiply-add); for a lone image or a batch's short remainder, that image's
output *positions* (``single``: im2col per layer phase), so batch-1 latency does not pay
for a whole block. Either way a layer's accumulators stay in registers and the whole
E1 -> D -> E2 -> score path runs in one call, on a scratch arena that fits in the core's L2 cache.

The C source is written from a ``Plan`` (``source``: weights as float32 literals, every
shape a constant), compiled once per CPU with the system C compiler (``cc -O3 -march=native``)
and loaded with ``ctypes`` (which releases the GIL, so one thread per core scores its slice of a
batch). Nothing here imports torch: a deploy cache holding ``model.c`` can (re)build its shared
object on a new CPU without it. ``plan`` builds the plan from a generator (BatchNorm
folded, transposed convolutions split into their output phases).

Safe by construction: an object is named by the hash of its source, the compiler and the flags
(plus the CPU's tag), so a changed kernel can never load a stale object; the compiler runs under a
timeout; every object built on a CPU is checked against the scores PyTorch gave for the same
images (``parity.npz`` beside the source, written at export) before it is used, and its own
hash is recorded then, so a corrupted object is rebuilt (and checked again) instead of loaded.
Any failure is a ``PkdganError``: the deploy layer falls back to the next backend.

Without a C compiler the backend is simply absent (``available()``).
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from pkdgan.core.cpu import cpuinfo_lines, default_threads
from pkdgan.core.errors import PkdganError, UsageError
from pkdgan.core.files import atomic_write_bytes, cache_root
from pkdgan.deploy.parity import differences
from pkdgan.deploy.streams import Streams

COMPILER_ENV = "PKDGAN_CC"  # the C compiler to use (default: cc, else gcc, else clang)
TIMEOUT_ENV = "PKDGAN_CC_TIMEOUT"  # seconds a compile may take (default COMPILE_TIMEOUT_S)
COMPILE_TIMEOUT_S = 120.0  # the CIFAR-10 student, the largest kernel, compiles in ~10 s on the EPYC
PARITY_FILE = "parity.npz"  # beside model.c: images, PyTorch's scores for them, the tolerance
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
    info, lines = platform.machine(), cpuinfo_lines()
    info += "".join(sorted(set(lines))) if lines is not None else platform.processor()
    return hashlib.sha256(f"{info}{compiler()}".encode()).hexdigest()[:12]


def source_digest(c_path: Path) -> str:
    """What an object is built from: the source, the compiler and its flags."""
    h = hashlib.sha256(Path(c_path).read_bytes())
    h.update(f"{compiler()}|{' '.join(FLAGS)}".encode())
    return h.hexdigest()[:16]


def object_path(c_path: Path) -> Path:
    """``<stem>-<source digest>-<cpu tag>.so`` beside the source, or in the user cache when
    that folder is read-only."""
    c_path = Path(c_path)
    name = f"{c_path.stem}-{source_digest(c_path)}-{cpu_tag()}.so"
    if (c_path.parent / name).is_file() or os.access(c_path.parent, os.W_OK):
        return c_path.parent / name
    folder = cache_root() / "native"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stamp(so: Path) -> Path:
    """The object's own hash, written once it passed its parity check."""
    return so.with_name(so.name + ".sha256")


def trusted(so: Path) -> bool:
    """An object that was checked on this CPU and is byte for byte what was checked."""
    try:
        return so.is_file() and _stamp(so).read_text().strip() == _file_digest(so)
    except OSError:
        return False


def compile_timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return COMPILE_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise UsageError(f"{TIMEOUT_ENV} must be > 0, got {raw!r}")
    return value


def compile_source(c_path: Path) -> Path:
    """Compile ``c_path`` for this CPU into ``object_path(c_path)`` (atomically, under the
    compile timeout). The object is not trusted until ``NativeRunner`` has checked it."""
    cc = compiler()
    if cc is None:
        raise UsageError(f"the native backend needs a C compiler (cc, gcc or clang; or set {COMPILER_ENV})")
    so = object_path(Path(c_path))
    limit = compile_timeout()
    # a fresh name the compiler creates itself (with the umask's mode, as the run's other files)
    tmp = str(so.with_name(f".{so.name}.{os.getpid()}-{threading.get_ident()}.tmp"))
    try:
        proc = subprocess.run([cc, *FLAGS, "-o", tmp, str(c_path)], capture_output=True, text=True,
                              timeout=limit)
        if proc.returncode != 0:
            first = (proc.stderr.strip().splitlines() or ["no message"])[0]
            raise PkdganError(f"compiling the native scoring kernel failed: {first[:300]}")
        os.replace(tmp, so)
    except subprocess.TimeoutExpired:
        raise PkdganError(f"compiling the native scoring kernel took over {limit:g} s "
                          f"(set {TIMEOUT_ENV} to allow more)") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return so


def timed_compile(c_path: Path) -> float:
    """Seconds one compile of ``c_path`` takes on this machine (in a scratch folder, nothing
    kept): what a first use on a new CPU costs, as ``bench`` reports it."""
    with tempfile.TemporaryDirectory(prefix="pkdgan-cc-") as tmp:
        src = Path(tmp) / Path(c_path).name
        shutil.copyfile(c_path, src)
        t0 = time.perf_counter()
        compile_source(src)
        return time.perf_counter() - t0


def write_parity(c_path: Path, images: np.ndarray, expected: np.ndarray, rtol: float) -> Path:
    """The check every object built from ``c_path`` must pass (written at export)."""
    buf = io.BytesIO()
    np.savez(buf, images=np.ascontiguousarray(images, np.float32),
             expected=np.asarray(expected, np.float64), rtol=np.float64(rtol))
    path = Path(c_path).with_name(PARITY_FILE)
    atomic_write_bytes(path, buf.getvalue())
    return path


def check_parity(kernel: _Kernel, c_path: Path) -> float:
    """Max difference from PyTorch's scores relative to the largest score; raises past the
    tolerance. A source without ``parity.npz`` (exported before it existed) cannot be checked."""
    path = Path(c_path).with_name(PARITY_FILE)
    if not path.is_file():
        raise PkdganError(f"no {PARITY_FILE} beside {c_path}: rebuild the deploy cache to check "
                          "native kernels on this CPU")
    with np.load(path, allow_pickle=False) as f:
        images, expected, rtol = f["images"], f["expected"], float(f["rtol"])
    _, rel = differences(kernel(np.ascontiguousarray(images, np.float32), kernel.scratch()), expected)
    if not rel <= rtol:  # also catches NaN
        raise PkdganError(f"the native kernel built on this CPU fails its parity check "
                          f"(max relative difference {rel:.3g} > {rtol:g})")
    return rel


def load_kernel(c_path: Path) -> tuple[_Kernel, float]:
    """The checked kernel of ``c_path`` for this CPU, and the seconds spent compiling (0 when a
    trusted object was there). Builds, checks and stamps an object that is missing, unstamped
    or altered; a failed check removes it."""
    c_path = Path(c_path)
    so = object_path(c_path)
    if trusted(so):
        return _Kernel(so), 0.0
    t0 = time.perf_counter()
    so = compile_source(c_path)
    seconds = time.perf_counter() - t0
    try:
        kernel = _Kernel(so)
        check_parity(kernel, c_path)
    except BaseException:
        so.unlink(missing_ok=True)
        raise
    atomic_write_bytes(_stamp(so), _file_digest(so).encode())
    return kernel, seconds


class _Kernel:
    """The loaded shared object and one zeroed scratch arena per thread that calls it."""

    def __init__(self, so: Path) -> None:
        try:
            lib = ctypes.CDLL(str(so))
        except OSError as e:
            raise PkdganError(f"cannot load the native kernel {so.name}: {str(e)[:200]}") from None
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
        self.kernel, self.compile_seconds = load_kernel(path)
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
