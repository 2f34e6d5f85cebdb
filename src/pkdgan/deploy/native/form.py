"""The native kernels' common form: a ``Plan`` (a small generator's scoring path as padded
convolutions, built by ``plan.native_plan``) and the C pieces every kernel writer shares (float
literals, the vector prelude, activations, register tiles). No torch.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pkdgan.core.errors import UsageError

# activations the kernels apply after a layer's bias
ACTIVATIONS = ("none", "leaky", "relu", "tanh")
# vector registers per vector width (lanes): AVX2 has 16, AVX-512 32 (``tile``)
REGISTERS = {8: 16, 16: 32}
LATENCY_FMAS = 8  # multiply-adds in flight to hide their latency (2 units x ~4 cycles)
# a generator is put in this form only when no feature map has more channels than this (wider
# layers vectorise well over channels in the runtimes, and the unrolled source would grow)
MAX_CHANNELS = 64


@dataclasses.dataclass(frozen=True)
class Buffer:
    """An activation: ``channels x height x width``, stored with a zero border of ``pad``."""

    channels: int
    height: int
    width: int
    pad: int = 0


@dataclasses.dataclass(frozen=True)
class Phase:
    """The outputs of one layer at rows ``a * out_stride + row``, columns ``b * out_stride + col``
    (a < rows, b < cols): ``bias + sum over input channel and tap of weight * input``, where tap
    (dy, dx) reads padded input position ``(a * in_stride + dy, b * in_stride + dx)``.
    ``weight`` is ``(in_channels, taps, out_channels)``."""

    row: int
    col: int
    taps: tuple[tuple[int, int], ...]
    weight: np.ndarray


@dataclasses.dataclass(frozen=True)
class Norm:
    """Per-image normalisation of a layer's whole output map, channel by channel, before its
    activation: ``(x - mean) / sqrt(var + eps) * weight + bias`` with the image's own mean and
    (biased) variance over the map: affine InstanceNorm, what ``norm`` instance and
    batch-per-image score with."""

    weight: np.ndarray
    bias: np.ndarray
    eps: float


@dataclasses.dataclass(frozen=True)
class Layer:
    src: int  # buffer indices in the plan
    dst: int
    rows: int
    cols: int
    in_stride: int
    out_stride: int
    phases: tuple[Phase, ...]
    bias: np.ndarray
    activation: str = "none"
    negative_slope: float = 0.0
    norm: Norm | None = None

    def before_norm(self) -> Layer:
        """The multiply-adds alone: a normalised layer applies its activation after the norm."""
        return dataclasses.replace(self, activation="none", negative_slope=0.0) if self.norm else self


@dataclasses.dataclass(frozen=True)
class Plan:
    """Buffers, layers in order, and how the score comes out of them.

    ``image`` is buffer 0 (the input); ``z``/``z_hat`` the two codes (``nz x 1 x 1``, after the
    heads' activation: tanh for a bounded code), ``x_hat`` the reconstruction; ``score`` is
    latent, reconstruction or combined (with ``stats``: the held-out standardisation)."""

    buffers: tuple[Buffer, ...]
    layers: tuple[Layer, ...]
    z: int
    z_hat: int
    x_hat: int
    score: str
    stats: dict[str, float]

    def macs(self) -> int:
        """Multiply-adds per image (the arithmetic the kernels do)."""
        return sum(lay.rows * lay.cols * p.weight.size for lay in self.layers for p in lay.phases)


# --- C pieces ------------------------------------------------------------------------------------

def f32(x: float) -> str:
    """A float32 literal that reads back exactly (hex float)."""
    return float(np.float32(x)).hex() + "f"


def c_array(name: str, values: np.ndarray) -> str:
    """A static float32 array, 64-byte aligned (so kernels may read it as whole vectors)."""
    flat = np.asarray(values, np.float32).reshape(-1)
    body = ",".join(f32(v) for v in flat)
    return f"static const float {name}[{len(flat)}] __attribute__((aligned(64))) = {{{body}}};\n"


def strides(b: Buffer) -> tuple[int, int]:
    """(channel stride, row stride) in elements (vectors or floats) of a padded buffer."""
    w = b.width + 2 * b.pad
    return (b.height + 2 * b.pad) * w, w


PRELUDE = r"""
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__)
#define LANES 16
#else
#define LANES 8
#endif
typedef float vf __attribute__((vector_size(4 * LANES)));
typedef int vi __attribute__((vector_size(4 * LANES)));

