"""The single-image kernel: one image's output positions in the vector lanes.

Why: the batch kernel (``block``) fills its lanes with images, so one image costs a whole
block's work (8 or 16 images). Here each phase of a layer first gathers its inputs into a matrix
``X[input channel x tap][output position]`` (im2col; a phase's rows x columns flattened, padded
to whole vectors), then register tiles of output channels x position vectors multiply it by
the weights exactly as the batch kernel's tiles do, and the results are scattered into the
next padded activation. A phase with a single output position (the heads that make a code,
the code's k x k map) has nothing to spread over the lanes, so there the output channels fill
them: one matrix-vector product, its sum split into independent partial sums.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pkdgan.deploy.native import form as nf
from pkdgan.deploy.native.form import Buffer, Layer, Phase, Plan

ALIGN = 16  # floats: one vector at the widest lanes (AVX-512), so every region suits both widths


def _up(n: int, to: int = ALIGN) -> int:
    return -(-n // to) * to


@dataclasses.dataclass(frozen=True)
class Arena:
    """Float offsets in the single-image arena: each padded buffer, the gathered inputs ``x``
    and the products ``o`` of the widest phase; ``floats`` its size."""

    buffers: tuple[int, ...]
    x: int
    o: int
    floats: int


def _positions(lay: Layer) -> int:
    return lay.rows * lay.cols


def arena(plan: Plan) -> Arena:
    offsets, at = [], 0
    for b in plan.buffers:
        offsets.append(at)
        at += _up(b.channels * (b.height + 2 * b.pad) * (b.width + 2 * b.pad))
    gathered = products = 0
    for lay in plan.layers:
        if _positions(lay) > 1:
            ci_n, _, co_n = lay.phases[0].weight.shape
            width = _up(_positions(lay))  # positions padded for either lane width
            gathered = max(gathered, max(ci_n * len(ph.taps) for ph in lay.phases) * width)
            products = max(products, co_n * width)
    return Arena(tuple(offsets), at, at + _up(gathered), at + _up(gathered) + _up(products))


def weights_source(k: int, lay: Layer) -> str:
    """For single-position phases: ``V{k}_{q}`` as ``(input, output channel padded to ALIGN)`` and
    the padded bias ``C{k}``, so whole vectors of output channels load at once."""
    if _positions(lay) > 1:
        return ""
    co_n = len(lay.bias)
    out = []
    for q, ph in enumerate(lay.phases):
        w = ph.weight.reshape(-1, co_n)
        padded = np.zeros((len(w), _up(co_n)), np.float32)
        padded[:, :co_n] = w
        out.append(nf.c_array(f"V{k}_{q}", padded))
    bias = np.zeros(_up(co_n), np.float32)
    bias[:co_n] = lay.bias
    return "".join(out) + nf.c_array(f"C{k}", bias)


def layer_source(k: int, lay: Layer, plan: Plan, lanes: int, registers: int) -> str:
    """``single{k}(in, out, x, o)``: layer ``k`` of one image (float buffers, zero borders)."""
    src, dst = plan.buffers[lay.src], plan.buffers[lay.dst]
    linear = lay.before_norm()
    body = [(_matvec if _positions(lay) == 1 else _gemm)(k, q, linear, ph, src, dst, lanes, registers)
            for q, ph in enumerate(lay.phases)]
    body.append(nf.norm_source(k, lay, dst, vectors=False))
    return (f"static void single{k}(const float *restrict in, float *restrict out, "
            f"float *restrict x, float *restrict o) {{\n  (void)x; (void)o;\n{''.join(body)}}}\n")


def _out_index(lay: Layer, ph: Phase, dst: Buffer, a: str, b: str) -> str:
    d_c, d_r = nf.strides(dst)
    return (f"({a} * {lay.out_stride} + {ph.row + dst.pad}) * {d_r} + {b} * {lay.out_stride} "
            f"+ {ph.col + dst.pad}")


def _gemm(k: int, q: int, lay: Layer, ph: Phase, src: Buffer, dst: Buffer, lanes: int,
          registers: int) -> str:
    ci_n, n_taps, co_n = ph.weight.shape
    s_c, s_r = nf.strides(src)
    d_c, _ = nf.strides(dst)
    n_pos = _positions(lay)
    nv = -(-n_pos // lanes)
    width = nv * lanes
    s = lay.in_stride
    out = ["  {\n"]
    # gather: x[(ci * taps + t) * width + a * cols + b] = in[ci][a * s + dy][b * s + dx]
    out.append(f"    for (int ci = 0; ci < {ci_n}; ci++) for (int a = 0; a < {lay.rows}; a++) {{\n")
    out.append(f"      const float *p = in + ci * {s_c} + a * {s * s_r};\n")
    out.append(f"      float *d = x + ci * {n_taps * width} + a * {lay.cols};\n")
    for t, (dy, dx) in enumerate(ph.taps):
        out.append(f"      for (int b = 0; b < {lay.cols}; b++) "
                   f"d[{t * width} + b] = p[{dy * s_r + dx} + b * {s}];\n")
    out.append("    }\n")
    # products: tiles of cb output channels x pb position vectors, accumulators in registers
    cb_max, pb_max = nf.tile(co_n, nv, registers)
    full = nv - nv % pb_max
    spans = [(0, full, pb_max)] + ([(full, nv, nv - full)] if full < nv else [])
    for p0, p1, pb in spans:
        out.append(f"    for (int v = {p0}; v < {p1}; v += {pb}) {{\n")
        out.append("      const vf *xv = (const vf *)x + v;\n")
        for j0 in range(0, co_n, cb_max):
            cb = min(cb_max, co_n - j0)
            out.append("      {\n")
            for j in range(cb):
                init = f"(vf){{}} + B{k}[{j0 + j}]"
                out.append("        vf " + ", ".join(f"a{j}_{c} = {init}" for c in range(pb)) + ";\n")
            out.append(f"        for (int r = 0; r < {ci_n * n_taps}; r++) {{\n")
            out.append(f"          const vf *xr = xv + r * {nv};\n")
            out.append("          " + " ".join(f"vf x{c} = xr[{c}];" for c in range(pb)) + "\n")
            out.append(f"          const float *w = W{k}_{q} + r * {co_n} + {j0};\n")
            for j in range(cb):
                fmas = " ".join(f"a{j}_{c} += wj * x{c};" for c in range(pb))
                out.append(f"          {{ float wj = w[{j}]; {fmas} }}\n")
            out.append("        }\n")
            for j in range(cb):
                for c in range(pb):
                    act = nf.activation_c(lay.activation, lay.negative_slope, f"a{j}_{c}")
                    out.append(f"        ((vf *)o)[{(j0 + j) * nv} + v + {c}] = {act};\n")
            out.append("      }\n")
        out.append("    }\n")
    # scatter into the padded output (its borders stay zero)
    out.append(f"    for (int j = 0; j < {co_n}; j++) for (int a = 0; a < {lay.rows}; a++)\n")
    out.append(f"      for (int b = 0; b < {lay.cols}; b++)\n"
               f"        out[j * {d_c} + {_out_index(lay, ph, dst, 'a', 'b')}]"
               f" = o[j * {width} + a * {lay.cols} + b];\n")
    out.append("  }\n")
    return "".join(out)


def _matvec(k: int, q: int, lay: Layer, ph: Phase, src: Buffer, dst: Buffer, lanes: int,
            registers: int) -> str:
    ci_n, n_taps, co_n = ph.weight.shape
    s_c, s_r = nf.strides(src)
    d_c, _ = nf.strides(dst)
    nv = -(-co_n // lanes)
    row = _up(co_n) // lanes  # vectors per input in V (padded for the widest lanes)
    n_in = ci_n * n_taps
    # independent partial sums hide the multiply-add latency, within the register file
    parts = max(1, min(-(-nf.LATENCY_FMAS // nv), (registers - 2) // nv, n_in))
    offsets = ",".join(str(ci * s_c + dy * s_r + dx) for ci in range(ci_n) for dy, dx in ph.taps)
    out = [f"  {{\n    static const int at[{n_in}] = {{{offsets}}};\n",
           f"    const vf *w = (const vf *)V{k}_{q};\n"]
    for s_ in range(parts):
        init = [f"((const vf *)C{k})[{v}]" if s_ == 0 else "(vf){}" for v in range(nv)]
        out.append("    vf " + ", ".join(f"s{s_}_{v} = {init[v]}" for v in range(nv)) + ";\n")

    def step(i: str, s_: int) -> str:
        fmas = " ".join(f"s{s_}_{v} += xi * w[({i}) * {row} + {v}];" for v in range(nv))
        return f"{{ vf xi = (vf){{}} + in[at[{i}]]; {fmas} }}"

    full = n_in - n_in % parts
    steps = " ".join(step(f"i + {s_}", s_) for s_ in range(parts))
    out.append(f"    for (int i = 0; i < {full}; i += {parts}) {{ {steps} }}\n")
    out += [f"    {step(str(i), i - full)}\n" for i in range(full, n_in)]
    for v in range(nv):
        total = " + ".join(f"s{s_}_{v}" for s_ in range(parts))
        act = nf.activation_c(lay.activation, lay.negative_slope, f"t{v}")
        out.append(f"    {{ vf t{v} = {total}; t{v} = {act};\n")
        for c in range(v * lanes, min(co_n, (v + 1) * lanes)):
            at = f"{c * d_c} + {_out_index(lay, ph, dst, '0', '0')}"
            out.append(f"      out[{at}] = t{v}[{c - v * lanes}];\n")
        out.append("    }\n")
    out.append("  }\n")
    return "".join(out)


def single_source(plan: Plan, lanes: int, registers: int) -> str:
    """``single{k}`` for every layer and ``single_score(image, arena)``: one ``(C, H, W)`` image's
    score (``final_score`` on vectors holding the distances; lane 0 read)."""
    ar = arena(plan)
    bufs = plan.buffers
    parts = [layer_source(k, lay, plan, lanes, registers) for k, lay in enumerate(plan.layers)]
    img, xh = bufs[0], bufs[plan.x_hat]
    s_c, s_r = nf.strides(img)
    h_c, h_r = nf.strides(xh)
    nz = bufs[plan.z].channels
    pixels = img.channels * img.height * img.width
    calls = "".join(f"  single{k}(a + {ar.buffers[lay.src]}, a + {ar.buffers[lay.dst]}, a + {ar.x}, "
                    f"a + {ar.o});\n" for k, lay in enumerate(plan.layers))
    i0, ix = ar.buffers[0], ar.buffers[plan.x_hat]
    parts.append(f"""
