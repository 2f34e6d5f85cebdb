"""A ``Plan`` (a small generator's scoring path as padded convolutions) and the C source of its
batch-in-vector-lanes kernel (the why of that form: ``native``).

Each layer becomes register tiles of output channels x output columns whose accumulators stay in
vector registers (``_tile`` sizes them for the CPU's register file); weights are float32
literals and every shape a constant, so the compiler unrolls and schedules all of it. No torch:
``native_plan`` builds plans from generators.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from pkdgan.core.errors import UsageError
from pkdgan.core.files import atomic_write_bytes

# activations the kernels apply after a layer's bias
ACTIVATIONS = ("none", "leaky", "relu", "tanh")
# vector registers per vector width (lanes): AVX2 has 16, AVX-512 32 (``_tile``)
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


# --- C source -------------------------------------------------------------------------------------

def _f(x: float) -> str:
    """A float32 literal that reads back exactly (hex float)."""
    return float(np.float32(x)).hex() + "f"


def _array(name: str, values: np.ndarray) -> str:
    flat = np.asarray(values, np.float32).reshape(-1)
    body = ",".join(_f(v) for v in flat)
    return f"static const float {name}[{len(flat)}] = {{{body}}};\n"


def _strides(b: Buffer) -> tuple[int, int]:
    """(channel stride, row stride) in vectors of a padded buffer."""
    w = b.width + 2 * b.pad
    return (b.height + 2 * b.pad) * w, w


_PRELUDE = r"""
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


def _activation(act: str, slope: float, v: str) -> str:
    if act == "none":
        return v
    if act == "leaky":
        return f"vmax({v}, {v} * {_f(slope)})" if 0.0 <= slope <= 1.0 else \
            f"vsel({v} > 0.0f, {v}, {v} * {_f(slope)})"
    if act == "relu":
        return f"vmax({v}, (vf){{}})"
    if act == "tanh":
        return f"vtanh({v})"
    raise UsageError(f"unknown activation {act!r}; one of {', '.join(ACTIVATIONS)}")


def _tile(co_n: int, cols: int, registers: int) -> tuple[int, int]:
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
            cost = sum(max(c * q, c + q, LATENCY_FMAS) for c in _blocks(co_n, cb) for q in _blocks(cols, pb))
            if (cost, -cb * pb) < best_cost:
                best, best_cost = (cb, pb), (cost, -cb * pb)
    return best


