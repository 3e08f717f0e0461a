"""Transforms of a batch ``{m: [B, ...], f"{m}_mask": bool [B], "label": [B], ...}``: dropping modalities, as
the evaluation ablations and the balancers that train unimodal copies do."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Transform = Callable[[dict[str, Tensor]], dict[str, Tensor]]


def drop_modality(m: str) -> Transform:
    """A transform that removes modality ``m`` from every batch, and the samples left with no modality
    (they have no prediction without ``m``)."""

    def transform(batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {k: v for k, v in batch.items() if k not in (m, f"{m}_mask")}
        masks = [v for k, v in out.items() if k.endswith("_mask") and k[: -len("_mask")] in out]
        if not masks:
            return out
        keep = torch.stack(masks, 1).any(1)
        return out if bool(keep.all()) else select_rows(out, keep)

    return transform


def select_rows(batch: dict[str, Tensor], rows: Tensor) -> dict[str, Tensor]:
    """The samples ``rows`` (bool ``[B]``) of every per-sample tensor of ``batch``; other entries unchanged."""
    size = rows.shape[0]
    return {k: v[rows] if isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == size else v for k, v in batch.items()}


def only_modalities(batch: dict[str, Tensor], keep: set[str], modalities: list[str]) -> dict[str, Tensor]:
    """``batch`` with every modality of ``modalities`` outside ``keep`` dropped (:func:`drop_modality`),
    and the samples left with none of ``keep``."""
    for m in modalities:
        if m not in keep:
            batch = drop_modality(m)(batch)
    return batch
