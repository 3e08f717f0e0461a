"""Mixup of training batches (Zhang, Cisse, Dauphin & Lopez-Paz, "mixup: Beyond Empirical Risk Minimization",
ICLR 2018), across every modality of a sample at once: ``train.mixup: alpha`` (0, the default, is off).

As in the authors' code (facebookresearch/mixup-cifar10), each batch draws one ``lam ~ Beta(alpha, alpha)``
and one random permutation ``j`` of its samples; inputs become ``lam * x + (1 - lam) * x[j]`` and the loss
``lam * CE(y) + (1 - lam) * CE(y[j])``. Cross-entropy is linear in its target, so the batch carries that
mixture as class probabilities ``batch["target"] [B, C]`` and every head's cross-entropy against it is the
paper's loss exactly. Where they differ: ``lam`` and ``j`` come from torch's seeded global RNG (NumPy's in
theirs), so a seed repeats a run and a resumed run continues the same draws. Under DDP each rank mixes
within its own share of the global batch (pairs never cross ranks); the reference runs in one process.

A sample keeps a modality only where both samples mixed into it have it (``<m>_mask``): a mixture with the
filler of a missing input is not an observation of that modality.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dan.errors import ConfigError

Batch = dict[str, Tensor]
TARGET = "target"


def check_alpha(alpha: float, key: str = "train.mixup") -> float:
    """``alpha`` as a float when finite and >= 0; a ConfigError naming ``key`` otherwise."""
    value = float(alpha)
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{key} is mixup's Beta(alpha, alpha) parameter, a finite number >= 0 (0 = off), got {alpha!r}")
    return value


class Mixup:
    """A transform of training batches ``{m: [B, ...], f"{m}_mask": bool [B], "label": int [B], ...}``:
    the modalities ``modalities`` mixed pairwise and ``batch["target"] [B, num_classes]`` added (class
    probabilities; ``"label"`` keeps each sample's own class). ``alpha`` 0 returns batches unchanged and draws
    nothing from the RNG, so a config without mixup keeps its random stream."""

    def __init__(self, alpha: float, modalities: Sequence[str], num_classes: int) -> None:
        self.alpha = check_alpha(alpha)
        self.modalities = tuple(modalities)
        self.num_classes = int(num_classes)

    def __call__(self, batch: Mapping[str, Tensor]) -> Batch:
        """``batch`` (``label [B]``, modalities ``[B, ...]``) mixed, with ``target [B, num_classes]``; the
        batch itself is not changed."""
        out = dict(batch)
        if not self.alpha:
            return out
        labels = batch["label"]
        lam = float(torch.distributions.Beta(self.alpha, self.alpha).sample())
        j = torch.randperm(labels.shape[0]).to(labels.device)
        for m in self.modalities:
            if m in out:
                out[m] = lam * out[m] + (1 - lam) * out[m][j]
            mask = f"{m}_mask"
            if mask in out:
                out[mask] = out[mask] & out[mask][j]
        hot = F.one_hot(labels, self.num_classes).float()
        out[TARGET] = lam * hot + (1 - lam) * hot[j]
        return out


def targets(batch: Mapping[str, Tensor]) -> Tensor:
    """What the heads' cross-entropy is taken against: mixup's class probabilities ``[B, C]`` where the batch
    was mixed, else its labels ``[B]``."""
    return batch[TARGET] if TARGET in batch else batch["label"]
