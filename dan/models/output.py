"""The typed output of every dan classifier."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class DANOutput:
    """What ``DANModel.forward`` returns.

    Attributes:
        logits: fused-head logits ``[B, C]``.
        modality_logits: each present modality's auxiliary-head logits ``[B, C]``.
        embeddings: each present modality's pooled trunk features ``[B, D]``.
        fused: the fusion output ``[B, F]``.
        contributions: for a linear head over ``concat`` fusion, ``W_m φ_m + b/M`` per modality
            ``[B, C]`` (the OGM-GE scores); ``None`` where the head is not decomposable.
    """

    logits: Tensor
    modality_logits: dict[str, Tensor]
    embeddings: dict[str, Tensor]
    fused: Tensor
    contributions: dict[str, Tensor] | None = None
