"""Scoring graphs of small students as matrix products (for AMX and few-channel layers).

Every layer of the scoring graph is linear between its activations and its input size is
fixed, so a convolution (or sub-pixel transposed convolution) is exactly one matrix: column
``j`` is the layer's response to the ``j``-th unit input minus its response to zeros (the
bias). For a width-3 student such a matrix does 4-64x more multiply-adds than the convolution,
but it is one large GEMM instead of a convolution over 1-12 channels, which OpenVINO's kernels
run with per-operator overhead and mostly empty vector lanes. Two forms:

- ``densify``: a layer whose matrix has at most ``limit`` entries becomes one ``F.linear``;
  the others stay convolutions (a teacher keeps its convolutions, its 1x1-code layers become
  matrices).
- ``MatrixScoreGraph``: the whole graph as matrices on flattened ``(N, features)``
  activations. A layer that only mixes nearby rows is cut into **row bands**: the outputs of
  ``R`` rows need a window of ``T`` input rows, and every band of a convolution has the same
  matrix, so the layer is one gather (the windows, duplicated rows included) and one GEMM of
  ``N * bands`` rows by a ``K x M`` matrix: ~3x fewer multiply-adds than the whole matrix for
  the MNIST student's 32x32 layers, still one GEMM. A padding row reads a feature that is
  always zero (an extra zero output of the layer before, or a zero appended to the image).
  Each band's output order is its own, so every layer keeps a permutation of the canonical
  ``(C, H, W)`` order and the next layer reads through it.

Scores equal ``graph.ScoreGraph``'s up to float rounding (``tests/test_deploy.py``); the
measured speeds are in docs/performance.md ("Matrix forms").
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pkdgan.evaluation.score_kinds import KINDS, Stats, check_kind, kind_scores, require_stats
from pkdgan.inference.scoring import InferenceGenerator, Linear2d, SubPixel

# layers that are linear maps of their input (BatchNorm is already folded into them)
LINEAR = (nn.Conv2d, nn.ConvTranspose2d, SubPixel, Linear2d)
# pointwise layers that keep the shape; each maps 0 to 0 (what padding features rely on)
POINTWISE = (nn.LeakyReLU, nn.ReLU, nn.Tanh, nn.Identity)
# a graph is put in matrix form only if no layer's matrix is larger (float64 while building)
MATRIX_LIMIT = 1 << 22
# cost of gathering one input feature into a band, in multiply-adds, per precision: chosen
# among 8, 32, 128 and "never band" by benchmarks/matrix_forms.py (MNIST student, images/s at
# batch 256, quiet: fp32 94k / 95k / 76k / 40k, bf16 205k / 210k / 241k / 199k; the
# Fashion-MNIST student agrees); a profile agreed too (a gather of 786k bf16 elements took as
# long as a 38M-MAC AMX GEMM; in fp32 ~20 MACs per element)
GATHER_COST = {"fp32": 32, "bf16": 128}
# row bands are used only when they cost at most this share of the whole matrix
BAND_SHARE = 0.7


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
    weight, bias = _matrix(layer, in_shape)
    return DenseLayer(weight, bias.flatten(), tuple(bias.shape[1:]))


def _matrix(layer: nn.Module, in_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 matrix ``(out, in)`` of a linear layer on inputs of ``in_shape``, and its bias
    as one output ``(1, *out_shape)``: column j is the response to unit input j minus the bias."""
    lay = copy.deepcopy(layer).double()
    n = math.prod(in_shape)
    columns = []
    with torch.no_grad():
        bias = lay(torch.zeros(1, *in_shape, dtype=torch.float64))
        for start in range(0, n, 1024):  # unit inputs in blocks: an n x n identity can be GBs
            basis = torch.zeros(min(1024, n - start), n, dtype=torch.float64)
            basis[torch.arange(len(basis)), torch.arange(start, start + len(basis))] = 1
            columns.append((lay(basis.view(-1, *in_shape)) - bias).flatten(1))
    return torch.cat(columns).t(), bias


def out_shape(layer: nn.Module, in_shape: tuple[int, ...]) -> tuple[int, ...]:
    with torch.no_grad():
        dtype = next(layer.parameters(), torch.zeros(())).dtype
        return tuple(layer(torch.zeros(1, *in_shape, dtype=dtype)).shape[1:])


