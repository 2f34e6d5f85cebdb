"""Layers of K independent models evaluated at once, for batch-1 training (``multi``).

Activations are (K, C, n, H, W): model, channel, image of that model, space. Each convolution is
``unfold`` + one batched GEMM (one matrix per model), each transposed convolution one batched GEMM
+ ``fold``, and BatchNorm normalises each image alone, as a batch of 1 does for a model trained
alone. The GEMMs run in the orientation measured fastest at batch-1 shapes (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pkdgan.core.errors import UsageError


class GradSink:
    """Where the stacked layers of one network put their weight gradients.

    ``buffers`` are persistent, so a step allocates (and page-faults in) no weight-sized
    gradient tensors; ``weights`` is False while G's loss is back-propagated through D, whose
    weight gradients that pass would only discard.
    """

    def __init__(self, buffers: dict[str, torch.Tensor] | None = None) -> None:
        self.buffers = buffers if buffers is not None else {}
        self.weights = True


def _gemv_or_bmm(w: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """w @ a per model; one column per model goes through ``mv`` (MKL's batched GEMM is ~2x
    slower than matrix-vector products at these shapes, measured)."""
    if a.shape[-1] == 1:
        return torch.stack([torch.mv(w[k], a[k, :, 0]) for k in range(w.shape[0])]).unsqueeze(-1)
    return torch.bmm(w, a)


class _WeightProduct(torch.autograd.Function):
    """Per-model ``w @ a`` (``left``) or ``a @ w``, each product in its fastest orientation.

    Autograd's own bmm backward streams the weight transposed for the input gradient, 2-5x
    slower at batch-1 shapes with few columns (measured). The weight gradient is written in
    ``w``'s layout into the sink's buffer when it has one (each weight is used once per step),
    else returned.
    """

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, a: torch.Tensor, left: bool, sink: GradSink,
                name: str) -> torch.Tensor:
        ctx.save_for_backward(w, a)
        ctx.left, ctx.sink, ctx.name = left, sink, name
        return _gemv_or_bmm(w, a) if left else torch.bmm(a, w)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        w, a = ctx.saved_tensors
        ga = gw = None
        if ctx.needs_input_grad[1] and not ctx.left:
            ga = _gemv_or_bmm(w, g.transpose(1, 2)).transpose(1, 2)
        elif ctx.needs_input_grad[1]:
            # few columns: stream w row-major; many: w^T @ g gives col2im its layout uncopied
            ga = torch.bmm(w.transpose(1, 2), g) if g.shape[-1] >= 64 else (
                torch.bmm(g.transpose(1, 2), w).transpose(1, 2))
        if ctx.needs_input_grad[0] and ctx.sink.weights:
            buf = ctx.sink.buffers.get(ctx.name)
            out = None if buf is None else buf.view(w.shape)
            lhs, rhs = (g, a.transpose(1, 2)) if ctx.left else (a.transpose(1, 2), g)
            gw = torch.bmm(lhs, rhs, out=out) if out is not None else torch.bmm(lhs, rhs)
            if out is not None:
                gw = None
        return gw, ga, None, None, None


def _unfold(x: torch.Tensor, kernel: int, stride: int, padding: int) -> torch.Tensor:
    """im2col per model: (K, C, n, H, W) -> (K, C*k*k, n*L), images side by side."""
    k_models, c, n, h, w = x.shape
    if (h, w) == (kernel, kernel) and padding == 0:  # a 4x4 head: the map is the column
        return x.permute(0, 1, 3, 4, 2).reshape(k_models, c * h * w, n)
    if n == 1:
        return F.unfold(x.view(k_models, c, h, w), kernel, padding=padding, stride=stride)
    return torch.cat([F.unfold(x[:, :, j], kernel, padding=padding, stride=stride)
                      for j in range(n)], dim=2)


def stacked_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int,
                   padding: int, sink: GradSink | None = None, name: str = "") -> torch.Tensor:
    """``conv2d`` of each model's images with its own weight (K, O, C, k, k): one GEMM each."""
    k_models, _, n, h, _ = x.shape
    kernel = weight.shape[-1]
    cols = _unfold(x, kernel, stride, padding)
    out = _WeightProduct.apply(weight.reshape(k_models, weight.shape[1], -1), cols, True,
                               sink or GradSink(), name)
    if bias is not None:
        out = out + bias.unsqueeze(-1)
    size = (h + 2 * padding - kernel) // stride + 1
    return out.view(k_models, weight.shape[1], n, size, size)


