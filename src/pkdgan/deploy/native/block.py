"""The batch kernel: a block of ``LANES`` images in the vector lanes (the why: ``native``).

Activations are ``[channel][row][column][lane]`` with zero borders; each layer becomes register
tiles of output channels x output columns whose accumulators stay in vector registers
(``tile`` sizes them for the CPU's register file). Every shape is a constant, so the compiler
unrolls and schedules all of it.
"""

from __future__ import annotations

import numpy as np

from pkdgan.deploy.native.form import (
    Buffer,
    Layer,
    Phase,
    Plan,
    activation_c,
    f32,
    final_score,
    norm_source,
    strides,
    tile,
)


def layer_source(k: int, lay: Layer, src: Buffer, dst: Buffer, registers: int) -> str:
    """One function per layer. For every output row and tile of output channels x columns
    (``tile``), the accumulators stay in registers: per input channel and tap, one load per
    column and one broadcast weight per channel feed ``channels x columns`` multiply-adds."""
    norm_src = norm_source(k, lay, dst, vectors=True)
    lay = lay.before_norm()
    ci_n, _, co_n = lay.phases[0].weight.shape
    s_c, s_r = strides(src)
    d_c, d_r = strides(dst)
    cb_max, pb_max = tile(co_n, lay.cols, registers)
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
    out.append(norm_src + "}\n")
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
            act = activation_c(lay.activation, lay.negative_slope, f"a{j}_{c}")
            out.append(f"      o[{(j0 + j) * d_c + c * lay.out_stride}] = {act};\n")
    out.append("    }\n")
    return "".join(out)


def arena(plan: Plan) -> np.ndarray:
    """Vector offsets of the plan's padded buffers in the block arena (the last: its size)."""
    sizes = [b.channels * (b.height + 2 * b.pad) * (b.width + 2 * b.pad) for b in plan.buffers]
    return np.concatenate([[0], np.cumsum(sizes)]).astype(int)


def floats(plan: Plan, lanes: int) -> int:
    """Floats of the block arena at ``lanes`` images: its buffers and one spare vector (the
    single-image arena starts right after it in the scratch)."""
    return (int(arena(plan)[-1]) + 1) * lanes


def block_source(plan: Plan, registers: int) -> str:
    """``layer{k}`` for every layer and ``block_score(images, m, scores, buf)``: the scores of
    ``m <= LANES`` images (``(m, C, H, W)``) with the block arena ``buf``."""
    bufs = plan.buffers
    offsets = arena(plan)
    parts = [layer_source(k, lay, bufs[lay.src], bufs[lay.dst], registers)
             for k, lay in enumerate(plan.layers)]
    img, xh = bufs[0], bufs[plan.x_hat]
    s_c, s_r = strides(img)
    h_c, h_r = strides(xh)
    nz = bufs[plan.z].channels
    pixels = img.channels * img.height * img.width
    calls = "".join(f"  layer{k}(buf + {offsets[lay.src]}, buf + {offsets[lay.dst]});\n"
                    for k, lay in enumerate(plan.layers))
    parts.append(f"""
static void block_score(const float *restrict images, int m, float *restrict scores, vf *buf) {{
  for (int c = 0; c < {img.channels}; c++)
    for (int y = 0; y < {img.height}; y++)
      for (int x = 0; x < {img.width}; x++) {{
        float *d = (float *)(buf + c * {s_c} + (y + {img.pad}) * {s_r} + x + {img.pad});
        const float *s = images + (c * {img.height} + y) * {img.width} + x;
        int l = 0;
        for (; l < m; l++) d[l] = s[(long)l * {pixels}];
        for (; l < LANES; l++) d[l] = 0.0f;
      }}
{calls}  vf lat = (vf){{}}, rec = (vf){{}};
  for (int j = 0; j < {nz}; j++) {{
    vf d = buf[{offsets[plan.z]} + j] - buf[{offsets[plan.z_hat]} + j];
    lat += d * d;
  }}
  lat = lat * {f32(1.0 / nz)};
  for (int c = 0; c < {img.channels}; c++)
    for (int y = 0; y < {img.height}; y++)
      for (int x = 0; x < {img.width}; x++) {{
        vf d = buf[c * {s_c} + (y + {img.pad}) * {s_r} + x + {img.pad}]
             - buf[{offsets[plan.x_hat]} + c * {h_c} + (y + {xh.pad}) * {h_r} + x + {xh.pad}];
        rec += d * d;
      }}
  rec = rec * {f32(1.0 / pixels)};
  vf s = {final_score(plan, "lat", "rec")};
  for (int l = 0; l < m; l++) scores[l] = s[l];
}}
""")
    return "".join(parts)
