"""``inforeg``: adaptive unimodal regulation in the prime learning window (Huang, Wei, Yang, Hu, "Adaptive
Unimodal Regulation for Balanced Multimodal Information Acquisition", CVPR 2025).

Reference: the authors' ``main.py`` (GeWu-Lab/InfoReg_CVPR2025, ``train_epoch``). Per step the towers and
the fused head learn from ``L_f + Σ_m CE(W_m φ_m + b/M, y)`` (each modality's share of the fused head, as
OGM-GE's scores); each modality's score ``s_m = Σ_i softmax(W_m φ_m(x_i) + b/M)[y_i]`` is compared, and
while the *prime learning window* is open the dominant modality's encoder is pulled towards its weights
at the start of the epoch: ``g ← g + β (w - w_epoch_start)`` with ``β = strength · exp(tanh(s_d - s_o))``.
The window is read from the Fisher information of the encoder: ``trace_m`` is, over the convolution and
linear weights of ``m``'s encoder, the sum of each weight's mean of ``Σ_steps g²`` over the epoch;
with ``tr1`` the mean of the last ``history`` traces and ``tr2`` the mean of the ``history`` before the
last (a history that starts as ``history`` zeros, as the reference's), ``k = (tr1 - tr2) / tr1`` and the
window is open while ``k > threshold`` (``k = 1`` in the first epoch).

Where dan differs, and why:

- **Which modality's window.** The reference reads ``k`` from the audio encoder's trace alone and uses it
  whichever modality dominates (CREMA-D's audio is the strong one). dan keeps a trace per modality and
  regulates the dominant modality while *its own* window is open, which is the same thing when the
  dominant modality is the one whose trace the reference reads.
- **Strength.** The reference hard-codes 0.95 for audio and 0.1 for visual; dan's ``strength`` is one
  number for every modality (default 0.95) or a mapping ``{modality: strength}``.
- **More than two modalities.** The dominant modality is the one with the highest score and the gap is
  to the mean score of the others (the reference's ``s_a - s_v`` for two).
- **Under Adam.** The reference trains with SGD (momentum 0.9), where the pull is a gradient term whose
  strength is ``β``. Adam divides the summed gradient by its running RMS, so once the pull outweighs the
  loss gradient the encoder is held at its anchor whatever ``β`` is (measured, 20 AdamW steps with the
  image dominant, tests/test_balancer_inforeg.py's setup: the pulled tower moved 0.08x its unpulled twin
  with the pull in the gradient, 0.22x under SGD). ``pull: auto`` (the default) adds the pull to the
  gradient under SGD, exactly as the reference, and under any other optimizer applies it *decoupled*, as
  AdamW decouples weight decay: before the step the weights move ``w ← w - lr · β (w - w_epoch_start)``,
  so ``β`` keeps its meaning (the distance to the anchor shrinks by ``lr · β`` per step; measured 0.75x
  the twin). ``pull: gradient`` or ``decoupled`` forces one. The Fisher trace is read from the gradient
  after the pull is added (as the reference's) under ``gradient``, before it under ``decoupled``.
- **Auxiliary heads.** The reference has none; dan's learn on detached features (they report each
  modality's accuracy without sending a gradient into the towers). Where the head does not decompose
  (fusion other than ``concat``/``sum``, an MLP head), the unimodal losses and scores come from the
  auxiliary heads instead, which is not the paper's quantity (dan warns once).
- **Missing modalities.** A unimodal loss covers the samples where its modality was present (the batch's
  masks and modality dropout); the scores cover the samples where every modality was present.
- **DDP.** Scores are all-reduced and the traces come from DDP's averaged gradients, so every rank
  regulates the same modality by the same ``β`` and keeps the same traces.
- **Window of epochs.** ``start_epoch``/``end_epoch`` bound the regulation (the reference's unused
  ``modulation_starts``/``modulation_ends``); the traces are kept every epoch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from dan.errors import ConfigError
from dan.losses.balancers.base import Balancer, check_int, check_number, fused_objective, register_balancer
from dan.losses.balancers.context import EpochContext, StepContext
from dan.losses.balancers.ogm_ge import modulated_weights
from dan.losses.balancers.scores import modality_logits, true_class_scores
from dan.losses.masked import masked_cross_entropy

PULLS = ("auto", "gradient", "decoupled")


@register_balancer("inforeg")
class InfoRegBalancer(Balancer):
    """Pull the dominant modality's encoder towards its epoch-start weights while its Fisher trace grows.

    Config: ``strength`` (>= 0, or ``{modality: strength}``; default 0.95), ``threshold`` (k above which
    the window is open, default 0.05), ``history`` (epochs averaged in ``k``, int >= 1, default 10),
    ``pull`` (``auto``, ``gradient`` or ``decoupled``), ``start_epoch`` (default 0), ``end_epoch``
    (default ``None``: no end).
    """

    name = "inforeg"

    def __init__(
        self,
        modalities: Sequence[str],
        strength: float | Mapping[str, float] = 0.95,
        threshold: float = 0.05,
        history: int = 10,
        pull: str = "auto",
        start_epoch: int = 0,
        end_epoch: int | None = None,
    ) -> None:
        super().__init__(modalities)
        self.strength = self._strengths(strength)
        self.threshold = check_number(self.name, "threshold", threshold, low=-math.inf)
        self.history = check_int(self.name, "history", history, low=1)
        if pull not in PULLS:
            raise ConfigError(
                f"balancer 'inforeg': pull={pull!r} is not valid; set balancer.pull to one of {', '.join(PULLS)}"
            )
        self.pull = pull
        self.set_window(start_epoch, end_epoch)
        self._traces: dict[str, list[float]] = {m: [0.0] * self.history for m in self.modalities}
        self._fisher: dict[str, list[Tensor]] = {}
        self._anchor: dict[str, list[Tensor]] = {}
        self._epochs_seen = 0
        self._k = dict.fromkeys(self.modalities, 1.0)
        self._beta = dict.fromkeys(self.modalities, 0.0)
        self._warned = False

    def _strengths(self, strength: float | Mapping[str, float]) -> dict[str, float]:
        if isinstance(strength, Mapping):
            unknown = sorted(set(map(str, strength)) - set(self.modalities))
            if unknown:
                raise ConfigError(
                    f"balancer 'inforeg': strength names unknown modalities {unknown}; valid: "
                    f"{list(self.modalities)} (set balancer.strength.<modality>)"
                )
            return {m: check_number(self.name, f"strength.{m}", strength.get(m, 0.95)) for m in self.modalities}
        value = check_number(self.name, "strength", strength)
        return dict.fromkeys(self.modalities, value)

    def window_k(self, m: str) -> float:
        """``k_m = (tr1 - tr2) / tr1`` from the traces of the epochs seen (1 before the first epoch ends)."""
        if self._epochs_seen == 0:
            return 1.0
        traces = self._traces[m]
        tr1 = sum(traces[-self.history:]) / self.history
        tr2 = sum(traces[-self.history - 1:-1]) / self.history
        return (tr1 - tr2) / tr1 if tr1 > 0 else 0.0

    def on_epoch_start(self, ctx: EpochContext) -> None:
        """Keep each encoder's weights (the pull's anchor) and open or close each modality's window."""
        self._anchor = {m: [p.detach().clone() for p in ctx.model.tower_parameters(m)] for m in self.modalities}
        self._fisher = {m: [torch.zeros_like(p) for p in modulated_weights(ctx.model, m)] for m in self.modalities}
        self._k = {m: self.window_k(m) for m in self.modalities}

    def combine(self, fused_loss: Tensor, modality_losses: Mapping[str, Tensor], ctx: StepContext) -> Tensor:
        """``L_f + Σ_m CE(W_m φ_m + b/M, y)`` over the samples where ``m`` was present, plus the auxiliary
        heads' losses on detached features (scalar)."""
        out = ctx.output
        logits, fallback = modality_logits(out)
        self._warn(fallback)
        loss = fused_loss
        for m in self.modalities:
            if m in logits:
                loss = loss + masked_cross_entropy(logits[m].float(), ctx.labels, out.presence(m))
        return fused_objective(loss, modality_losses, ctx)

    def _warn(self, fallback: bool) -> None:
        if fallback and not self._warned:
            warnings.warn(
                "balancer 'inforeg': output.contributions is None (fusion other than concat/sum, or an MLP "
                "head); the unimodal losses and scores come from the auxiliary heads, not the fused head's "
                "shares as in the paper",
                stacklevel=3,
            )
            self._warned = True

    def decoupled(self, optimizer: torch.optim.Optimizer | None) -> bool:
        """Whether the pull moves the weights (True) or enters the gradient (False) under ``optimizer``."""
        if self.pull != "auto":
            return self.pull == "decoupled"
        return optimizer is not None and not isinstance(optimizer, torch.optim.SGD)

    def betas(self, scores: Mapping[str, Tensor], epoch: int) -> dict[str, float]:
        """``{m: β_m}``: ``strength_d · exp(tanh(s_d - mean_{j≠d} s_j))`` for the dominant ``d`` while its
        window is open and ``epoch`` in the modulation window, 0 for every other modality."""
        betas = dict.fromkeys(self.modalities, 0.0)
        if len(scores) < 2 or not self.active(epoch):
            return betas
        top = max(scores, key=lambda m: float(scores[m]))
        others = torch.stack([s for m, s in scores.items() if m != top]).mean()
        gap = float(scores[top] - others)
        if gap > 0 and self._k[top] > self.threshold:
            betas[top] = self.strength[top] * math.exp(math.tanh(gap))
        return betas

    def after_backward(self, ctx: StepContext) -> None:
        """Add the pull to the dominant encoder's gradients (or move its weights), then add the squared
        gradients to the epoch's Fisher sums."""
        logits, _ = modality_logits(ctx.output)
        self._beta = self.betas(true_class_scores(self.name, logits, ctx.output, ctx.batch, self.modalities), ctx.epoch)
        if not self._anchor:
            self._anchor = {m: [p.detach().clone() for p in ctx.model.tower_parameters(m)] for m in self.modalities}
        decoupled = self.decoupled(ctx.optimizer)
        with torch.no_grad():
            if not decoupled:
                self._apply_pull(ctx, decoupled=False)
            self._accumulate_fisher(ctx)
            if decoupled:
                self._apply_pull(ctx, decoupled=True)

    def _apply_pull(self, ctx: StepContext, decoupled: bool) -> None:
        lrs = _learning_rates(ctx.optimizer) if decoupled else {}
        for m, beta in self._beta.items():
            if beta == 0.0:
                continue
            for p, anchor in zip(ctx.model.tower_parameters(m), self._anchor[m], strict=True):
                if not p.requires_grad:
                    continue
                if not decoupled:
                    if p.grad is not None:
                        p.grad.add_(p.detach() - anchor, alpha=beta)
                    continue
                lr = lrs.get(id(p))
                if lr is None:
                    raise ConfigError(
                        "balancer 'inforeg': a tower parameter is in no optimizer group, so the decoupled pull "
                        "has no learning rate; give the optimizer every model parameter or set balancer.pull=gradient"
                    )
                p.sub_(p.detach() - anchor, alpha=lr * beta)

    def _accumulate_fisher(self, ctx: StepContext) -> None:
        if not self._fisher:
            self._fisher = {m: [torch.zeros_like(p) for p in modulated_weights(ctx.model, m)] for m in self.modalities}
        for m in self.modalities:
            for acc, p in zip(self._fisher[m], modulated_weights(ctx.model, m), strict=True):
                if p.grad is not None:
                    acc.add_(p.grad.detach() * p.grad.detach())

    def on_epoch_end(self, ctx: EpochContext) -> None:
        """Append each encoder's Fisher trace of the epoch to its history."""
        for m in self.modalities:
            sums = self._fisher.get(m, [])
            self._traces[m].append(float(sum(float(s.mean()) for s in sums)))
        self._epochs_seen += 1
        self._fisher = {}

    def weights(self) -> dict[str, float]:
        """Every head weighted 1, plus ``beta/<m>`` (the last step's pull), ``k/<m>`` (the window
        indicator of this epoch) and ``trace/<m>`` (the last epoch's Fisher trace)."""
        out = super().weights()
        out.update({f"beta/{m}": self._beta[m] for m in self.modalities})
        out.update({f"k/{m}": self._k[m] for m in self.modalities})
        out.update({f"trace/{m}": self._traces[m][-1] for m in self.modalities})
        return out

    def get_extra_state(self) -> dict[str, Any]:
        """Traces, epochs seen, k and the last pull, this epoch's anchors and Fisher sums (a run resumed mid-epoch goes on with
        them)."""
        return {
            "traces": {m: list(t) for m, t in self._traces.items()},
            "epochs_seen": self._epochs_seen,
            "k": dict(self._k),
            "beta": dict(self._beta),
            "anchor": {m: [t.clone() for t in ts] for m, ts in self._anchor.items()},
            "fisher": {m: [t.clone() for t in ts] for m, ts in self._fisher.items()},
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        self._traces = {m: list(state["traces"][m]) for m in self.modalities}
        self._epochs_seen = int(state["epochs_seen"])
        self._k = {m: float(state["k"][m]) for m in self.modalities}
        self._beta = {m: float(state["beta"][m]) for m in self.modalities}
        self._anchor = {m: list(ts) for m, ts in state.get("anchor", {}).items()}
        self._fisher = {m: list(ts) for m, ts in state.get("fisher", {}).items()}


def _learning_rates(optimizer: torch.optim.Optimizer | None) -> dict[int, float]:
    """``{id(parameter): lr}`` of every parameter in ``optimizer``'s groups."""
    if optimizer is None:
        return {}
    return {id(p): float(group["lr"]) for group in optimizer.param_groups for p in group["params"]}
