"""``static``: ``L = L_f + Σ_m w_m L_m`` with fixed ``w_m`` from config, the baseline of every comparison."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from dan.errors import ConfigError
from dan.losses.balancers.base import Balancer, check_number, register_balancer, stack_losses
from dan.losses.balancers.context import StepContext


@register_balancer("static")
class StaticBalancer(Balancer):
    """Fixed weights: the fused head weighs 1, modality ``m`` weighs ``weights[m]`` (default 1.0).

    Config: ``weights: {modality: float >= 0}``.
    """

    name = "static"
    soft_targets = True
    plain_backward = True

    def __init__(self, modalities: Sequence[str], weights: Mapping[str, float] | None = None) -> None:
        super().__init__(modalities)
        given = dict(weights or {})
        unknown = sorted(set(given) - set(self.modalities))
        if unknown:
            raise ConfigError(
                f"balancer 'static': weights.{unknown[0]} names no modality; valid keys: {list(self.modalities)}"
            )
        values = [1.0] + [check_number(self.name, f"weights.{m}", given.get(m, 1.0)) for m in self.modalities]
        self.register_buffer("head_weights", torch.tensor(values))

    def combine(self, fused_loss: Tensor, modality_losses: Mapping[str, Tensor], ctx: StepContext) -> Tensor:
        """``L_f + Σ_m w_m L_m`` over the modalities present (scalar)."""
        index, losses = stack_losses(self, fused_loss, modality_losses)
        return (self.head_weights[index].to(losses) * losses).sum()

    def weights(self) -> dict[str, float]:
        """``{"fused": 1.0, m: w_m}``."""
        return dict(zip(self.heads, self.head_weights.tolist(), strict=True))
