"""``umt`` and ``ume``: Uni-Modal Teacher and Uni-Modal Ensemble (Du, Teng, Li, Zhang, Yuan & Zhao, "On
Uni-Modal Feature Learning in Supervised Multi-Modal Learning", ICML 2023).

Reference read: BalanceBenchmark ``balancemm/trainer/UMT_trainer.py`` (``training_step``: the fused
cross-entropy plus ``scaling · MSE`` between each loaded unimodal model's encoder output and the multimodal
model's, teachers in ``no_grad``) and its ``configs/trainer_config.yaml`` (``scaling: 10``); no code from
the authors was found to read.

**UMT** distils each modality's features from a unimodal teacher into the multimodal model:
``L = L_f + scaling · Σ_m MSE(t_m(x_m), φ_m(x))``, with ``φ_m`` the model's pooled embedding of ``m``
(``output.embeddings[m]``) and ``t_m`` the same embedding of a teacher trained on ``m`` alone.

**UME** trains the unimodal branches on their own losses only, ``L = Σ_m L_m``, and the fused head on
their detached features: the model's prediction combines unimodal models that never saw each other's
gradients.

Where dan differs, and why:

- Teachers: the reference loads unimodal models trained in earlier runs; dan trains them in the run,
  before the first epoch: one copy of the model per modality, given only that modality's input, trained on
  that modality's auxiliary loss for ``teacher_epochs`` with a fresh optimizer of the recipe's kind (no
  schedule). They are kept in the checkpoint, so a resumed run distils from the same teachers.
- Any number of modalities, missing ones: each modality is distilled over the samples where it is present
  (``output.present``); a teacher is given only those samples.
- The auxiliary heads (the reference's UMT has none) learn on detached features, so the towers learn from
  ``L_f`` and the distillation alone.
- UME's ensemble: the paper averages the unimodal models' logits; dan's fused head, trained on the
  detached unimodal features, learns the weighting (for ``concat`` and a linear head, a weighted sum of
  linear readouts of each modality). With ``trunk.share: true`` the unimodal branches share the trunk.
- DDP: teachers train data-parallel (gradients averaged every step, running statistics averaged at the
  end), so every rank holds the same ones; the logged distillation loss is the mean over ranks.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dan.engine.distributed import all_reduce_sum, current_world
from dan.errors import ConfigError
from dan.losses.balancers.base import (
    Balancer,
    check_int,
    check_number,
    fused_objective,
    register_balancer,
    stack_losses,
)
from dan.losses.balancers.context import EpochContext, StepContext
from dan.losses.balancers.copies import train_copy


@register_balancer("umt")
class UMTBalancer(Balancer):
    """The fused loss plus feature distillation from unimodal teachers trained before the first epoch.

    Config: ``scaling`` (weight of the distillation, >= 0, default 10), ``teacher_epochs`` (int >= 1,
    default 10).
    """

    name = "umt"

    def __init__(self, modalities: Sequence[str], scaling: float = 10.0, teacher_epochs: int = 10) -> None:
        super().__init__(modalities)
        self.scaling = check_number(self.name, "scaling", scaling)
        self.teacher_epochs = check_int(self.name, "teacher_epochs", teacher_epochs, low=1)
        self._teachers: dict[str, nn.Module] = {}
        self._pending: dict[str, dict[str, Tensor]] = {}
        self._distill = dict.fromkeys(self.modalities, 0.0)

    def on_epoch_start(self, ctx: EpochContext) -> None:
        """Before the first epoch (or a resumed run without them): train one teacher per modality."""
        if self._teachers or self._pending:
            return
        if "train" not in ctx.loaders:
            raise ConfigError("balancer 'umt' needs EpochContext.loaders['train'] to train its teachers")
        for m in self.modalities:
            self._teachers[m] = _frozen(train_copy(ctx, ctx.loaders["train"], m, self.teacher_epochs, inputs=[m]))

    def teachers(self, model: nn.Module) -> dict[str, nn.Module]:
        """``{m: teacher}`` (restored from a checkpoint onto copies of ``model`` where needed)."""
        for m, state in self._pending.items():
            teacher = copy.deepcopy(model)
            teacher.load_state_dict(state)
            self._teachers[m] = _frozen(teacher)
        self._pending = {}
        return self._teachers

    def combine(self, fused_loss: Tensor, modality_losses: Mapping[str, Tensor], ctx: StepContext) -> Tensor:
        """``L_f + scaling Σ_m MSE(t_m, φ_m)`` plus the auxiliary heads' losses on detached features (scalar)."""
        loss = fused_loss
        out = ctx.output
        teachers = self.teachers(ctx.model)
        if out is not None and teachers and self.training and torch.is_grad_enabled():
            for m, teacher in teachers.items():
                if m not in out.embeddings:
                    continue
                keep = out.presence(m)
                x = ctx.batch[m] if keep is None else ctx.batch[m][keep]
                student = out.embeddings[m] if keep is None else out.embeddings[m][keep]
                if x.shape[0] == 0:
                    continue
                with torch.no_grad():
                    target = teacher({m: x}).embeddings[m]
                term = F.mse_loss(student.float(), target.float())
                self._distill[m] = float(all_reduce_sum(term.detach()[None]) / current_world()[1])
                loss = loss + self.scaling * term
        return fused_objective(loss, modality_losses, ctx)

    def weights(self) -> dict[str, float]:
        """Every head weighted 1, plus the last ``distill/<m>`` (the MSE to the teacher, 0 before training)."""
        out = super().weights()
        out.update({f"distill/{m}": self._distill[m] for m in self.modalities})
        return out

    def get_extra_state(self) -> dict[str, Any]:
        """The teachers' state dicts, so a resumed run distils from the same teachers."""
        saved = {m: t.state_dict() for m, t in self._teachers.items()}
        return {"teachers": {**self._pending, **saved}}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Keep the saved teachers until a model to copy them onto is at hand."""
        self._teachers, self._pending = {}, dict(state.get("teachers", {}))


def _frozen(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@register_balancer("ume")
class UMEBalancer(Balancer):
    """Unimodal branches trained on their own losses; the fused head on their detached features."""

    name = "ume"

    def combine(self, fused_loss: Tensor, modality_losses: Mapping[str, Tensor], ctx: StepContext) -> Tensor:
        """``Σ_m L_m + CE(head(fused.detach()), y)`` (scalar)."""
        _, losses = stack_losses(self, fused_loss, modality_losses)
        head = getattr(ctx.model, "head", None)
        if head is None or ctx.output is None:
            raise ConfigError("balancer 'ume' needs the model's fused head (model.head) and the step's output")
        ensemble = F.cross_entropy(head(ctx.output.fused.detach()).float(), ctx.labels)
        return losses[1:].sum() + ensemble + 0.0 * fused_loss