def densify(seq: nn.Module, in_shape: tuple[int, ...], limit: int) -> tuple[nn.Sequential, tuple[int, ...]]:
    """``seq`` (nested ``Sequential``s of linear and pointwise layers) with every linear layer
    whose matrix has at most ``limit`` entries replaced by its ``DenseLayer``; also the output
    shape. Any other layer is kept as it is."""
    out: list[nn.Module] = []
    shape = in_shape
    for layer in leaves(seq):
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


def leaves(m: nn.Module) -> list[nn.Module]:
    if isinstance(m, nn.Sequential):
        return [leaf for child in m for leaf in leaves(child)]
    return [m]


# --- the whole graph as matrices, with row bands -------------------------------------------


@dataclass
class LinearMatrix:
    """One linear layer as a float64 matrix on the canonical (C, H, W) flattening, and the
    pointwise layer after it (if any)."""

    weight: torch.Tensor
    bias: torch.Tensor
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    act: nn.Module | None = None


@dataclass
class _Bands:
    rows: int  # output rows per band
    count: int
    start: int  # first input row of band 0's window (may be negative: padding)
    step: int  # input rows between windows
    window: int  # input rows per window


def _linears(seq: nn.Module, in_shape: tuple[int, ...]) -> tuple[list[LinearMatrix], tuple[int, ...]] | None:
    """The layers of ``seq`` as matrices, or None if one is not linear/pointwise or too large."""
    out: list[LinearMatrix] = []
    shape = in_shape
    for layer in leaves(seq):
        if isinstance(layer, POINTWISE):
            if not out or out[-1].act is not None:
                return None
            out[-1].act = copy.deepcopy(layer)
            continue
        if not isinstance(layer, LINEAR):
            return None
        new_shape = out_shape(layer, shape)
        if len(new_shape) != 3 or math.prod(shape) * math.prod(new_shape) > MATRIX_LIMIT:
            return None
        weight, bias = _matrix(layer, shape)  # kept in float64 until MatrixLayer rounds it once
        out.append(LinearMatrix(weight, bias.flatten(), shape, new_shape))  # type: ignore[arg-type]
        shape = new_shape
    return out, shape


def _bands(lin: LinearMatrix, rows: int) -> _Bands | None:
    """Row bands of ``rows`` output rows, if their windows are equally spaced."""
    (_, h, _), (co, ho, wo) = lin.in_shape, lin.out_shape
    if ho % rows or (h * rows) % ho:
        return None
    count, step = ho // rows, h * rows // ho
    w = lin.weight.view(co, ho, wo, *lin.in_shape).abs()
    lo, hi = [], []
    for b in range(count):
        used = torch.nonzero(w[:, b * rows:(b + 1) * rows].sum((0, 1, 2, 3, 5))).flatten()
        if len(used) == 0:
            return None
        lo.append(int(used.min()) - b * step)
        hi.append(int(used.max()) - b * step)
    start = min(lo)
    return _Bands(rows, count, start, step, max(hi) - start + 1)


def _band_cost(lin: LinearMatrix, b: _Bands, gather_cost: float) -> float:
    c, _, w = lin.in_shape
    co, _, wo = lin.out_shape
    k, m = c * b.window * w, co * b.rows * wo
    return b.count * (k * m + gather_cost * k)


def plan(lin: LinearMatrix, gather_cost: float) -> _Bands | None:
    """The cheapest row bands of one shared matrix for a layer, or None when none costs at
    most ``BAND_SHARE`` of the whole matrix."""
    options = [b for r in range(1, lin.out_shape[1]) if (b := _bands(lin, r)) is not None]
    options.sort(key=lambda b: _band_cost(lin, b, gather_cost))
    for b in options:
        if _band_cost(lin, b, gather_cost) > BAND_SHARE * lin.weight.numel():
            return None
        if _uniform(lin, b):
            return b
    return None


