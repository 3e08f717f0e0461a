"""Relaxed instance frequency-wise normalisation (RFN) of 2-D audio feature maps."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dan.errors import ConfigError


class RelaxedFreqNorm(nn.Module):
    """``lam * IFN(x) + (1 - lam) * LN(x)`` for feature maps ``x [B, C, F, T]`` (same shape).

    Kim, Yang, Kim, Park, Lee & Chang, "Domain Generalization with Relaxed Instance Frequency-wise
    Normalization for Multi-device Acoustic Scene Classification" (Interspeech 2022, arXiv 2206.12513).
    ``IFN`` normalises each sample's every frequency row over its channels and frames (a voice's or a
    microphone's spectral colouring lives in these statistics); ``LN`` normalises each sample over all of
    ``C, F, T``, which keeps the rows' relative levels that IFN alone would erase. Both use the biased
    variance and no learned affine (the next stage's convolution and batch norm rescale); no running
    statistics and no statistic across samples, so a sample is normalised the same way in training, at
    test and on any DDP rank.

    Where dan may differ from the paper: it places RFN in BC-ResNet's blocks; :class:`AudioCNN` places it
    at the end of each stage, after the pooling, on a map a quarter of the size (before the pooling it
    tripled a CPU training step of the 32-64-128 tower; docs/results.md). The authors' code was not within
    reach, so ``eps`` (1e-5, as in torch's norms) and the absence of an affine are not checked against it.
    """

    def __init__(self, lam: float = 0.5, eps: float = 1e-5) -> None:
        super().__init__()
        self.lam, self.eps = check_relaxation(lam, "RelaxedFreqNorm"), float(eps)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, C, F, T]`` -> ``[B, C, F, T]``."""
        # Both terms are x * scale + shift with per-row scale and shift, so the output is one pass over x;
        # every row holds C * T values, so LN's moments are the means of the rows' moments.
        mean_f = x.mean(dim=(1, 3), keepdim=True)
        power_f = x.square().mean(dim=(1, 3), keepdim=True)
        mean, power = mean_f.mean(dim=2, keepdim=True), power_f.mean(dim=2, keepdim=True)
        inv_f = (power_f - mean_f.square()).clamp_min(0).add(self.eps).rsqrt()
        inv = (power - mean.square()).clamp_min(0).add(self.eps).rsqrt()
        scale = self.lam * inv_f + (1.0 - self.lam) * inv
        shift = -(self.lam * mean_f * inv_f + (1.0 - self.lam) * mean * inv)
        return torch.addcmul(shift, x, scale)

    def extra_repr(self) -> str:
        return f"lam={self.lam}, eps={self.eps}"


def check_relaxation(lam: float, where: str) -> float:
    """``lam`` as a float; a ConfigError naming ``where`` and the key ``freq_norm`` unless it lies in [0, 1]."""
    if not 0.0 <= float(lam) <= 1.0:
        raise ConfigError(f"{where}: freq_norm is the RFN lambda in [0, 1] (0 turns it off), got {lam!r}")
    return float(lam)