static inline vf vsel(vi m, vf a, vf b) { return (vf)(((vi)a & m) | ((vi)b & ~m)); }
static inline vf vmax(vf a, vf b) { return vsel(a > b, a, b); }
static inline vf vmin(vf a, vf b) { return vsel(a < b, a, b); }
/* exp(x) for |x| <= 87: 2^n * 2^f, f in [-1/2, 1/2], degree-7 Taylor (rel. error < 1e-7) */
static inline vf vexp(vf x) {
    vf y = x * 1.44269504088896341f;
    vf n = (y + 12582912.0f) - 12582912.0f;  /* round to nearest (no -ffast-math) */
    vf f = (y - n) * 0.693147180559945309f;
    vf p = 1.0f + f * (1.0f + f * (0.5f + f * (1.6666667e-1f + f * (4.1666668e-2f
           + f * (8.3333338e-3f + f * (1.3888889e-3f + f * 1.9841270e-4f))))));
    vi e = __builtin_convertvector(n, vi) << 23;
    return (vf)((vi)p + e);
}
static inline vf vtanh(vf x) {
    vf c = vmin(vmax(x, (vf){} - 9.0f), (vf){} + 9.0f);
    vf e = vexp(c + c);
    return (e - 1.0f) / (e + 1.0f);
}
"""


def activation_c(act: str, slope: float, v: str) -> str:
    if act == "none":
        return v
    if act == "leaky":
        return f"vmax({v}, {v} * {f32(slope)})" if 0.0 <= slope <= 1.0 else \
            f"vsel({v} > 0.0f, {v}, {v} * {f32(slope)})"
    if act == "relu":
        return f"vmax({v}, (vf){{}})"
    if act == "tanh":
        return f"vtanh({v})"
    raise UsageError(f"unknown activation {act!r}; one of {', '.join(ACTIVATIONS)}")


def final_score(plan: Plan, lat: str, rec: str) -> str:
    """The C expression of the plan's score from its latent and reconstruction distances (vectors:
    each kernel computes them in its own layout)."""
    if plan.score == "latent":
        return lat
    if plan.score == "reconstruction":
        return rec
    if plan.score == "combined":
        lat_s, rec_s = plan.stats["latent"], plan.stats["reconstruction"]
        return (f"vmax(({lat} - {f32(lat_s['mean'])}) / {f32(lat_s['std'])}, "
                f"({rec} - {f32(rec_s['mean'])}) / {f32(rec_s['std'])})")
    raise UsageError(f"unknown score kind {plan.score!r}")


def tile(co_n: int, cols: int, registers: int) -> tuple[int, int]:
    """(output channels, output columns) computed at once. Per input channel and tap a tile of
    ``cb x pb`` needs ``pb`` input loads and ``cb`` weight broadcasts for ``cb * pb``
    multiply-adds, with ``cb * pb`` accumulators, ``pb`` inputs and a weight in registers (a
    tile that needs more spills). A core does two loads and two multiply-adds per cycle, each multiply-add
    waiting ~4 cycles for its accumulator's previous one, so a tile costs
    ``max(cb * pb, cb + pb, LATENCY_FMAS)`` half-cycles; the least total over the layer (its
    remainder tiles included) wins, the larger tile on a tie (less loop overhead). Measured on
    the MNIST student (AVX2): 12 accumulators ran its 3-12-channel layers 1.2-1.6x faster than 4.
    """
    best, best_cost = (1, 1), (float("inf"), 0)
    for cb in range(1, co_n + 1):
        for pb in range(1, cols + 1):
            if cb * pb + pb + 1 > registers:  # accumulators, inputs, one weight
                continue
            cost = sum(max(c * q, c + q, LATENCY_FMAS) for c in blocks(co_n, cb) for q in blocks(cols, pb))
            if (cost, -cb * pb) < best_cost:
                best, best_cost = (cb, pb), (cost, -cb * pb)
    return best


def blocks(n: int, size: int) -> list[int]:
    return [size] * (n // size) + ([n % size] if n % size else [])


def weights_source(k: int, lay: Layer) -> str:
    """Layer ``k``'s weights ``W{k}_{phase}`` as ``(in channel, tap, out channel)`` and bias
    ``B{k}``; a normalised layer's affine parameters ``NG{k}``, ``NB{k}``."""
    arrays = [c_array(f"W{k}_{q}", np.ascontiguousarray(ph.weight, np.float32))
              for q, ph in enumerate(lay.phases)]
    if lay.norm is not None:
        arrays += [c_array(f"NG{k}", lay.norm.weight), c_array(f"NB{k}", lay.norm.bias)]
    return "".join(arrays) + c_array(f"B{k}", lay.bias)


