"""Classifier heads: the fused head, the per-modality auxiliary heads, and linear contributions."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from dan.errors import ConfigError


def build_head(in_dim: int, num_classes: int, hidden: int = 0, dropout: float = 0.0) -> nn.Module:
    """``[B, in_dim] -> [B, num_classes]``: one ``nn.Linear`` when ``hidden == 0``, else
    ``Linear-ReLU-Dropout-Linear`` with ``hidden`` units."""
    if int(hidden) < 0:
        raise ConfigError(f"model.head.hidden must be >= 0 (0 = linear head), got {hidden}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"model.head.dropout must be in [0, 1), got {dropout}")
    if hidden == 0:
        return nn.Linear(in_dim, num_classes)
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
    )


def linear_contributions(head: nn.Linear, slots: Sequence[Tensor]) -> list[Tensor]:
    """Each slot's share of a linear head over concatenated slots: ``W_m φ_m + b / M``.

    ``slots`` are the ``M`` concatenated pieces ``φ_m [B, D_m]`` in order; returns ``M`` tensors
    ``[B, C]`` whose sum is ``head(concat(slots))`` (up to rounding).
    """
    bias = head.bias / len(slots) if head.bias is not None else None
    out, start = [], 0
    for phi in slots:
        z = phi @ head.weight[:, start : start + phi.shape[-1]].T
        out.append(z + bias if bias is not None else z)
        start += phi.shape[-1]
    return out
