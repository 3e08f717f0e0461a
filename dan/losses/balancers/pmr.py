"""``pmr``: Prototypical Modal Rebalance (Fan, Xu, Wu, Zhang & Chen, CVPR 2023).

Reference read: fanyunfeng-bit/Modal-Imbalance-PMR ``main_Prototype_grad.py`` (``calculate_prototype``,
``train_epoch`` with ``--modulation Proto``, ``EU_dist``); BalanceBenchmark's ``PMR_trainer.py`` ports it.

Each modality keeps class prototypes ``p_m [C, D]``, the class means of its features
(``output.embeddings[m]``, eval mode) over the first tenth of the training batches, computed before the
first epoch and after every epoch, then smoothed: ``p_m ← (1 - μ) p_new + μ p_m`` (not after epoch 0,
as the reference). At each step the features' prototypical logits are ``s_m = -‖φ_m(x) - p_m‖₂``
``[B, C]`` and the modality's prototypical score is ``score_m = Σ_i softmax(s_m)_i[y_i]``. The objective
is ``L_f + Σ_m β_m · CE(s_m, y)`` with ``β_m = alpha`` for a modality whose score is below the others'
(``score_m / mean_{n≠m} score_n < 1``) and 0 otherwise: the prototypical cross-entropy speeds up the
weaker modality's encoder only. Defaults: ``alpha=1`` and ``momentum=0.2``, the reference's arguments.

Where dan differs, and why:

- Any number of modalities: a modality is "weaker" against the mean score of the others (for two
  modalities this is the reference's ``ratio_a_p`` test); missing modalities leave their samples out of
  the scores, the prototypes and the prototypical loss.
- The auxiliary heads (the reference has none) learn on detached features
  (:func:`~dan.losses.balancers.base.fused_objective`), so the towers learn from ``L_f`` and the
  prototypical loss, as in the reference.
- A class absent from the prototype batches gets a zero prototype (the reference divides by zero).
- The paper also describes a prototypical entropy regularisation of the dominant modality; the authors'
  released script does not use it, and neither does dan.
- DDP: prototype sums and counts and the scores are all-reduced, so every rank uses the same prototypes
  and the same ``β``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dan.engine.distributed import all_reduce_sum
from dan.errors import ConfigError
from dan.losses.balancers.base import Balancer, check_number, fused_objective, register_balancer
from dan.losses.balancers.context import Batch, EpochContext, StepContext
from dan.losses.balancers.features import present_embeddings
from dan.losses.masked import masked_cross_entropy


def class_prototypes(
    model: nn.Module, batches: Iterable[Batch], modalities: Sequence[str], num_classes: int, device: torch.device
) -> dict[str, Tensor]:
    """``{m: [C, D]}`` class means of each modality's embeddings over ``batches`` (eval mode; summed over
    DDP ranks; a class never seen gets zeros)."""
    sums: dict[str, Tensor] = {}
    for per in present_embeddings(model, batches, modalities, device):
        for m, (emb, labels) in per.items():
            hot = torch.nn.functional.one_hot(labels, num_classes).float()
            part = torch.cat([hot.T @ emb, hot.sum(0)[:, None]], 1)  # [C, D + 1]: sums and counts
            sums[m] = sums[m] + part if m in sums else part
    protos = {}
    for m, part in sums.items():
        total = all_reduce_sum(part)
        protos[m] = total[:, :-1] / total[:, -1:].clamp_min(1)
    return protos


@register_balancer("pmr")
class PMRBalancer(Balancer):
    """Prototypical cross-entropy on the modalities whose prototypical score trails the others'.

    Config: ``alpha`` (weight of the prototypical loss, default 1, >= 0), ``momentum`` (prototype
    smoothing, default 0.2, in [0, 1]).
    """

    name = "pmr"

    def __init__(self, modalities: Sequence[str], alpha: float = 1.0, momentum: float = 0.2) -> None:
        super().__init__(modalities)
        self.alpha = check_number(self.name, "alpha", alpha)
        self.momentum = check_number(self.name, "momentum", momentum)
        if self.momentum > 1:
            raise ConfigError(f"balancer 'pmr': momentum must lie in [0, 1], got {momentum}; set balancer.momentum")
        self.prototypes: dict[str, Tensor] | None = None
        self._beta = dict.fromkeys(self.modalities, 0.0)
        self._ratio = dict.fromkeys(self.modalities, 1.0)

    def on_epoch_start(self, ctx: EpochContext) -> None:
        """Before the first epoch: the initial prototypes."""
        if self.prototypes is None:
            self.prototypes = self._measure(ctx)

    def on_epoch_end(self, ctx: EpochContext) -> None:
        """After each epoch: new prototypes, smoothed with the old ones after the first epoch."""
        new = self._measure(ctx)
        if self.prototypes is None or ctx.epoch == 0:
            self.prototypes = new
        else:
            self.prototypes = {m: torch.lerp(new[m], self.prototypes[m].to(new[m]), self.momentum) for m in new}

    def _measure(self, ctx: EpochContext) -> dict[str, Tensor]:
        train = ctx.loaders.get("train")
        if train is None:
            raise ConfigError("balancer 'pmr' needs EpochContext.loaders['train'] to compute its class prototypes")
        batches = list(_first_tenth(train))
        classes = int(ctx.model.num_classes)
        return class_prototypes(ctx.model, batches, self.modalities, classes, ctx.device)

    def combine(self, fused_loss: Tensor, modality_losses: Mapping[str, Tensor], ctx: StepContext) -> Tensor:
        """``L_f`` + auxiliary losses on detached features + ``Σ_m β_m CE(-‖φ_m - p_m‖, y)`` (scalar)."""
        loss = fused_objective(fused_loss, modality_losses, ctx)
        if self.prototypes is None or ctx.output is None:
            return loss
        present = [m for m in self.modalities if m in ctx.output.embeddings]
        logits, scores = {}, []
        for m in present:
            emb = ctx.output.embeddings[m].float()
            logits[m] = -torch.cdist(emb, self.prototypes[m].to(emb))
            keep = ctx.output.presence(m)
            probs = torch.softmax(logits[m].detach(), -1).gather(1, ctx.labels[:, None]).squeeze(1)
            scores.append(probs.sum() if keep is None else probs[keep].sum())
        if len(present) < 2:
            return loss
        total = all_reduce_sum(torch.stack(scores))
        for i, m in enumerate(present):
            others = torch.cat([total[:i], total[i + 1 :]]).mean()
            ratio = float(total[i] / others) if others > 0 else 1.0
            beta = self.alpha if ratio < 1 else 0.0
            self._ratio[m], self._beta[m] = ratio, beta
            if beta:
                loss = loss + beta * masked_cross_entropy(logits[m], ctx.labels, ctx.output.presence(m))
        return loss

    def weights(self) -> dict[str, float]:
        """Every head weighted 1, plus the last ``beta/<m>`` and score ``ratio/<m>`` (1 before the first step)."""
        out = super().weights()
        out.update({f"beta/{m}": self._beta[m] for m in self.modalities})
        out.update({f"ratio/{m}": self._ratio[m] for m in self.modalities})
        return out

    def get_extra_state(self) -> dict[str, Any]:
        """The prototypes, so a resumed run scores against the same ones."""
        return {"prototypes": self.prototypes}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what ``get_extra_state`` saved."""
        self.prototypes = state["prototypes"]


def _first_tenth(batches: Iterable[Batch]) -> Iterable[Batch]:
    """The first ``len // 10`` batches (at least one), as the reference's prototype pass."""
    limit = max(len(batches) // 10, 1) if hasattr(batches, "__len__") else 1  # type: ignore[arg-type]
    for i, batch in enumerate(batches):
        if i >= limit:
            return
        yield batch
