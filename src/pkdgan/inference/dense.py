"""Small layers of a scoring graph as dense matrix products (for AMX and few-channel students).

Every layer of the scoring graph is linear between its activations, and the input size is
fixed, so a convolution (or sub-pixel transposed convolution) is exactly one matrix: column
``j`` is the layer's response to the ``j``-th unit input minus its response to zeros (the
bias). For a width-3 student such a matrix does 4-64x more multiply-adds than the
convolution, but it is one large GEMM instead of a convolution over 1-12 channels, which
OpenVINO's kernels run with per-operator overhead and mostly empty vector lanes. On this
Xeon's AMX units (bf16) the whole MNIST student as matrices scores ~1.4x faster than the
polyphase graph; in fp32 only the smallest layers gain (docs/performance.md, "Dense layers").

``limit`` bounds each matrix (entries): larger layers stay convolutions, so a teacher keeps
its convolutions and only its 1x1-code layers become matrices. Scores are equal up to float
rounding (``tests/test_deploy.py``).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from pkdgan.inference.scoring import _Linear2d, _SubPixel

# layers that are linear maps of their input (BatchNorm is already folded into them)
LINEAR = (nn.Conv2d, nn.ConvTranspose2d, _SubPixel, _Linear2d)
# pointwise layers that keep the shape
POINTWISE = (nn.LeakyReLU, nn.ReLU, nn.Tanh, nn.Identity)


class DenseLayer(nn.Module):
    """A linear layer on inputs of one shape as ``F.linear`` on the flattened input."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, out_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.float().contiguous(), requires_grad=False)
        self.bias = nn.Parameter(bias.float().contiguous(), requires_grad=False)
        self.out_shape = out_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.flatten(1), self.weight, self.bias).view(-1, *self.out_shape)


def as_matrix(layer: nn.Module, in_shape: tuple[int, ...]) -> DenseLayer:
    """``layer`` (linear) on inputs of ``in_shape`` as one matrix, computed in float64."""
    lay = copy.deepcopy(layer).double()
    n = math.prod(in_shape)
    with torch.no_grad():
        bias = lay(torch.zeros(1, *in_shape, dtype=torch.float64))
        basis = torch.eye(n, dtype=torch.float64).view(n, *in_shape)
        weight = (lay(basis) - bias).flatten(1).t()
    return DenseLayer(weight, bias.flatten(), tuple(bias.shape[1:]))


def out_shape(layer: nn.Module, in_shape: tuple[int, ...]) -> tuple[int, ...]:
    with torch.no_grad():
        return tuple(layer(torch.zeros(1, *in_shape, dtype=next(layer.parameters()).dtype)).shape[1:])


def densify(seq: nn.Module, in_shape: tuple[int, ...], limit: int) -> tuple[nn.Sequential, tuple[int, ...]]:
    """``seq`` (nested ``Sequential``s of linear and pointwise layers) with every linear layer
    whose matrix has at most ``limit`` entries replaced by its ``DenseLayer``; also the output
    shape. Any other layer is kept as it is."""
    out: list[nn.Module] = []
    shape = in_shape
    for layer in _leaves(seq):
        if isinstance(layer, POINTWISE):
            out.append(layer)
            continue
        new_shape = out_shape(layer, shape)
        if isinstance(layer, LINEAR) and math.prod(shape) * math.prod(new_shape) <= limit:
            out.append(as_matrix(layer, shape))
        else:
            out.append(layer)
        shape = new_shape
    return nn.Sequential(*out), shape


def _leaves(m: nn.Module) -> list[nn.Module]:
    if isinstance(m, nn.Sequential):
        return [leaf for child in m for leaf in _leaves(child)]
    return [m]
