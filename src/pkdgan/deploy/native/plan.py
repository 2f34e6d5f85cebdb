"""A generator's scoring path as a ``form.Plan`` (torch side): BatchNorm folded, every
transposed convolution split into its output phases, so each layer is plain multiply-adds of
padded inputs (what the generated C kernels compute); a per-image normalisation (norm instance
or batch-per-image) stays a step of its layer (``form.Norm``)."""

from __future__ import annotations

import dataclasses

import numpy as np
from torch import nn

from pkdgan.core.errors import UsageError
from pkdgan.deploy.native.form import MAX_CHANNELS, Buffer, Layer, Norm, Phase, Plan
from pkdgan.evaluation.score_kinds import KINDS, STD_FLOOR, Stats, check_kind, require_stats
from pkdgan.inference.scoring import fold_bn
from pkdgan.models.nets import is_per_image


@dataclasses.dataclass
class _Spec:
    """A layer before padding is known: the module, its folded weights and its activation."""

    conv: nn.Conv2d | nn.ConvTranspose2d
    weight: np.ndarray
    bias: np.ndarray
    activation: str
    slope: float
    src: int
    dst: int
    norm: Norm | None = None
    need_pad: int = 0


Unit = tuple[nn.Module, nn.BatchNorm2d | None, Norm | None, nn.Module | None]


def _units(seq: list[nn.Module]) -> list[Unit]:
    """(convolution, its BatchNorm (folded) or None, its per-image norm or None, its activation
    or None) in order."""
    out = []
    i = 0
    while i < len(seq):
        m = seq[i]
        if not isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            raise UsageError(f"the native form cannot start a layer with {type(m).__name__}")
        i += 1
        norm = _per_image(seq[i]) if i < len(seq) and is_per_image(seq[i]) else None
        i += norm is not None
        bn = seq[i] if norm is None and i < len(seq) and isinstance(seq[i], nn.BatchNorm2d) else None
        i += bn is not None
        act = seq[i] if i < len(seq) and isinstance(seq[i], (nn.LeakyReLU, nn.ReLU, nn.Tanh)) else None
        i += act is not None
        out.append((m, bn, norm, act))
    return out


def _per_image(m: nn.Module) -> Norm:
    """Affine InstanceNorm or ``PerImageBatchNorm2d`` (eval: the same) as a ``Norm``."""
    c = m.num_features
    weight = m.weight.detach().double().numpy() if m.weight is not None else np.ones(c)
    bias = m.bias.detach().double().numpy() if m.bias is not None else np.zeros(c)
    return Norm(weight, bias, float(m.eps))


def _activation(act: nn.Module | None) -> tuple[str, float]:
    if act is None:
        return "none", 0.0
    if isinstance(act, nn.LeakyReLU):
        return "leaky", float(act.negative_slope)
    return ("relu", 0.0) if isinstance(act, nn.ReLU) else ("tanh", 0.0)


def _out_size(conv: nn.Module, size: int) -> int:
    k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    if isinstance(conv, nn.Conv2d):
        return (size + 2 * p - k) // s + 1
    return (size - 1) * s - 2 * p + k + conv.output_padding[0]


def _square(conv: nn.Module) -> None:
    for name in ("kernel_size", "stride", "padding"):
        v = getattr(conv, name)
        if v[0] != v[1]:
            raise UsageError(f"the native form needs square convolutions, got {name}={v}")
    if getattr(conv, "groups", 1) != 1 or conv.dilation != (1, 1):
        raise UsageError("the native form needs ungrouped, undilated convolutions")


