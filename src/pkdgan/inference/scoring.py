"""Fast batched anomaly scoring (teacher or student) with PyTorch.

``edegan.score_both`` runs the training modules in eval mode. Scoring needs less: no autograd,
BatchNorm's running statistics are constants (folded into the preceding convolution; a
per-image normalisation stays a layer, as affine InstanceNorm), and
PyTorch's CPU transposed convolution is slow (its im2col path dominated the student's time,
measured), so each stride-2 transposed convolution becomes the equivalent sub-pixel form — one
3x3 convolution producing the four output phases, then ``pixel_shuffle`` — and a transposed
convolution of the 1x1 code is a matrix product. Results equal ``score_both`` up to float
rounding (``tests/test_scoring.py``).

The exported runtimes (ONNX Runtime, OpenVINO, the native kernels) are ``pkdgan.deploy``'s
(``deploy.scores.fast_scores`` picks any of them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pkdgan.core.errors import UsageError
from pkdgan.models.edegan import cat_scores, score_batches
from pkdgan.models.nets import frozen_instance_norm, is_per_image


def fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d | None,
            out_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(conv(x))`` in eval mode; ``out_dim`` is the weight's output axis."""
    out_channels = weight.shape[out_dim]
    b = bias.detach().clone() if bias is not None else weight.new_zeros(out_channels)
    if bn is None:
        return weight.detach().clone(), b
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    shape = [1] * weight.dim()
    shape[out_dim] = out_channels
    return weight.detach() * scale.view(shape), (b - bn.running_mean) * scale + bn.bias.detach()


class Linear2d(nn.Module):
    """A transposed convolution of a 1x1 map (the decoder's first layer) as one matrix product."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        c, o, kh, kw = weight.shape
        self.shape = (o, kh, kw)
        self.weight = nn.Parameter(weight.reshape(c, -1).t().contiguous(), requires_grad=False)
        self.bias = nn.Parameter(bias.repeat_interleave(kh * kw), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.flatten(1), self.weight, self.bias).view(-1, *self.shape)


class SubPixel(nn.Module):
    """ConvTranspose2d(kernel 4, stride 2, padding 1) as a 3x3 convolution to 4x channels, then
    ``pixel_shuffle(2)``: output phase (r, t) of channel o reads input rows/columns {m-1, m} or
    {m, m+1}, i.e. taps of the transposed kernel at (3, 1) or (2, 0)."""

    # for output phase r and 3x3 tap a: the transposed kernel's row, or -1 (zero)
    TAPS = ((3, 1, -1), (-1, 2, 0))

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        c, o = weight.shape[:2]
        k3 = weight.new_zeros(o, 2, 2, c, 3, 3)
        for r in range(2):
            for t in range(2):
                for a, ky in enumerate(self.TAPS[r]):
                    for b, kx in enumerate(self.TAPS[t]):
                        if ky >= 0 and kx >= 0:
                            k3[:, r, t, :, a, b] = weight[:, :, ky, kx].t()
        self.weight = nn.Parameter(k3.reshape(o * 4, c, 3, 3), requires_grad=False)
        self.bias = nn.Parameter(bias.repeat_interleave(4), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(F.conv2d(x, self.weight, self.bias, padding=1), 2)


def _fused_layer(conv: nn.Module, bn: nn.BatchNorm2d | None, first_of_decoder: bool) -> nn.Module:
    if isinstance(conv, nn.Conv2d):
        w, b = fold_bn(conv.weight, conv.bias, bn, 0)
        out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
        out.weight, out.bias = nn.Parameter(w, requires_grad=False), nn.Parameter(b, requires_grad=False)
        return out
    w, b = fold_bn(conv.weight, conv.bias, bn, 1)
    stride, pad, k = conv.stride, conv.padding, conv.kernel_size
    if first_of_decoder and stride == (1, 1) and pad == (0, 0):
        return Linear2d(w, b)
    if stride == (2, 2) and pad == (1, 1) and k == (4, 4) and conv.output_padding == (0, 0):
        return SubPixel(w, b)
    out = nn.ConvTranspose2d(conv.in_channels, conv.out_channels, k, stride, pad)
    out.weight, out.bias = nn.Parameter(w, requires_grad=False), nn.Parameter(b, requires_grad=False)
    return out


def _fuse_sequential(seq: nn.Sequential, decoder: bool = False) -> nn.Sequential:
    layers = list(seq)
    out: list[nn.Module] = []
    i = 0
    while i < len(layers):
        m = layers[i]
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            per_image = nxt is not None and is_per_image(nxt)
            bn = nxt if isinstance(nxt, nn.BatchNorm2d) and not per_image else None
            out.append(_fused_layer(m, bn, decoder and i == 0))
            if per_image:  # each image's own statistics: nothing to fold, the layer stays
                out.append(frozen_instance_norm(nxt))
            i += 2 if bn is not None or per_image else 1
        elif isinstance(m, nn.BatchNorm2d):
            raise UsageError("a BatchNorm without a preceding convolution cannot be folded")
        else:
            out.append(m)
            i += 1
    return nn.Sequential(*out)


class InferenceGenerator(nn.Module):
    """Eval-only copy of a ``nets.Generator`` (E1 -> D -> E2) with BatchNorm folded away."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.encoder1 = self._encoder(generator.encoder1)
        self.decoder = _fuse_sequential(generator.decoder.net, decoder=True)
        self.encoder2 = self._encoder(generator.encoder2)
        self.bounded = generator.bounded
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def _encoder(enc: nn.Module) -> nn.Sequential:
        return nn.Sequential(_fuse_sequential(enc.features), _fuse_sequential(nn.Sequential(enc.head)))

    def encode(self, enc: nn.Module, x: torch.Tensor) -> torch.Tensor:
        z = enc(x).flatten(1)
        return torch.tanh(z) if self.bounded else z

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.encode(self.encoder1, x)
        x_hat = self.decoder(z[:, :, None, None])
        return z, x_hat, self.encode(self.encoder2, x_hat)


class TorchScorer:
    """Batched PyTorch scoring: no autograd, BatchNorm folded, optional channels-last layout."""

    def __init__(self, generator: nn.Module, batch_size: int = 256, channels_last: bool = False) -> None:
        if batch_size < 1:
            raise UsageError(f"batch size must be >= 1, got {batch_size}")
        self.device = next(generator.parameters()).device
        net = InferenceGenerator(generator)
        self.format = torch.channels_last if channels_last else torch.contiguous_format
        self.net = net.to(self.device, memory_format=self.format)
        self.batch_size = batch_size

    @torch.inference_mode()
    def scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(latent, reconstruction) scores, as ``edegan.score_both`` (the same batched scorer)."""
        return cat_scores(score_batches(self.net, x, self.batch_size, self.device, self.format))