def _blocks(n: int, size: int) -> list[int]:
    return [size] * (n // size) + ([n % size] if n % size else [])


def _weights_source(k: int, lay: Layer) -> str:
    arrays = [_array(f"W{k}_{q}", np.ascontiguousarray(ph.weight, np.float32))
              for q, ph in enumerate(lay.phases)]
    return "".join(arrays) + _array(f"B{k}", lay.bias)


def _layer_source(k: int, lay: Layer, src: Buffer, dst: Buffer, registers: int) -> str:
    """One function per layer. For every output row and tile of output channels x columns
    (``_tile``), the accumulators stay in registers: per input channel and tap, one load per
    column and one broadcast weight per channel feed ``channels x columns`` multiply-adds."""
    ci_n, _, co_n = lay.phases[0].weight.shape
    s_c, s_r = _strides(src)
    d_c, d_r = _strides(dst)
    cb_max, pb_max = _tile(co_n, lay.cols, registers)
    out = [f"static void layer{k}(const vf *restrict in, vf *restrict out) {{\n"]
    for q, ph in enumerate(lay.phases):
        n_taps = len(ph.taps)
        full = lay.cols - lay.cols % pb_max
        spans = [(0, full, pb_max)] + ([(full, lay.cols, lay.cols - full)] if full < lay.cols else [])
        for b0, b1, pb in spans:
            out.append(f"  for (int a = 0; a < {lay.rows}; a++) for (int b = {b0}; b < {b1}; b += {pb}) {{\n")
            out.append(f"    const vf *base = in + a * {lay.in_stride * s_r} + b * {lay.in_stride};\n")
            out.append(f"    vf *o = out + (a * {lay.out_stride} + {ph.row + dst.pad}) * {d_r}"
                       f" + b * {lay.out_stride} + {ph.col + dst.pad};\n")
            for j0 in range(0, co_n, cb_max):
                cb = min(cb_max, co_n - j0)
                out.append(_tile_source(k, q, lay, ph, n_taps, ci_n, co_n, j0, cb, pb, s_c, s_r, d_c))
            out.append("  }\n")
    out.append("}\n")
    return "".join(out)


def _tile_source(k: int, q: int, lay: Layer, ph: Phase, n_taps: int, ci_n: int, co_n: int,
                 j0: int, cb: int, pb: int, s_c: int, s_r: int, d_c: int) -> str:
    out = ["    {\n"]
    for j in range(cb):
        init = f"(vf){{}} + B{k}[{j0 + j}]"
        out.append("      vf " + ", ".join(f"a{j}_{c} = {init}" for c in range(pb)) + ";\n")
    out.append(f"      for (int ci = 0; ci < {ci_n}; ci++) {{\n")
    out.append(f"        const vf *p = base + ci * {s_c};\n")
    out.append(f"        const float *w = W{k}_{q} + ci * {n_taps * co_n} + {j0};\n")
    for t, (dy, dx) in enumerate(ph.taps):
        loads = " ".join(f"vf x{c} = p[{dy * s_r + dx + c * lay.in_stride}];" for c in range(pb))
        out.append(f"        {{ {loads}\n")
        for j in range(cb):
            fmas = " ".join(f"a{j}_{c} += wj * x{c};" for c in range(pb))
            out.append(f"          {{ float wj = w[{t * co_n + j}]; {fmas} }}\n")
        out.append("        }\n")
    out.append("      }\n")
    for j in range(cb):
        for c in range(pb):
            act = _activation(lay.activation, lay.negative_slope, f"a{j}_{c}")
            out.append(f"      o[{(j0 + j) * d_c + c * lay.out_stride}] = {act};\n")
    out.append("    }\n")
    return "".join(out)


def source(plan: Plan) -> str:
    """The C translation unit: ``pk_scratch_floats()``, ``pk_lanes()``, ``pk_shape()`` and
    ``pk_score(images, n, scores, scratch)`` (images ``(n, C, H, W)`` float32, C order)."""
    lanes_options = sorted(REGISTERS)
    bufs = plan.buffers
    sizes = [b.channels * (b.height + 2 * b.pad) * (b.width + 2 * b.pad) for b in bufs]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    parts = [_PRELUDE]
    parts += [_weights_source(k, lay) for k, lay in enumerate(plan.layers)]
    for lanes in lanes_options:
        parts.append(f"#if LANES == {lanes}\n")
        for k, lay in enumerate(plan.layers):
            parts.append(_layer_source(k, lay, bufs[lay.src], bufs[lay.dst], REGISTERS[lanes]))
        parts.append("#endif\n")
    img = bufs[0]
    s_c, s_r = _strides(img)
    xh = bufs[plan.x_hat]
    h_c, h_r = _strides(xh)
    nz = bufs[plan.z].channels
    pixels = img.channels * img.height * img.width
    calls = "".join(f"    layer{k}(buf + {offsets[lay.src]}, buf + {offsets[lay.dst]});\n"
                    for k, lay in enumerate(plan.layers))
    st = plan.stats
    if plan.score == "latent":
        final = "lat"
    elif plan.score == "reconstruction":
        final = "rec"
    elif plan.score == "combined":
        lat_s, rec_s = st["latent"], st["reconstruction"]
        final = (f"vmax((lat - {_f(lat_s['mean'])}) / {_f(lat_s['std'])}, "
                 f"(rec - {_f(rec_s['mean'])}) / {_f(rec_s['std'])})")
    else:
        raise UsageError(f"unknown score kind {plan.score!r}")
    parts.append(f"""
long pk_scratch_floats(void) {{ return {int(offsets[-1])}L * LANES + LANES; }}
/* the input the kernel reads, (n, C, H, W): the caller checks it (a wrong shape reads past it) */
void pk_shape(int *chw) {{ chw[0] = {img.channels}; chw[1] = {img.height}; chw[2] = {img.width}; }}
int pk_lanes(void) {{ return LANES; }}
long pk_macs(void) {{ return {plan.macs()}L; }}

/* scratch: pk_scratch_floats() floats, 4 * LANES-byte aligned, zeroed once by the caller
   (the zero borders of the padded buffers are never written) */
void pk_score(const float *restrict images, long n, float *restrict scores, float *scratch) {{
  vf *buf = (vf *)scratch;
  for (long i0 = 0; i0 < n; i0 += LANES) {{
    int m = n - i0 < LANES ? (int)(n - i0) : LANES;
    for (int c = 0; c < {img.channels}; c++)
      for (int y = 0; y < {img.height}; y++)
        for (int x = 0; x < {img.width}; x++) {{
          float *d = (float *)(buf + c * {s_c} + (y + {img.pad}) * {s_r} + x + {img.pad});
          const float *s = images + i0 * {pixels} + (c * {img.height} + y) * {img.width} + x;
          int l = 0;
          for (; l < m; l++) d[l] = s[(long)l * {pixels}];
          for (; l < LANES; l++) d[l] = 0.0f;
        }}
{calls}    vf lat = (vf){{}}, rec = (vf){{}};
    for (int j = 0; j < {nz}; j++) {{
      vf d = buf[{offsets[plan.z]} + j] - buf[{offsets[plan.z_hat]} + j];
      lat += d * d;
    }}
    lat = lat * {_f(1.0 / nz)};
    for (int c = 0; c < {img.channels}; c++)
      for (int y = 0; y < {img.height}; y++)
        for (int x = 0; x < {img.width}; x++) {{
          vf d = buf[c * {s_c} + (y + {img.pad}) * {s_r} + x + {img.pad}]
               - buf[{offsets[plan.x_hat]} + c * {h_c} + (y + {xh.pad}) * {h_r} + x + {xh.pad}];
          rec += d * d;
        }}
    rec = rec * {_f(1.0 / pixels)};
    vf s = {final};
    for (int l = 0; l < m; l++) scores[i0 + l] = s[l];
  }}
}}
""")
    return "".join(parts)


def write_source(plan: Plan, path: Path) -> Path:
    path = Path(path)
    atomic_write_bytes(path, source(plan).encode())
    return path