def stacked_conv_transpose2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int,
                             padding: int, sink: GradSink | None = None, name: str = "") -> torch.Tensor:
    """``conv_transpose2d`` per model (weight (K, C, O, k, k)): one GEMM, then col2im (fold)."""
    k_models, c, n, h, w = x.shape
    o, kernel = weight.shape[2], weight.shape[-1]
    cols_t = _WeightProduct.apply(weight.reshape(k_models, c, -1),
                                  x.reshape(k_models, c, n * h * w).transpose(1, 2), False,
                                  sink or GradSink(), name)
    size = (h - 1) * stride - 2 * padding + kernel
    if (h, w) == (1, 1) and padding == 0:  # 1x1 code -> k x k map: the columns are the map
        out = cols_t.view(k_models, n, o, kernel, kernel).transpose(1, 2)
    else:
        cols = cols_t.view(k_models, n, h * w, o * kernel * kernel).transpose(2, 3)
        out = torch.stack([F.fold(cols[:, j], size, kernel, padding=padding, stride=stride)
                           for j in range(n)], dim=2)
    if bias is not None:
        out = out + bias.view(k_models, o, 1, 1, 1)
    return out.contiguous()


def stacked_instance_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                          eps: float) -> torch.Tensor:
    """Affine InstanceNorm per model and image (the same arithmetic as BatchNorm of a batch of 1,
    without running statistics)."""
    k_models, c, n, h, w = x.shape
    y = F.batch_norm(x.reshape(1, k_models * c * n, h * w), None, None,
                     weight.unsqueeze(-1).expand(k_models, c, n).reshape(-1),
                     bias.unsqueeze(-1).expand(k_models, c, n).reshape(-1), True, 0.0, eps)
    return y.view(k_models, c, n, h, w)


def stacked_batch_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                       buffers: dict[str, torch.Tensor], module: nn.BatchNorm2d,
                       updates: Sequence[int]) -> torch.Tensor:
    """Training-mode BatchNorm of each image alone (a batch of 1 per model and call).

    ``updates`` lists which image's statistics update the running buffers, in call order: a
    single image passes the buffers to ``F.batch_norm`` itself (bit-identical to one model);
    D's two images apply ``train.gan_step``'s four updates by the same momentum formula.
    """
    if module.momentum is None:
        raise UsageError("multi-model training needs BatchNorm with a fixed momentum")
    k_models, c, n, h, w = x.shape
    flat = x.reshape(1, k_models * c * n, h * w)
    rm, rv, count = buffers["running_mean"], buffers["running_var"], buffers["num_batches_tracked"]
    if n == 1 and tuple(updates) == (0,):
        y = F.batch_norm(flat, rm.view(-1), rv.view(-1), weight.reshape(-1), bias.reshape(-1),
                         True, module.momentum, module.eps)
    else:
        y = stacked_instance_norm(x, weight, bias, module.eps).reshape(flat.shape)
        with torch.no_grad():
            var, mean = torch.var_mean(x.detach().reshape(k_models, c, n, h * w), dim=3, correction=1)
            for j in updates:
                rm.mul_(1 - module.momentum).add_(mean[:, :, j], alpha=module.momentum)
                rv.mul_(1 - module.momentum).add_(var[:, :, j], alpha=module.momentum)
    count.add_(len(updates))
    return y.view(k_models, c, n, h, w)
