"""``reconboost``: modality-alternating boosting with reconcilement (Hua, Xu, Bao, Yang & Huang, "ReconBoost:
Boosting Can Achieve Modality Reconcilement", ICML 2024).

References read: the authors' ``train.py`` and ``models/dynamic_net.py`` (huacong/ReconBoost) and
BalanceBenchmark's ``balancemm/trainer/ReconBoost_trainer.py``. The model's prediction is the sum of the
modalities' learners, ``F = Σ_m f_m`` (the authors': ``boost_rate · Σ_m head(enc_m(x_m))`` through one
shared head). Training goes in stages; a stage picks one modality ``m`` (round robin) and

1. **boosts** it: its learner alone (its encoder and the head) trains, with a fresh optimizer, on the KL-derived reconcilement loss
   ``ℓ = -(w1 - w2 · softmax(F_{-m}(x))_y) · log softmax(f_m(x))_y / C`` (``F_{-m}``: the other
   modalities' learners, no gradient), so samples the others already get right weigh less, plus ``alpha``
   times the memory-consolidation term ``MSE(softmax(f_m), softmax(f_prev))`` against the learner of the
   previous stage's modality;
2. **rectifies** globally: every parameter trains on ``CE(F(x), y)``.

In dan ``f_m`` is modality ``m``'s share of the fused head, ``W_m φ_m + b/M`` (``output.contributions``:
``concat`` or ``sum`` fusion with a linear head; the authors' shared head in its linear case), so ``F`` is
the model's own fused logits and a stage is one epoch: ``on_epoch_start`` runs the boosting phase
(``boost_epochs`` passes over the training data) and the epoch itself is the rectification, the fused
loss with the recipe's optimizer and schedule.

Where dan differs, and why:

- **Memory consolidation.** Both references detach both arguments of the MSE, so the term changes no
  gradient there; dan lets its gradient reach the current learner (the previous one stays detached), as
  the paper describes the scheme. ``alpha: 0`` gives exactly the references' gradients.
- **Stage length.** The authors boost 4 epochs and rectify 4 per stage; BalanceBenchmark 1 and 1, for
  every modality within each of its epochs. dan boosts ``boost_epochs`` (default 1) and rectifies one
  epoch (the run's), one modality per epoch.
- **The first stage.** The authors (without pretrained learners) start from an empty ensemble, whose
  output is a constant; dan's other learners exist from initialisation, so ``F_{-m}`` is their output from
  the first stage on (the authors' ``--use_pretrain`` case, with untrained learners).
- **boost_rate.** The authors' learned scale on ``F`` is left out: with a linear head it is one more
  factor on ``W`` and ``b``, which the head learns already.
- **Optimizers.** Each boosting phase gets a fresh optimizer of the recipe's kind (the authors: a fresh
  SGD, momentum 0.9, per phase) at a constant learning rate: by default the one the run's schedule has
  reached when the epoch starts (the authors use one constant rate, 0.01, for both phases; the one-cycle
  peak as a constant rate from a fresh optimizer made the first boosting phase diverge, measured with
  ``balancer=reconboost`` at peak 0.5); the rectification uses the run's optimizer rather than a fresh one.
- **Any number of modalities, missing ones.** Stages go round robin over the sorted modalities (the
  authors' fixed schedule); ``F_{-m}`` sums the others that are present for each sample, and a sample
  without ``m`` is left out of ``m``'s boosting loss.
- **Shared trunk.** dan's trunk is shared, so boosting ``m`` also trains the trunk (the references' learners
  share only the head).
- **DDP.** The boosting phase trains data-parallel (gradients averaged every step, running statistics at
  its end), so every rank holds the same model after it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dan.engine.distributed import all_reduce_sum, current_world
from dan.errors import ConfigError
from dan.losses.balancers.base import (
    Balancer,
    check_int,
    check_number,
    fused_objective,
    register_balancer,
)
from dan.losses.balancers.context import Batch, EpochContext, StepContext
from dan.losses.balancers.copies import train_model


@register_balancer("reconboost")
class ReconBoostBalancer(Balancer):
    """One modality boosted per epoch (its learner alone, before the epoch), then the fused loss.

    Config: ``weight1`` (w1, default 5), ``weight2`` (w2, default 1), ``alpha`` (memory consolidation,
    default 0.5), ``boost_epochs`` (int >= 1, default 1), ``boost_lr`` (the boosting phase's learning rate;
    default: the run's learning rate when the epoch starts), ``start_epoch`` (default 0), ``end_epoch``
    (default ``None``: no end).
    """

    name = "reconboost"

    def __init__(
        self,
        modalities: Sequence[str],
        weight1: float = 5.0,
        weight2: float = 1.0,
        alpha: float = 0.5,
        boost_epochs: int = 1,
        boost_lr: float | None = None,
        start_epoch: int = 0,
        end_epoch: int | None = None,
    ) -> None:
        super().__init__(modalities)
        self.weight1 = check_number(self.name, "weight1", weight1)
        self.weight2 = check_number(self.name, "weight2", weight2)
        self.alpha = check_number(self.name, "alpha", alpha)
        self.boost_epochs = check_int(self.name, "boost_epochs", boost_epochs, low=1)
        self.boost_lr = None if boost_lr is None else check_number(self.name, "boost_lr", boost_lr, strict=True)
        self.set_window(start_epoch, end_epoch)
        self._boosted = dict.fromkeys(self.modalities, 0.0)
        self._boost_loss = 0.0

    def stage(self, epoch: int) -> tuple[str, str | None]:
        """The modality boosted before ``epoch`` and the previous stage's (``None`` in the first stage)."""
        k = epoch - self.start_epoch
        m = self.modalities[k % len(self.modalities)]
        prev = self.modalities[(k - 1) % len(self.modalities)] if k > 0 and len(self.modalities) > 1 else None
        return m, prev

    def check_model(self, model: Any) -> None:
        """Refuse a model whose head does not split into per-modality learners, with the fix."""
        from dan.models.fusion import ConcatFusion, SumFusion

        fusion, head = getattr(model, "fusion", None), getattr(model, "head", None)
        if not isinstance(fusion, (ConcatFusion, SumFusion)) or not isinstance(head, torch.nn.Linear):
            raise ConfigError(
                "balancer 'reconboost' needs the fused head to be a sum of per-modality learners: concat or sum "
                "fusion with a linear head; set model.fusion.name=concat model.head.hidden=0"
            )

    def boosting_loss(self, output: Any, labels: Tensor, m: str, prev: str | None) -> Tensor:
        """The stage's loss of modality ``m``'s learner over one batch (scalar): the reconcilement loss
        averaged over the samples where ``m`` is present, plus ``alpha · MSE`` to the ``prev`` learner."""
        shares = output.contributions
        if shares is None or m not in shares:
            raise ConfigError(
                "balancer 'reconboost' needs output.contributions (concat or sum fusion with a linear head) "
                "holding every modality; set model.fusion.name=concat model.head.hidden=0"
            )
        f_m = shares[m].float()
        others = torch.zeros_like(f_m)
        for j, share in shares.items():
            if j != m:
                keep = output.presence(j)
                share = share.detach().float()
                others = others + (share if keep is None else torch.where(keep[:, None], share, 0.0))
        log_p = F.log_softmax(f_m, dim=-1).gather(1, labels[:, None]).squeeze(1)
        p_others = F.softmax(others, dim=-1).gather(1, labels[:, None]).squeeze(1)
        per_sample = -(self.weight1 - self.weight2 * p_others) * log_p / f_m.shape[-1]
        keep_m = output.presence(m)
        if keep_m is not None:
            per_sample = per_sample[keep_m]
        loss = per_sample.mean() if per_sample.numel() else f_m.sum() * 0.0
        if prev is not None and self.alpha > 0 and prev in shares:
            rows = keep_m if keep_m is not None else slice(None)
            current = F.softmax(f_m[rows], dim=-1)
            target = F.softmax(shares[prev].detach().float()[rows], dim=-1)
            if current.numel():
                loss = loss + self.alpha * F.mse_loss(current, target)
        return loss

    def on_epoch_start(self, ctx: EpochContext) -> None:
        """Inside the window: the boosting phase of this epoch's modality, ``boost_epochs`` passes over the
        training data with a fresh optimizer."""
        self._boosted = dict.fromkeys(self.modalities, 0.0)
        if not self.active(ctx.epoch):
            return
        if "train" not in ctx.loaders:
            raise ConfigError("balancer 'reconboost' needs EpochContext.loaders['train'] for its boosting phase")
        m, prev = self.stage(ctx.epoch)
        losses: list[Tensor] = []

        def loss_fn(output: Any, batch: Batch) -> Tensor:
            loss = self.boosting_loss(output, batch["label"], m, prev)
            losses.append(loss.detach())
            return loss

        model = ctx.model
        learner = [*model.tower_parameters(m), *model.trunk.parameters(), *model.head.parameters()]
        lr = self.boost_lr
        if lr is None and ctx.optimizer is not None:
            lr = float(ctx.optimizer.param_groups[0]["lr"])  # where the run's schedule is now
        train_model(ctx, model, ctx.loaders["train"], loss_fn, self.boost_epochs, params=learner, lr=lr)
        self._boosted[m] = 1.0
        if losses:
            mean = torch.stack(losses).mean()[None]
            self._boost_loss = float(all_reduce_sum(mean) / current_world()[1])

    def combine(self, fused_loss: Tensor, modality_losses: Mapping[str, Tensor], ctx: StepContext) -> Tensor:
        """The rectification: ``L_f`` plus the auxiliary heads' losses on detached features (scalar)."""
        return fused_objective(fused_loss, modality_losses, ctx)

    def weights(self) -> dict[str, float]:
        """Every head weighted 1, plus ``boosted/<m>`` (1 for the modality boosted this epoch) and
        ``boost_loss`` (its mean boosting loss)."""
        out = super().weights()
        out.update({f"boosted/{m}": self._boosted[m] for m in self.modalities})
        out["boost_loss"] = self._boost_loss
        return out
