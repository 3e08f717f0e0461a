"""Per-modality scores from the fused head's decomposition: what OGM-GE and InfoReg compare."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from dan.engine.distributed import all_reduce_sum
from dan.errors import ConfigError


def modality_logits(output: Any) -> tuple[Mapping[str, Tensor], bool]:
    """Each modality's logits ``{m: [B, C]}``: the fused head's shares ``W_m φ_m + b/M``
    (``output.contributions``) where the head decomposes, else the auxiliary heads' logits; the flag is
    True where it fell back to the auxiliary heads (not the papers' quantity)."""
    if output.contributions is not None:
        return output.contributions, False
    return output.modality_logits, True


def true_class_scores(
    name: str, logits: Mapping[str, Tensor], output: Any, batch: Mapping[str, Tensor], modalities: Sequence[str]
) -> dict[str, Tensor]:
    """``{m: s_m}``, ``s_m = Σ_i softmax(logits_m(x_i))[y_i]`` summed over every DDP rank and over the
    samples where every scored modality was present (``output.present``: the batch's masks and modality
    dropout), for the modalities of ``modalities`` found in ``logits``; scalars."""
    if "label" not in batch:
        raise ConfigError(f"balancer {name!r} needs batch['label'] (int64 [B]) to score each modality")
    present = [m for m in modalities if m in logits]
    if not present:
        return {}
    labels = batch["label"].reshape(-1, 1)
    keep = torch.ones(labels.shape[0], dtype=torch.bool, device=labels.device)
    for m in present:
        mask = output.presence(m) if output.present is not None else batch.get(f"{m}_mask")
        if mask is not None:
            keep &= mask.to(device=keep.device, dtype=torch.bool)
    sums = []
    for m in present:
        probs = torch.softmax(logits[m].detach().float(), dim=-1)
        sums.append(probs.gather(1, labels.to(probs.device)).squeeze(1)[keep.to(probs.device)].sum())
    total = all_reduce_sum(torch.stack(sums))
    return dict(zip(present, total.unbind(), strict=True))