class MatrixLayer(nn.Module):
    """``act(x[:, index] reshaped to (N * bands, K) @ weight.T + bias)``, flattened per image.

    Without ``index`` it is one dense layer over the input's features (in their order)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, index: torch.Tensor | None,
                 bands: int, act: nn.Module | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.float().contiguous(), requires_grad=False)
        self.bias = nn.Parameter(bias.float().contiguous(), requires_grad=False)
        self.index: torch.Tensor | None
        self.register_buffer("index", index)
        self.bands = bands
        self.act = act.float() if act is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if self.index is not None:
            x = x.index_select(1, self.index).reshape(n * self.bands, -1)
        y = F.linear(x, self.weight, self.bias)
        if self.act is not None:
            y = self.act(y)
        return y.reshape(n, -1)


def _reads_padding(lin: LinearMatrix, b: _Bands | None) -> bool:
    return b is not None and (b.start < 0 or b.start + (b.count - 1) * b.step + b.window > lin.in_shape[1])


def _positions(order: torch.Tensor, features: int) -> torch.Tensor:
    """Where canonical features 0..features-1 sit in an activation laid out as ``order``
    (``order[p]`` = canonical index at position ``p``, -1 for a feature that is always 0)."""
    position = torch.full((features,), -1, dtype=torch.long)
    valid = order >= 0
    position[order[valid]] = torch.nonzero(valid).flatten()
    if (position < 0).any():
        raise AssertionError("a feature is missing from the activation")
    return position


class _Builder:
    """Turns a chain of ``LinearMatrix``s into ``MatrixLayer``s, tracking each activation's order.

    Plans come first, so a layer whose bands read padding finds a zero feature ready: the
    layer before it gets an extra output (a zero row; every activation maps 0 to 0), or the
    image an appended zero."""

    def __init__(self, chain: list[LinearMatrix], gather_cost: float) -> None:
        self.plans = [plan(lin, gather_cost) for lin in chain]
        needs = [_reads_padding(lin, b) for lin, b in zip(chain, self.plans, strict=True)]
        self.zero_after = needs[1:] + [False]
        self.pad_input = needs[0]
        self.order = torch.arange(math.prod(chain[0].in_shape))
        if self.pad_input:
            self.order = torch.cat([self.order, torch.tensor([-1])])
        self.step = 0

    def add(self, lin: LinearMatrix) -> MatrixLayer:
        bands, zero_out = self.plans[self.step], self.zero_after[self.step]
        self.step += 1
        position = _positions(self.order, math.prod(lin.in_shape))
        if bands is None:
            valid = self.order >= 0
            weight = lin.weight.new_zeros(lin.weight.shape[0], len(self.order))
            weight[:, valid] = lin.weight[:, self.order[valid]]
            bias, index, count = lin.bias, None, 1
            order = torch.arange(lin.weight.shape[0])
        else:
            weight, bias, index, order = self._banded(lin, bands, position)
            count = bands.count
        if zero_out:
            weight = torch.cat([weight, weight.new_zeros(1, weight.shape[1])])
            bias = torch.cat([bias, bias.new_zeros(1)])
            blocks = order.view(count, -1)
            order = torch.cat([blocks, blocks.new_full((count, 1), -1)], 1).flatten()
        self.order = order
        return MatrixLayer(weight, bias, index, count, lin.act)

    def _banded(self, lin: LinearMatrix, b: _Bands, position: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        zeros = torch.nonzero(self.order < 0).flatten()
        zero = int(zeros[0]) if len(zeros) else -1
        canon, inside, outs, _ = _windows(lin, b)
        index = [torch.where(m, position[c], torch.full_like(c, zero))
                 for c, m in zip(canon, inside, strict=True)]
        if zero < 0 and not all(m.all() for m in inside):
            raise AssertionError("planned padding has no zero feature")
        full = next(k for k, m in enumerate(inside) if m.all())
        weight = lin.weight[outs[full]][:, canon[full]]
        return weight, lin.bias[outs[full]], torch.cat(index), torch.cat(outs)


def _windows(lin: LinearMatrix, b: _Bands) -> tuple[list[torch.Tensor], ...]:
    """Per band: canonical input features of its window, which lie inside the image, its
    canonical outputs, and its matrix."""
    (c, h, w), (co, ho, wo) = lin.in_shape, lin.out_shape
    t = torch.arange(b.window)[None, :, None]
    chans, cols = torch.arange(c)[:, None, None], torch.arange(w)[None, None, :]
    canon, inside, outs, matrices = [], [], [], []
    for k in range(b.count):
        row = b.start + k * b.step + t
        inside.append(((row >= 0) & (row < h)).expand(c, b.window, w).flatten())
        canon.append((chans * h * w + row.clamp(0, h - 1) * w + cols).flatten())
        outs.append((torch.arange(co)[:, None, None] * ho * wo
                     + (k * b.rows + torch.arange(b.rows))[None, :, None] * wo
                     + torch.arange(wo)[None, None, :]).flatten())
        matrices.append(lin.weight[outs[-1]][:, canon[-1]])
    return canon, inside, outs, matrices


def _uniform(lin: LinearMatrix, b: _Bands) -> bool:
    """Whether every band has one matrix and bias (a convolution's bands differ only where a
    window reaches past the image, read as zeros), so one GEMM serves them all."""
    _, inside, outs, matrices = _windows(lin, b)
    full = next((k for k, m in enumerate(inside) if m.all()), None)
    if full is None:
        return False
    ref = matrices[full]
    scale = float(ref.abs().max()) or 1.0
    bias = lin.bias[outs[full]]
    return all(float((mat - ref)[:, m].abs().max()) <= 1e-9 * scale and torch.equal(lin.bias[o], bias)
               for mat, m, o in zip(matrices, inside, outs, strict=True))


def matrix_form(net: InferenceGenerator, image_shape: tuple[int, int, int]
                ) -> tuple[list[list[LinearMatrix]], tuple[int, ...]] | None:
    """E1, D and E2 of ``net`` as matrices, or None when a layer does not allow it."""
    e1 = _linears(net.encoder1, image_shape)
    if e1 is None:
        return None
    d = _linears(net.decoder, (e1[1][0], 1, 1))
    if d is None or tuple(d[1]) != tuple(image_shape):
        return None
    e2 = _linears(net.encoder2, d[1])
    if e2 is None:
        return None
    return [e1[0], d[0], e2[0]], e1[1]


class MatrixScoreGraph(nn.Module):
    """``graph.ScoreGraph(net)`` with every layer a (banded) matrix product."""

    def __init__(self, net: InferenceGenerator, image_shape: tuple[int, int, int],
                 score: str = "latent", stats: Stats | None = None,
                 gather_cost: float = GATHER_COST["fp32"]) -> None:
        super().__init__()
        check_kind(score, KINDS)
        require_stats(score, stats)
        form = matrix_form(net, image_shape)
        if form is None:
            raise ValueError("this generator's layers do not allow the matrix form")
        (e1, d, e2), code = form
        self.bounded = net.bounded
        self.score = score
        self.stats: Stats = stats or {}
        build = _Builder(e1 + d + e2, gather_cost)
        self.pad_input = build.pad_input
        self.z_index: torch.Tensor | None
        self.x_index: torch.Tensor | None
        self.zh_index: torch.Tensor | None
        self.e1 = nn.ModuleList(build.add(lin) for lin in e1)
        self.register_buffer("z_index", _reorder(build.order, math.prod(code)))
        self.d = nn.ModuleList(build.add(lin) for lin in d)
        self.register_buffer("x_index", _reorder(build.order, math.prod(image_shape)))
        self.e2 = nn.ModuleList(build.add(lin) for lin in e2)
        self.register_buffer("zh_index", _reorder(build.order, math.prod(code)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.flatten(1)
        h = F.pad(x, (0, 1)) if self.pad_input else x
        for layer in self.e1:
            h = layer(h)
        if self.bounded:  # the decoder reads the bounded code, as in InferenceGenerator (tanh(0) = 0)
            h = torch.tanh(h)
        z = _select(h, self.z_index)
        for layer in self.d:
            h = layer(h)
        x_hat = h
        for layer in self.e2:
            h = layer(h)
        z_hat = _select(h, self.zh_index)
        if self.bounded:
            z_hat = torch.tanh(z_hat)
        lat = (z - z_hat).pow(2).mean(1)
        rec = lat if self.score == "latent" else (x - _select(x_hat, self.x_index)).pow(2).mean(1)
        return kind_scores(lat, rec, self.score, self.stats)


def _reorder(order: torch.Tensor, features: int) -> torch.Tensor | None:
    """The gather that puts an activation laid out as ``order`` in canonical order (None: it is)."""
    position = _positions(order, features)
    return None if len(order) == features and torch.equal(position, torch.arange(features)) else position


def _select(h: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    return h if index is None else h.index_select(1, index)
