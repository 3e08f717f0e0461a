"""``mla``: multimodal learning by alternating unimodal adaptation (Zhang, Yoon, Bansal & Yao, "Multimodal
Representation Learning by Alternating Unimodal Adaptation", CVPR 2024).

References read: the authors' ``main.py`` (``train_epoch`` with ``gs_flag``) and ``utils/utils.py``
(``GSPlugin``) in Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation, and BalanceBenchmark's
``balancemm/trainer/MLA_trainer.py``. The modalities take turns: modality ``m``'s encoder and one head
shared by every modality train on ``CE(head(φ_m), y)`` alone, and before each update the head's weight
gradient is projected away from the features the head has already learned from (gradient-based
modulation, an orthogonal-projection rule): with ``r`` the batch mean of the head's input ``φ_m``
(``[1, D]``), ``k = P r^T`` (``[D, 1]``), ``P ← P - (k k^T) ⊘ (α + k r)`` (elementwise division by the
``[D, D]`` outer product ``k r``, as both references compute it), ``P ← P / ||P||_F`` and
``∇W ← ∇W P^T``, where ``α = 0.1^(b / n + 1)`` for batch ``b`` of the ``n`` in an epoch and ``P``
starts as the identity; the first update of the run is not projected.

In dan the shared head is the model's linear fused head applied to one modality's pooled features,
``head(φ_m) = W φ_m + b``: it needs a fusion whose output has the features' width (``sum`` fusion, for
which the model's own prediction ``W Σ_m φ_m + b`` sums the unimodal logits) and a linear head.

Where dan differs, and why:

- **Turns.** The references take one optimizer step per modality on every batch (M steps a batch); dan
  takes one step a batch and gives batch ``t`` to modality ``t mod M`` (sorted order), so in an epoch
  each modality trains on 1/M of the batches: train M times the epochs for the references' number of
  updates. One step a batch keeps the engine's step, schedule, clipping, AMP and checkpoints unchanged.
- **Projection.** The authors' ``GSPlugin`` replaces the gradient (``∇W ← ∇W P^T``); BalanceBenchmark adds
  the projection to it (``∇W ← ∇W + ∇W P^T``); dan follows the authors. (The authors' committed
  ``before_update`` matches the parameter name ``module.weight``, which ``fc_out.named_parameters()`` never
  yields, so as committed it projects nothing; dan projects, as the paper and BalanceBenchmark do.)
- **The projection's denominator.** The orthogonal-projection rule the paper builds on divides by the
  scalar ``α + r P r^T``; both references divide elementwise by ``α + k r`` (``torch.mm(k, r)``, a
  ``[D, D]`` matrix). dan computes what the references compute (``rule: code``, the default);
  ``rule: scalar`` divides by the scalar instead.
- **Inference.** The authors predict with fixed weights (``--av_alpha``) or, with ``--dynamic``, gate the
  unimodal logits by their entropy (computed over the batch axis there, per sample in BalanceBenchmark);
  dan predicts with the model's fused head (for ``sum`` fusion the unweighted sum of the unimodal
  features through the head). Entropy gating at test time is not implemented.
- **Parameters a turn does not train.** Their gradients are dropped (set to ``None``, so the optimizer
  skips them: no momentum, no weight decay), as in the references under torch >= 2, whose
  ``zero_grad`` leaves them ``None``; the auxiliary heads still learn every step on detached features.
- **Missing modalities.** A turn's loss and ``r`` cover the samples where its modality is present; a turn
  whose modality no sample has trains nothing but the auxiliary heads.
- **Optimizer.** The authors train with SGD (momentum 0.9, weight decay 1e-4): run the method with
  ``optimizer.name=sgd optimizer.momentum=0.9`` to match. The projection shapes the gradient's direction,
  not its size, so Adam does not cancel it, though its per-coordinate scaling bends the projected
  direction: measured in tests/test_balancer_mla.py (12 alternating steps), the head's answer on the
  other modality's mean feature moved 0.76x its unprojected twin's under SGD and 0.50x under AdamW.
- **DDP.** ``r`` is the mean over every rank's samples (all-reduced), so ``P`` is the same on every rank;
  the logged turn loss is the mean over every rank's samples too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dan.engine.distributed import all_reduce_sum
from dan.errors import ConfigError
from dan.losses.balancers.base import Balancer, fused_objective, register_balancer
from dan.losses.balancers.context import StepContext
from dan.losses.masked import masked_cross_entropy

RULES = ("code", "scalar")


@register_balancer("mla")
class MLABalancer(Balancer):
    """Alternating unimodal steps through the shared fused head, its gradient projected.

    Config: ``project`` (the gradient projection, default true), ``rule`` (``code`` or ``scalar``: the
    projection's denominator, see the module docstring), ``start_epoch`` (default 0),
    ``end_epoch`` (default ``None``: no end; outside the window the model trains on the fused loss).
    """

    name = "mla"

    def __init__(
        self,
        modalities: Sequence[str],
        project: bool = True,
        rule: str = "code",
        start_epoch: int = 0,
        end_epoch: int | None = None,
    ) -> None:
        super().__init__(modalities)
        if not isinstance(project, bool):
            raise ConfigError(f"balancer 'mla': project must be true or false, got {project!r}; set balancer.project")
        if rule not in RULES:
            raise ConfigError(f"balancer 'mla': rule={rule!r} is not valid; set balancer.rule to one of {', '.join(RULES)}")
        self.project, self.rule = project, rule
        self.set_window(start_epoch, end_epoch)
        self.register_buffer("projector", torch.empty(0))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self._turn: str | None = None
        self._mean: Tensor | None = None
        self._loss = dict.fromkeys(self.modalities, 0.0)

    def check_model(self, model: nn.Module) -> None:
        """A ConfigError unless the fused head is linear and reads features of the embeddings' width."""
        head, dim = getattr(model, "head", None), getattr(model, "dim", None)
        if not isinstance(head, nn.Linear) or head.in_features != dim:
            raise ConfigError(
                "balancer 'mla' needs one linear head shared by every modality (a fusion that keeps the "
                "features' width and a linear head); set model.fusion.name=sum model.head.hidden=0"
            )

    def turn(self, step: int) -> str:
        """The modality trained at optimizer step ``step``."""
        return self.modalities[step % len(self.modalities)]

    def combine(self, fused_loss: Tensor, modality_losses: Mapping[str, Tensor], ctx: StepContext) -> Tensor:
        """Inside the window ``CE(head(φ_m), y)`` for this step's modality ``m`` over the samples that have
        it, else ``L_f``; plus the auxiliary heads' losses on detached features (scalar)."""
        self._turn, self._mean = None, None
        out = ctx.output
        if out is None or not self.active(ctx.epoch):
            return fused_objective(fused_loss, modality_losses, ctx)
        self.check_model(ctx.model)
        m = self.turn(ctx.step)
        self._turn = m
        loss = 0.0 * fused_loss  # every parameter stays in the graph, as DDP requires
        if m in out.embeddings:
            feats = out.embeddings[m]
            keep = out.presence(m)
            loss = loss + masked_cross_entropy(ctx.model.head(feats).float(), ctx.labels, keep)
            rows = feats.detach().float() if keep is None else feats.detach().float()[keep]
            local = rows.new_tensor([rows.shape[0], float(loss.detach()) * rows.shape[0]])
            total = all_reduce_sum(torch.cat([rows.sum(0), local]))
            if float(total[-2]) > 0:
                self._mean = (total[:-2] / total[-2])[None]
                self._loss[m] = float(total[-1] / total[-2])
        return fused_objective(loss, modality_losses, ctx)

    def after_backward(self, ctx: StepContext) -> None:
        """Drop the gradients of the encoders whose turn it is not, then project the head's gradient."""
        m = self._turn
        if m is None:
            return
        for other in self.modalities:
            if other != m:
                for p in _own_parameters(ctx.model, other):
                    p.grad = None
        head = ctx.model.head
        if self._mean is None or head.weight.grad is None:
            return
        if self.project:
            self._project(head.weight.grad, self._mean, ctx.batch_index, ctx.batches)
        self.updates += 1

    @torch.no_grad()
    def _project(self, grad: Tensor, r: Tensor, batch_index: int, batches: int) -> None:
        """The authors' ``GSPlugin.before_update``: update ``P`` with ``r`` ``[1, D]``, then ``grad ← grad P^T``
        (``grad [C, D]``); nothing on the run's first update."""
        if self.projector.numel() == 0:
            self.projector = torch.eye(r.shape[1], device=grad.device, dtype=torch.float32)
        if int(self.updates) == 0:
            return
        alpha = 0.1 ** (batch_index / max(batches, 1) + 1)
        p = self.projector
        k = p @ r.T
        p = p - (k @ k.T) / (alpha + (k @ r if self.rule == "code" else r @ k))
        p = p / torch.linalg.norm(p)
        self.projector = p
        grad.copy_((grad.float() @ p.T).to(grad.dtype))

    def weights(self) -> dict[str, float]:
        """Every head weighted 1, plus ``loss/<m>``: each modality's last turn's loss."""
        out = super().weights()
        out.update({f"loss/{m}": self._loss[m] for m in self.modalities})
        return out

    def _load_from_state_dict(self, state: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        key = prefix + "projector"
        if key in state:  # P is made on the first update; take the saved one's shape
            self.projector = torch.empty_like(state[key])
        super()._load_from_state_dict(state, prefix, *args, **kwargs)


def _own_parameters(model: nn.Module, m: str) -> list[nn.Parameter]:
    """The parameters only modality ``m`` uses (``modality_parameters``; a model without it: its tower's)."""
    own = getattr(model, "modality_parameters", None)
    return list(own(m)) if own is not None else list(model.tower_parameters(m))
