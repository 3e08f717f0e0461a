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
        present: ``{m: bool [B]}``, where each modality was present for the heads, after the batch's
            ``<m>_mask`` and modality dropout; ``None`` means every sample.
    """

    logits: Tensor
    modality_logits: dict[str, Tensor]
    embeddings: dict[str, Tensor]
    fused: Tensor
    contributions: dict[str, Tensor] | None = None
    present: dict[str, Tensor] | None = None

    def presence(self, m: str) -> Tensor | None:
        """``bool [B]``: the samples where modality ``m`` was present; ``None`` where all were."""
        return None if self.present is None else self.present.get(m)
