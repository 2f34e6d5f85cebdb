"""The C translation unit of a ``Plan``: both kernels and the entry points ``native`` loads.

``pk_score`` scores blocks of ``LANES`` images with the batch kernel (``block``) and a
block of at most ``SINGLE_UP_TO`` images (a lone image, a batch's short remainder) one image at
a time with the single-image kernel (``single``), which does a block's work in a fraction
of the time when the lanes would be mostly empty. Both compute the same arithmetic; their
sums differ in order, so a score agrees between them to float32 rounding.
"""

from __future__ import annotations

from pathlib import Path

from pkdgan.core.files import atomic_write_bytes
from pkdgan.deploy.native import block as native_block
from pkdgan.deploy.native import single as native_single
from pkdgan.deploy.native.form import PRELUDE, REGISTERS, Plan, weights_source

# a block of at most this many images goes through the single-image kernel, one image at a time
SINGLE_UP_TO = {8: 2, 16: 4}


def source(plan: Plan) -> str:
    """The C translation unit: ``pk_scratch_floats()``, ``pk_lanes()``, ``pk_shape()``,
    ``pk_macs()`` and ``pk_score(images, n, scores, scratch)`` (images ``(n, C, H, W)``
    float32, C order)."""
    parts = [PRELUDE]
    parts += [weights_source(k, lay) + native_single.weights_source(k, lay)
              for k, lay in enumerate(plan.layers)]
    single = native_single.arena(plan)
    for lanes in sorted(REGISTERS):
        parts.append(f"#if LANES == {lanes}\n#define SINGLE_UP_TO {SINGLE_UP_TO[lanes]}\n"
                     f"#define BLOCK_FLOATS {native_block.floats(plan, lanes)}L\n")
        parts.append(native_block.block_source(plan, REGISTERS[lanes]))
        parts.append(native_single.single_source(plan, lanes, REGISTERS[lanes]))
        parts.append("#endif\n")
    img = plan.buffers[0]
    pixels = img.channels * img.height * img.width
    parts.append(f"""
/* scratch: the block arena, then the single-image arena; 4 * LANES-byte aligned, zeroed once
   by the caller (the zero borders of the padded buffers are never written) */
long pk_scratch_floats(void) {{ return BLOCK_FLOATS + {single.floats}L; }}
/* the input the kernel reads, (n, C, H, W): the caller checks it (a wrong shape reads past it) */
void pk_shape(int *chw) {{ chw[0] = {img.channels}; chw[1] = {img.height}; chw[2] = {img.width}; }}
int pk_lanes(void) {{ return LANES; }}
long pk_macs(void) {{ return {plan.macs()}L; }}

void pk_score(const float *restrict images, long n, float *restrict scores, float *scratch) {{
  for (long i0 = 0; i0 < n; i0 += LANES) {{
    int m = n - i0 < LANES ? (int)(n - i0) : LANES;
    if (m <= SINGLE_UP_TO)
      for (int l = 0; l < m; l++)
        scores[i0 + l] = single_score(images + (i0 + l) * {pixels}, scratch + BLOCK_FLOATS);
    else
      block_score(images + i0 * {pixels}, m, scores + i0, (vf *)scratch);
  }}
}}
""")
    return "".join(parts)


def write_source(plan: Plan, path: Path) -> Path:
    path = Path(path)
    atomic_write_bytes(path, source(plan).encode())
    return path
