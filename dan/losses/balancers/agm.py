"""``agm``: Adaptive Gradient Modulation (Li, Li, Hu, Yang & Li, ICCV 2023).

Reference read: lihong2303/AGM_ICCV2023 ``model/AVMNIST_net.py`` (``GradMod``, ``Modality_Audio``,
``Modality_Visual``: backward hooks that scale each modality's share) and ``run/AVMNIST_main.py``
(``train``: the scores, ratios and coefficients); BalanceBenchmark's ``AGM_trainer.py`` ports it.

The fused output is split into per-modality shares by Shapley values over the modality subsets, with the
output of a subset ``S``, ``f(S)``, computed with the modalities outside ``S`` masked and ``f(∅) = 0``:
``o_m = Σ_{S ∌ m} |S|! (M-|S|-1)! / M! · (f(S ∪ {m}) - f(S))`` (for two modalities
``o_a = ½ (f(a,v) - f(v) + f(a))``), so ``Σ_m o_m = f(all)``. The full forward is the training forward; the
subsets are forwarded in eval mode *with* gradients, as the reference does. The loss is
``CE(Σ_m g_m(o_m), y)``, where ``g_m`` is the identity whose backward multiplies by ``c_m``: the value is
the plain fused loss, and the gradient reaching each modality's share is scaled by its coefficient.

Per step, from the batch's mono scores ``s_m = mean_i -log max(softmax(o_m)_i[y_i], 1e-8)`` and their
running mean over every earlier step ``s̄_m`` (0 before the first):

``r_m = exp(M/(M-1) · (mean_n s_n - s_m))``, ``r̄_m = exp(M/(M-1) · (mean_n s̄_n - s̄_m))``,
``c_m = exp(alpha · (r̄_m - r_m))``;

a modality that does better than it usually does against the others (``r_m > r̄_m``) is damped, one that
does worse is boosted. After ``backward``, where any gradient of the fused head's parameters leaves
``[-clip, clip]``, all gradients are clipped to a global norm of ``clip`` (1.0 in the reference).
Defaults: ``alpha=1`` (the reference's argument default; its AV-MNIST example uses 2.5), modulation from
epoch 0 to 20 inclusive.

Where dan differs, and why:

- Any number of modalities: the reference writes the two- and three-modality Shapley sums out by hand; dan
  computes them over all ``2^M - 2`` proper non-empty subsets (``M/(M-1)`` is the reference's factor 2 for
  two modalities). A sample without any modality of ``S`` (missing data, modality dropout in the training
  forward) has ``f(S) = 0``. An absent modality's share is then 0 up to the gap between the training-mode
  full forward and the eval-mode subset forwards (exactly 0 in eval mode), and its samples are left out of
  ``s_m``.
- "Padding" is dan's exact masking (``<m>_mask`` False) rather than a zero input.
- Outside the modulation window every ``c_m`` is 1 (the reference keeps the last coefficients it set,
  which we take to be unintended); the running scores are updated every step, as there.
- The auxiliary heads (the reference has none) learn on detached features, so the towers and the trunk
  learn from the modulated fused loss alone.
- DDP: score sums and counts are all-reduced, so every rank computes the same ``c_m`` and running means.
- Optimizer: the reference trains with SGD (momentum 0.9), as ``balancer=agm`` does. Adam divides each
  gradient by its running RMS, which cancels a coefficient (measured in tests/test_balancer_agm.py: at
  ``c_audio = 0.86`` the audio encoder's AdamW step was 1.00x its unmodulated twin's with the gradient
  scaled, 0.91x under SGD, where the shares' mixed paths dilute ``c``). ``modulate: auto``
  (the default) scales each share's gradient under SGD, exactly as the reference, and under any other
  optimizer leaves the gradients alone and scales the *step* of each modality's encoder weights (its
  convolution and linear weights, as OGM-GE's) by ``c_m`` (``dan.losses.balancers.step_scaling``);
  ``modulate: gradient`` or ``update`` forces one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dan.batch import select_rows
from dan.engine.distributed import all_reduce_sum
from dan.losses.balancers.base import Balancer, check_number, fused_objective, register_balancer
from dan.losses.balancers.context import StepContext
from dan.losses.balancers.ogm_ge import modulated_weights
from dan.losses.balancers.step_scaling import StepScaler, check_modulate, scales_updates
from dan.metrics.contribution import shapley_values

LOG_FLOOR = math.log(1e-8)


def scale_gradient(x: Tensor, scale: float) -> Tensor:
    """``x`` unchanged in value, its gradient multiplied by ``scale`` in ``backward`` (any shape)."""
    return x.detach() + scale * (x - x.detach())


def subset_logits(
    model: nn.Module, batch: Mapping[str, Tensor], present: Mapping[str, Tensor], subset: frozenset[str]
) -> Tensor | None:
    """``[B, C]`` logits of ``model`` (eval mode, with gradients) given only the modalities of ``subset``
    (``present {m: bool [B]}`` masked to ``subset``); rows with none of them present are zero, and
    ``None`` when no row has any."""
    masks = {m: p & (m in subset) for m, p in present.items()}
    rows = torch.stack(list(masks.values()), 1).any(1)
    if not bool(rows.any()):
        return None
    part = select_rows(dict(batch), rows)
    part.update({f"{m}_mask": mask[rows] for m, mask in masks.items()})
    was_training = model.training
    model.eval()
    try:
        logits = model(part).logits
    finally:
        model.train(was_training)
    out = logits.new_zeros(rows.shape[0], logits.shape[-1])
    return out.index_put((rows.nonzero().squeeze(1),), logits)


def shapley_shares(
    model: nn.Module, batch: Mapping[str, Tensor], output: Any, modalities: Sequence[str]
) -> dict[str, Tensor]:
    """``{m: o_m [B, C]}``: each modality's Shapley share of the fused logits ``output.logits``, over the
    subsets of ``modalities`` (``f(∅) = 0``), so that ``Σ_m o_m = output.logits``."""
    everyone = torch.ones(output.logits.shape[0], dtype=torch.bool, device=output.logits.device)
    present = {m: p if (p := output.presence(m)) is not None else everyone for m in modalities}
    full = frozenset(modalities)
    zeros = output.logits.new_zeros(output.logits.shape)

    def value(subset: frozenset[str]) -> Tensor:
        if subset == full:
            return output.logits
        if not subset:
            return zeros
        logits = subset_logits(model, batch, present, subset)
        return zeros if logits is None else logits.to(zeros.dtype)

    return shapley_values(value, modalities)


@register_balancer("agm")
class AGMBalancer(Balancer):
    """Scales the gradient reaching each modality's Shapley share of the fused output.

    Config: ``alpha`` (>= 0, default 1), ``start_epoch`` (default 0), ``end_epoch`` (default 20, ``None``
    for no end), ``clip`` (gradient-norm clip applied when the fused head's gradient leaves ``[-clip,
    clip]``, default 1; ``None`` to turn it off), ``modulate`` (``auto``, ``gradient`` or ``update``; see the
    module docstring).
    """

    name = "agm"

    def __init__(
        self,
        modalities: Sequence[str],
        alpha: float = 1.0,
        start_epoch: int = 0,
        end_epoch: int | None = 20,
        clip: float | None = 1.0,
        modulate: str = "auto",
    ) -> None:
        super().__init__(modalities)
        self.modulate = check_modulate(self.name, modulate)
        self._steps = StepScaler()
        self.alpha = check_number(self.name, "alpha", alpha)
        self.set_window(start_epoch, end_epoch)
        self.clip = None if clip is None else check_number(self.name, "clip", clip, strict=True)
        self.register_buffer("running", torch.zeros(len(self.modalities), dtype=torch.float64))
        self.register_buffer("seen", torch.zeros(len(self.modalities), dtype=torch.float64))
        self._coeffs = dict.fromkeys(self.modalities, 1.0)
        self._scores = dict.fromkeys(self.modalities, 0.0)

    def combine(self, fused_loss: Tensor, modality_losses: Mapping[str, Tensor], ctx: StepContext) -> Tensor:
        """``CE(Σ_m g_m(o_m), y)`` (the fused loss, its gradient scaled per share) plus the auxiliary heads'
        losses on detached features (scalar)."""
        out = ctx.output
        present = [m for m in self.modalities if out is not None and m in out.embeddings]
        if not (self.training and torch.is_grad_enabled()) or len(present) < 2:
            return fused_objective(fused_loss, modality_losses, ctx)
        shares = shapley_shares(ctx.model, ctx.batch, out, present)
        coeffs = self.coefficients(self._mono_scores(shares, out, ctx.labels))
        if not self.active(ctx.epoch):
            coeffs = dict.fromkeys(coeffs, 1.0)
        self._coeffs = {m: coeffs.get(m, 1.0) for m in self.modalities}
        on_step = scales_updates(self.modulate, ctx.optimizer)
        logits = sum(scale_gradient(shares[m], 1.0 if on_step else coeffs[m]) for m in present)
        loss = F.cross_entropy(logits.float(), ctx.labels)  # type: ignore[union-attr]
        return fused_objective(loss, modality_losses, ctx)

    def _mono_scores(self, shares: Mapping[str, Tensor], output: Any, labels: Tensor) -> dict[str, Tensor]:
        """``{m: s_m}``, each share's mean clamped cross-entropy over the samples where ``m`` is present,
        over every DDP rank (modalities present nowhere are left out)."""
        sums = []
        for m, share in shares.items():
            logp = F.log_softmax(share.detach().float(), -1).gather(1, labels[:, None]).squeeze(1)
            nll = -logp.clamp_min(LOG_FLOOR)
            keep = output.presence(m)
            if keep is not None:
                nll = nll[keep]
            sums.append(torch.stack([nll.sum().double(), torch.tensor(float(nll.numel()), dtype=torch.float64, device=nll.device)]))
        total = all_reduce_sum(torch.stack(sums)).cpu()
        return {m: total[i, 0] / total[i, 1] for i, m in enumerate(shares) if total[i, 1] > 0}

    def coefficients(self, scores: Mapping[str, Tensor]) -> dict[str, float]:
        """``{m: c_m}`` from this step's mono scores, then folds the scores into the running means."""
        if len(scores) < 2:
            return dict.fromkeys(scores, 1.0)
        idx = [self.modalities.index(m) for m in scores]
        now = torch.stack([scores[m].double() for m in scores]).to(self.running.device)
        past = self.running[idx]
        factor = len(scores) / (len(scores) - 1)
        ratio = torch.exp(factor * (now.mean() - now))
        optimal = torch.exp(factor * (past.mean() - past))
        coeffs = torch.exp(self.alpha * (optimal - ratio))
        seen = self.seen[idx] + 1
        self.running[idx] = past + (now - past) / seen
        self.seen[idx] = seen
        self._scores.update({m: float(s) for m, s in scores.items()})
        return {m: float(c) for m, c in zip(scores, coeffs, strict=True)}

    def after_backward(self, ctx: StepContext) -> None:
        """Clip every gradient to a global norm of ``clip`` where the fused head's leaves ``[-clip, clip]``;
        where the step is modulated, save each encoder's weights for :meth:`after_step`."""
        self._steps.clear()
        if scales_updates(self.modulate, ctx.optimizer):
            for m, c in self._coeffs.items():
                self._steps.save(modulated_weights(ctx.model, m), c)
        head = getattr(ctx.model, "head", None)
        if self.clip is None or head is None:
            return
        grads = [p.grad for p in head.parameters() if p.grad is not None]
        if grads and max(float(g.abs().max()) for g in grads) > self.clip:
            torch.nn.utils.clip_grad_norm_([p for p in ctx.model.parameters() if p.grad is not None], self.clip)

    def after_step(self, ctx: StepContext) -> None:
        """Where the step is modulated: each encoder weight moves ``c_m`` times the optimizer's step."""
        self._steps.apply()

    def weights(self) -> dict[str, float]:
        """Every head weighted 1, plus the last ``coeff/<m>`` and mono ``score/<m>``."""
        out = super().weights()
        out.update({f"coeff/{m}": self._coeffs[m] for m in self.modalities})
        out.update({f"score/{m}": self._scores[m] for m in self.modalities})
        return out