def norm_source(k: int, lay: Layer, dst: Buffer, vectors: bool) -> str:
    """The per-image normalisation of layer ``k``'s output ``out`` (``Norm``), then its activation.
    ``vectors``: the batch kernel (every element a vector of one value per image, so each lane
    gets its own statistics); else the single-image kernel (floats)."""
    if lay.norm is None:
        return ""
    d_c, d_r = strides(dst)
    h, w, pad = dst.height, dst.width, dst.pad
    inv_n, eps = f32(1.0 / (h * w)), f32(lay.norm.eps)
    act = activation_c(lay.activation, lay.negative_slope, "t")
    loop = f"for (int y = 0; y < {h}; y++) for (int x = 0; x < {w}; x++)"
    t = "vf" if vectors else "float"
    zero = "(vf){}" if vectors else "0.0f"
    out = [f"  for (int c = 0; c < {dst.channels}; c++) {{\n",
           f"    {t} *p = out + c * {d_c} + {pad * d_r + pad};\n",
           f"    {t} s = {zero}, v = {zero};\n",
           f"    {loop} s += p[y * {d_r} + x];\n",
           f"    {t} mean = s * {inv_n};\n",
           f"    {loop} {{ {t} d = p[y * {d_r} + x] - mean; v += d * d; }}\n",
           f"    v = v * {inv_n};\n"]
    if vectors:
        out += ["    vf scale;\n",
                f"    for (int l = 0; l < LANES; l++) scale[l] = NG{k}[c] / __builtin_sqrtf(v[l] + {eps});\n",
                f"    vf shift = ((vf){{}} + NB{k}[c]) - mean * scale;\n",
                f"    {loop} {{ vf t = p[y * {d_r} + x] * scale + shift; p[y * {d_r} + x] = {act}; }}\n"]
    else:  # the affine map and activation on whole vectors of a row
        out += [f"    float scale = NG{k}[c] / __builtin_sqrtf(v + {eps});\n",
                f"    float shift = NB{k}[c] - mean * scale;\n",
                f"    for (int y = 0; y < {h}; y++) for (int x = 0; x < {w}; x += LANES) {{\n",
                f"      int n = {w} - x < LANES ? {w} - x : LANES;\n",
                "      vf t = (vf){};\n",
                f"      memcpy(&t, p + y * {d_r} + x, sizeof(float) * n);\n",
                f"      t = t * scale + shift; t = {act};\n",
                f"      memcpy(p + y * {d_r} + x, &t, sizeof(float) * n);\n",
                "    }\n"]
    out.append("  }\n")
    return "".join(out)
