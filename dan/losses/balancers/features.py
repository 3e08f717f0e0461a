"""Each modality's embeddings over a data pass, for balancers that diagnose the towers' features
(re-learning's clustering, PMR's prototypes)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from dan.losses.balancers.context import Batch


@torch.no_grad()
def present_embeddings(
    model: nn.Module, batches: Iterable[Batch], modalities: Sequence[str], device: torch.device
) -> list[dict[str, tuple[Tensor, Tensor]]]:
    """Per batch, ``{m: (embeddings [n, D] float, labels [n])}`` over the samples where modality ``m`` is
    present (``output.embeddings``, eval mode, no gradient; the model's mode is restored)."""
    was_training = model.training
    model.eval()
    found = []
    try:
        for raw in batches:
            batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in raw.items()}
            out = model(batch)
            per: dict[str, tuple[Tensor, Tensor]] = {}
            for m in modalities:
                if m in out.embeddings:
                    emb, labels, keep = out.embeddings[m].float(), batch["label"], out.presence(m)
                    per[m] = (emb, labels) if keep is None else (emb[keep], labels[keep])
            found.append(per)
    finally:
        model.train(was_training)
    return found
