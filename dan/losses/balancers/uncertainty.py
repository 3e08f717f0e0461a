"""``uncertainty``: homoscedastic-uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018).

Every head ``i`` (fused and each modality) has a learnable ``s_i = log σ_i²`` and the objective is
``Σ_i exp(-s_i) L_i + s_i`` (the classification form: neither term halved). The ``s_i`` are parameters
of this module, so they go into the main optimiser with the model. For a constant loss the optimum is
``s_i = log L_i``: a head whose loss stays larger ends up with a smaller effective weight ``exp(-s_i)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from dan.losses.balancers.base import Balancer, check_number, register_balancer, stack_losses
from dan.losses.balancers.context import StepContext


@register_balancer("uncertainty")
class UncertaintyBalancer(Balancer):
    """Learnable ``log_vars [H]`` (``s_i``), one per head in ``heads`` order, initialised to ``init``.

    Config: ``init: float`` (initial ``s_i``, default 0.0, i.e. every weight 1).
    """

    name = "uncertainty"
    soft_targets = True
    plain_backward = True

    def __init__(self, modalities: Sequence[str], init: float = 0.0) -> None:
        super().__init__(modalities)
        init = check_number(self.name, "init", init, low=-math.inf)
        self.log_vars = nn.Parameter(torch.full((len(self.heads),), init))

    def combine(self, fused_loss: Tensor, modality_losses: Mapping[str, Tensor], ctx: StepContext) -> Tensor:
        """``Σ_i exp(-s_i) L_i + s_i`` over the heads present (scalar)."""
        index, losses = stack_losses(self, fused_loss, modality_losses)
        s = self.log_vars[index]
        return (torch.exp(-s) * losses + s).sum()

    def weights(self) -> dict[str, float]:
        """The effective weights ``exp(-s_i)`` per head."""
        return dict(zip(self.heads, torch.exp(-self.log_vars.detach()).tolist(), strict=True))
