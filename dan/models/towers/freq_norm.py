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
    variance and no learned affine; the running statistics of batch norm are not involved, so a sample is
    normalised the same way in training and at test.

    Where dan differs from the paper: it places RFN in BC-ResNet's blocks; :class:`AudioCNN` places it after
    each stage's ``conv-BN-ReLU``, before the pooling. The authors' code was not within reach to compare
    ``eps`` (1e-5 here, as in torch's norms).
    """

    def __init__(self, lam: float = 0.5, eps: float = 1e-5) -> None:
        super().__init__()
        if not 0.0 <= float(lam) <= 1.0:
            raise ConfigError(f"freq_norm (the RFN relaxation lambda) must lie in [0, 1], got {lam!r}")
        self.lam, self.eps = float(lam), float(eps)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, C, F, T]`` -> ``[B, C, F, T]``."""
        ifn = normalise(x, dims=(1, 3), eps=self.eps)
        ln = normalise(x, dims=(1, 2, 3), eps=self.eps)
        return self.lam * ifn + (1.0 - self.lam) * ln

    def extra_repr(self) -> str:
        return f"lam={self.lam}, eps={self.eps}"


def normalise(x: Tensor, dims: tuple[int, ...], eps: float) -> Tensor:
    """``x`` (any shape) minus its mean over ``dims``, divided by ``sqrt(biased variance + eps)``."""
    var, mean = torch.var_mean(x, dim=dims, keepdim=True, correction=0)
    return (x - mean) * (var + eps).rsqrt()
