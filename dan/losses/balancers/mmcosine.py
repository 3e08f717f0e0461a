"""``mmcosine``: Multi-Modal Cosine loss (Xu, Feng, Zhang & Hu, ICASSP 2023).

Reference read: GeWu-Lab/MMCosine_ICASSP23 ``main_CD.py`` (``train_epoch`` and ``valid`` with
``--mmcosine``); BalanceBenchmark's ``MMCosine_trainer.py`` ports it.

The fused head of a ``concat`` model is one linear layer over the modalities' slots ``φ_m``, with weight
blocks ``W_m [C, D]``. MMCosine trains it, and the towers, on cosine logits normalised per modality:

``z = s · Σ_m cos(φ_m, W_m)``, ``cos(φ_m, W_m)_c = φ_m · w_{m,c} / (‖φ_m‖ ‖w_{m,c}‖)``,

and the loss is ``CE(z, y)`` alone (the head's bias gets no gradient): each modality's logits are bounded
by ``s``, so a modality cannot dominate the fused logits by growing its feature norm. Outside
``start_epoch..end_epoch`` the loss is the plain fused cross-entropy. Defaults: ``scaling=10`` (the
authors' argument; BalanceBenchmark uses 15), modulation from epoch 0 on.

Where dan differs, and why:

- Predictions are the model's own head, ``W [φ_m] + b``, at validation and test: so does the reference's
  ``valid`` (its cosine logits serve only the unimodal accuracies). dan's auxiliary heads report the
  unimodal accuracies instead; they learn on detached features, so the towers learn from ``z`` alone.
- Any number of modalities: one cosine term per slot. A modality absent for a sample fills its slot with
  the concat fusion's learned "missing" embedding (as in the model's own prediction), so that sample's
  term is a learned constant rather than a feature.
- Only ``concat`` fusion with a linear head splits into per-modality weight blocks (the reference's
  model); any other fusion or head is a ConfigError when the recipe is set up.
- The reference's optional NCE term (``--lam``, default 0) is left out.
- DDP needs nothing: the loss is per sample and DDP averages the gradients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from dan.errors import ConfigError
from dan.losses.balancers.base import Balancer, check_number, fused_objective, register_balancer
from dan.losses.balancers.context import StepContext


def cosine_logits(head: nn.Linear, slots: Sequence[Tensor], scaling: float) -> Tensor:
    """``[B, C]``: ``scaling · Σ_m normalize(φ_m) · normalize(W_m)ᵀ`` for the slots ``φ_m [B, D_m]`` a linear
    ``head`` reads in order (``W_m`` its column block, each class row normalised)."""
    out, start = None, 0
    for phi in slots:
        w = head.weight[:, start : start + phi.shape[-1]]
        term = F.normalize(phi.float(), dim=-1) @ F.normalize(w.float(), dim=-1).T
        out = term if out is None else out + term
        start += phi.shape[-1]
    return scaling * out  # type: ignore[operator]


@register_balancer("mmcosine")
class MMCosineBalancer(Balancer):
    """The fused loss on per-modality cosine logits of the concat head.

    Config: ``scaling`` (``s``, > 0, default 10), ``start_epoch`` (default 0), ``end_epoch`` (default
    ``None``: no end).
    """

    name = "mmcosine"

    def __init__(
        self, modalities: Sequence[str], scaling: float = 10.0, start_epoch: int = 0, end_epoch: int | None = None
    ) -> None:
        super().__init__(modalities)
        self.scaling = check_number(self.name, "scaling", scaling, strict=True)
        self.set_window(start_epoch, end_epoch)

    def combine(self, fused_loss: Tensor, modality_losses: Mapping[str, Tensor], ctx: StepContext) -> Tensor:
        """``CE(s Σ_m cos(φ_m, W_m), y)`` in the window, else ``L_f``; plus the auxiliary heads' losses on
        detached features (scalar)."""
        if ctx.output is None or not self.active(ctx.epoch):
            return fused_objective(fused_loss, modality_losses, ctx)
        self.check_model(ctx.model)
        head, fusion = ctx.model.head, ctx.model.fusion
        slots = fusion.split(ctx.output.fused)
        loss = F.cross_entropy(cosine_logits(head, [slots[m] for m in fusion.modalities], self.scaling), ctx.labels)
        loss = loss + 0.0 * fused_loss  # the head's bias stays in the graph (zero gradient), as DDP requires
        return fused_objective(loss, modality_losses, ctx)

    def check_model(self, model: nn.Module) -> None:
        """A ConfigError unless ``model`` has concat fusion (``fusion.split``) and a linear head."""
        if not isinstance(getattr(model, "head", None), nn.Linear) or not hasattr(getattr(model, "fusion", None), "split"):
            raise ConfigError(
                "balancer 'mmcosine' needs concat fusion and a linear head (per-modality weight blocks); set "
                "model.fusion.name=concat model.head.hidden=0, or choose another balancer"
            )