static float single_score(const float *restrict image, float *restrict a) {{
  for (int c = 0; c < {img.channels}; c++)
    for (int y = 0; y < {img.height}; y++)
      for (int x = 0; x < {img.width}; x++)
        a[{i0} + c * {s_c} + (y + {img.pad}) * {s_r} + x + {img.pad}] =
          image[(c * {img.height} + y) * {img.width} + x];
{calls}  float l = 0.0f, r = 0.0f;
  for (int j = 0; j < {nz}; j++) {{
    float d = a[{ar.buffers[plan.z]} + j] - a[{ar.buffers[plan.z_hat]} + j];
    l += d * d;
  }}
  for (int c = 0; c < {img.channels}; c++)
    for (int y = 0; y < {img.height}; y++)
      for (int x = 0; x < {img.width}; x++) {{
        float d = a[{i0} + c * {s_c} + (y + {img.pad}) * {s_r} + x + {img.pad}]
                - a[{ix} + c * {h_c} + (y + {xh.pad}) * {h_r} + x + {xh.pad}];
        r += d * d;
      }}
  vf lat = (vf){{}} + l * {nf.f32(1.0 / nz)}, rec = (vf){{}} + r * {nf.f32(1.0 / pixels)};
  vf s = {nf.final_score(plan, "lat", "rec")};
  return s[0];
}}
""")
    return "".join(parts)