def _transposed_taps(conv: nn.ConvTranspose2d, size: int) -> tuple[int, list[tuple[int, list[int]]]]:
    """(rows per phase, [(phase r, [(kernel index, input offset d)...])]) of a transposed conv:
    output row s*a + r reads input row a + d through kernel row k = r + p - s*d."""
    k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    out = _out_size(conv, size)
    if out % s:
        raise UsageError("the native form needs transposed convolutions whose output size is a "
                         "multiple of their stride")
    phases = []
    for r in range(s):
        taps = [(ky, (r + p - ky) // s) for ky in range(k) if (r + p - ky) % s == 0]
        phases.append((r, taps))
    return out // s, phases


def native_plan(generator: nn.Module, image: tuple[int, int, int], score: str = "latent",
                stats: Stats | None = None) -> Plan:
    """The ``nets.Generator``'s E1 -> D -> E2 -> ``score`` as a plan (eval mode: BatchNorm's
    running statistics; per-image norms per image). Raises ValueError for a generator outside the
    form (a feature map of more than ``form.MAX_CHANNELS`` channels), UsageError for modules it
    does not know."""
    check_kind(score, KINDS)
    require_stats(score, stats)
    bounded = bool(getattr(generator, "bounded", False))
    shapes: list[tuple[int, int]] = [(image[0], image[1])]  # (channels, size) per buffer
    specs: list[_Spec] = []
    heads: dict[str, int] = {}

    def add(units: list, src: int, head: str | None = None) -> int:
        for n, (conv, bn, norm, act) in enumerate(units):
            _square(conv)
            channels, size = shapes[src]
            out_dim = 0 if isinstance(conv, nn.Conv2d) else 1
            w, b = fold_bn(conv.weight, conv.bias, bn, out_dim)
            name, slope = _activation(act)
            last = n == len(units) - 1
            if head and last and bounded:
                if act is not None:
                    raise UsageError("a bounded code's head must have no activation of its own")
                name = "tanh"
            cout, out_size = w.shape[out_dim], _out_size(conv, size)
            # feature maps only: a code (1 x 1) of any length is one matrix-vector product
            widest = max(channels if size > 1 else 0, cout if out_size > 1 else 0)
            if widest > MAX_CHANNELS:
                raise ValueError(f"a {widest}-channel feature map is past the native form's "
                                 f"limit of {MAX_CHANNELS}")
            shapes.append((cout, out_size))
            dst = len(shapes) - 1
            specs.append(_Spec(conv, w.double().numpy(), b.double().numpy(), name, slope, src, dst, norm))
            src = dst
        if head:
            heads[head] = src
        return src

    enc1, dec, enc2 = generator.encoder1, generator.decoder.net, generator.encoder2
    z = add(_units([*enc1.features, enc1.head]), 0, "z")
    x_hat = add(_units(list(dec)), z)
    add(_units([*enc2.features, enc2.head]), x_hat, "z_hat")

    pads = [0] * len(shapes)
    for sp in specs:
        size = shapes[sp.src][1]
        if isinstance(sp.conv, nn.Conv2d):
            need = sp.conv.padding[0]
        elif size == 1:
            need = 0
        else:
            rows, phases = _transposed_taps(sp.conv, size)
            need = max(max(-d, rows - 1 + d - (size - 1)) for _, taps in phases for _, d in taps)
        pads[sp.src] = max(pads[sp.src], need)
    buffers = tuple(Buffer(c, s, s, pads[i]) for i, (c, s) in enumerate(shapes))
    layers = tuple(_layer(sp, buffers[sp.src]) for sp in specs)
    # the floor is applied here, where score_kinds is importable, so the generated C needs no torch
    floored = {k: {"mean": v["mean"], "std": max(v["std"], STD_FLOOR)} for k, v in (stats or {}).items()}
    return Plan(buffers, layers, heads["z"], heads["z_hat"], x_hat, score, floored)


def _layer(sp: _Spec, src: Buffer) -> Layer:
    conv, w, pad = sp.conv, sp.weight, src.pad
    if isinstance(conv, nn.Conv2d):
        k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        out = _out_size(conv, src.height)
        taps = tuple((ky - p + pad, kx - p + pad) for ky in range(k) for kx in range(k))
        weight = w.transpose(1, 2, 3, 0).reshape(w.shape[1], k * k, w.shape[0])  # (ci, tap, co)
        phases = (Phase(0, 0, taps, weight),)
        return Layer(sp.src, sp.dst, out, out, s, 1, phases, sp.bias, sp.activation, sp.slope, sp.norm)
    k = conv.kernel_size[0]
    if src.height == 1:  # a code to a k x k map: every output position is its own phase
        phases = tuple(Phase(ky, kx, ((pad, pad),), w[:, :, ky, kx][:, None, :])
                       for ky in range(k) for kx in range(k))
        return Layer(sp.src, sp.dst, 1, 1, 1, 1, phases, sp.bias, sp.activation, sp.slope, sp.norm)
    rows, per_row = _transposed_taps(conv, src.height)
    phases = []
    for r, taps_r in per_row:
        for c, taps_c in per_row:
            taps = tuple((dy + pad, dx + pad) for _, dy in taps_r for _, dx in taps_c)
            weight = np.stack([w[:, :, ky, kx] for ky, _ in taps_r for kx, _ in taps_c], axis=1)
            phases.append(Phase(r, c, taps, weight))
    s = conv.stride[0]
    return Layer(sp.src, sp.dst, rows, rows, 1, s, tuple(phases), sp.bias, sp.activation, sp.slope,
                 sp.norm)
