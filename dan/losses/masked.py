"""Cross-entropy over the samples where a modality was present."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def masked_cross_entropy(logits: Tensor, labels: Tensor, keep: Tensor | None) -> Tensor:
    """Mean cross-entropy of ``logits [B, C]`` against ``labels`` (class indices ``[B]`` or class probabilities
    ``[B, C]``, e.g. mixup's) over the rows where ``keep`` (``bool [B]``; ``None`` = all rows); 0 where no row
    is kept."""
    ce = F.cross_entropy(logits.float(), labels, reduction="none")
    if keep is None:
        return ce.mean()
    return torch.where(keep, ce, torch.zeros_like(ce)).sum() / keep.sum().clamp_min(1)
