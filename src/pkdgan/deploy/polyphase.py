"""The scoring graph in polyphase form: the full-resolution images are never materialised.

``scoring.InferenceGenerator`` already writes each stride-2 transposed convolution as one 3x3
convolution producing the four output phases, then ``pixel_shuffle``. For the decoder's *last*
layer that shuffle only feeds E2's first convolution (4x4, stride 2, padding 1) and the
reconstruction error, and both can read the four phases directly:

- a 4x4 stride-2 convolution of ``pixel_shuffle(P)`` equals a 3x3 stride-1 convolution of ``P``
  (kernel row ``ky`` reads phase ``(1, 0, 1, 0)[ky]`` of block offset ``(-1, 0, 0, +1)[ky]``);
- E1's first convolution likewise reads ``pixel_unshuffle(x)``, and the reconstruction error
  is the mean of ``(pixel_unshuffle(x) - P)^2`` (the same elements, permuted).

So the largest tensors of the graph (C x S x S) and the last depth-to-space disappear, and the
two first convolutions become stride-1 convolutions on 4x the channels, which OpenVINO's CPU
kernels run better (measured ~15 % faster for the MNIST student, fp32 and bf16; ONNX Runtime
is slower with it, so it keeps the plain graph). Equal to ``graph.ScoreGraph`` up to float
rounding (``tests/test_deploy.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pkdgan.deploy.dense import densify
from pkdgan.evaluation.score_kinds import KINDS, Stats, check_kind, kind_scores, require_stats
from pkdgan.inference.scoring import InferenceGenerator, SubPixel
from pkdgan.models.losses import latent_score

# kernel row/column of a 4x4 stride-2 padding-1 convolution -> (input phase, 3x3 tap)
_PHASE_TAP = {0: (1, 0), 1: (0, 1), 2: (1, 1), 3: (0, 2)}


def phase_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """Conv2d(kernel 4, stride 2, padding 1) of x as a 3x3 stride-1 convolution of
    ``pixel_unshuffle(x, 2)`` (channel ``c * 4 + r * 2 + t`` = phase (r, t) of channel c)."""
    w = conv.weight.detach()
    out_c, in_c = w.shape[:2]
    w3 = w.new_zeros(out_c, in_c, 2, 2, 3, 3)
    for ky, (r, a) in _PHASE_TAP.items():
        for kx, (t, b) in _PHASE_TAP.items():
            w3[:, :, r, t, a, b] = w[:, :, ky, kx]
    new = nn.Conv2d(in_c * 4, out_c, 3, 1, 1)
    new.weight = nn.Parameter(w3.reshape(out_c, in_c * 4, 3, 3), requires_grad=False)
    bias = conv.bias.detach().clone() if conv.bias is not None else w.new_zeros(out_c)
    new.bias = nn.Parameter(bias, requires_grad=False)
    return new


def supported(net: InferenceGenerator) -> bool:
    """Whether ``net`` has the layers the rewrite needs (every DCGAN-style generator here does)."""
    dec = list(net.decoder)
    if len(dec) < 2 or not isinstance(dec[-2], SubPixel) or not isinstance(dec[-1], nn.Tanh):
        return False
    for enc in (net.encoder1, net.encoder2):
        c = enc[0][0]
        if not (isinstance(c, nn.Conv2d) and c.kernel_size == (4, 4) and c.stride == (2, 2)
                and c.padding == (1, 1)):
            return False
    return True


class PolyphaseScoreGraph(nn.Module):
    """``graph.ScoreGraph(InferenceGenerator(g))`` with the last shuffle folded away."""

    def __init__(self, net: InferenceGenerator, score: str = "latent", stats: Stats | None = None) -> None:
        super().__init__()
        check_kind(score, KINDS)
        require_stats(score, stats)
        if not supported(net):
            raise ValueError("this generator's layers do not allow the polyphase rewrite")
        self.bounded = net.bounded
        self.e1 = self._encoder(net.encoder1)
        self.e2 = self._encoder(net.encoder2)
        dec = list(net.decoder)
        self.decoder_head = nn.Sequential(*dec[:-2])
        last: SubPixel = dec[-2]
        self.decoder_last = nn.Conv2d(last.weight.shape[1], last.weight.shape[0], 3, 1, 1)
        self.decoder_last.weight, self.decoder_last.bias = last.weight, last.bias
        self.score = score
        self.stats: Stats = stats or {}

    def densified(self, image_shape: tuple[int, int, int], limit: int) -> PolyphaseScoreGraph:
        """This graph, changed in place: every layer whose matrix has at most ``limit`` entries
        as one matrix product (``pkdgan.deploy.dense``); the same function, in the form AMX
        runs fastest."""
        c, s, _ = image_shape
        self.e1, code = densify(self.e1, (c * 4, s // 2, s // 2), limit)
        self.decoder_head, h = densify(self.decoder_head, (code[0], 1, 1), limit)
        self.decoder_last, phases = densify(self.decoder_last, h, limit)
        self.e2, _ = densify(self.e2, phases, limit)
        return self

    @staticmethod
    def _encoder(enc: nn.Sequential) -> nn.Sequential:
        features = list(enc[0])
        return nn.Sequential(phase_conv(features[0]), *features[1:], enc[1])

    def _code(self, enc: nn.Module, x: torch.Tensor) -> torch.Tensor:
        z = enc(x).flatten(1)
        return torch.tanh(z) if self.bounded else z

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        xp = F.pixel_unshuffle(images, 2)
        z = self._code(self.e1, xp)
        h = self.decoder_head(z[:, :, None, None])
        phases = torch.tanh(self.decoder_last(h))
        z_hat = self._code(self.e2, phases)
        lat = latent_score(z, z_hat)
        rec = (xp - phases).pow(2).flatten(1).mean(1)
        return kind_scores(lat, rec, self.score, self.stats)
