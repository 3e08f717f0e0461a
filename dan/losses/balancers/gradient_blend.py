"""``gradient_blend``: online Gradient-Blending (Wang, Tran & Feiszli, CVPR 2020).

The trainer holds out a slice of the training data (``needs_heldout``) and reports, at the end of
every epoch, each head's mean train loss ``T`` and held-out loss ``V``. Every ``every`` (K) epochs,
from the values at epoch ``n`` and ``n+K``:

- ``G_k = V_k(n) - V_k(n+K)``: generalisation gain;
- ``O_k = (V_k(n+K) - T_k(n+K)) - (V_k(n) - T_k(n))``: overfitting growth;
- ``w_k ∝ G_k / O_k²``, normalised so that ``Σ_k w_k = 1``; the objective is ``Σ_k w_k L_k``.

Guards (not in the paper, which assumes ``G > 0`` and ``O ≠ 0``):

- ``O_k² < eps`` is raised to ``eps``: a head that learnt without overfitting gets a large but finite
  weight instead of a division by zero;
- ``G_k <= 0`` (held-out loss did not fall) gives ``w_k = 0``: the formula would make it negative;
- when no head has ``G_k > 0`` the previous weights are kept.

``form: multibench`` uses MultiBench's simplified ``w_k ∝ |V_k / (V_k - T_k)²|`` at epoch ``n+K``
(``(V - T)²`` floored at ``eps`` likewise); it is not the paper's form. Until the first estimate every
head weighs ``1 / H``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from dan.errors import ConfigError
from dan.losses.balancers.base import Balancer, check_int, check_number, register_balancer, stack_losses
from dan.losses.balancers.context import EpochContext, StepContext

FORMS = ("paper", "multibench")


def blend_weights(
    train_n: Tensor, heldout_n: Tensor, train_nk: Tensor, heldout_nk: Tensor, *, eps: float = 1e-6
) -> Tensor:
    """The paper's ``w ∝ G / O²`` ``[H]`` from per-head losses ``[H]`` at epochs n and n+K.

    Returns all zeros where no head has ``G > 0`` (the caller then keeps its weights).
    """
    gain = heldout_n - heldout_nk
    overfit = (heldout_nk - train_nk) - (heldout_n - train_n)
    raw = torch.where(gain > 0, gain / overfit.pow(2).clamp_min(eps), torch.zeros_like(gain))
    return _normalise(raw)


def multibench_weights(train: Tensor, heldout: Tensor, *, eps: float = 1e-6) -> Tensor:
    """MultiBench's ``w ∝ |V / (V - T)²|`` ``[H]`` from per-head losses ``[H]`` at one epoch."""
    return _normalise((heldout / (heldout - train).pow(2).clamp_min(eps)).abs())


def _normalise(raw: Tensor) -> Tensor:
    total = raw.sum()
    return raw / total if total > 0 else torch.zeros_like(raw)


@register_balancer("gradient_blend")
class GradientBlendBalancer(Balancer):
    """Per-head weights ``head_weights [H]`` re-estimated every K epochs from train/held-out losses.

    Config: ``every`` (K, epochs between estimates, int >= 1, default 1), ``form`` (``paper`` or
    ``multibench``), ``eps`` (floor of ``O²``, > 0, default 1e-6).
    """

    name = "gradient_blend"
    needs_heldout = True

    def __init__(
        self, modalities: Sequence[str], every: int = 1, form: str = "paper", eps: float = 1e-6
    ) -> None:
        super().__init__(modalities)
        self.every = check_int(self.name, "every", every, low=1)
        if form not in FORMS:
            raise ConfigError(
                f"balancer {self.name!r}: form must be one of {FORMS}, got {form!r}; set balancer.form"
            )
        self.form = form
        self.eps = check_number(self.name, "eps", eps, strict=True)
        n = len(self.heads)
        self.register_buffer("head_weights", torch.full((n,), 1.0 / n))
        self._anchor: tuple[int, Tensor, Tensor] | None = None

    def combine(self, fused_loss: Tensor, modality_losses: Mapping[str, Tensor], ctx: StepContext) -> Tensor:
        """``Σ_k w_k L_k`` over the heads present (scalar)."""
        index, losses = stack_losses(self, fused_loss, modality_losses)
        return (self.head_weights[index].to(losses) * losses).sum()

    def on_epoch_end(self, ctx: EpochContext) -> None:
        """Record this epoch's losses; re-estimate the weights when a K-epoch window closes."""
        epoch = ctx.epoch
        train = self._vector("train_losses", ctx.train_losses)
        heldout = self._vector("heldout_losses", ctx.heldout_losses)
        if self._anchor is None:
            self._anchor = (epoch, train, heldout)
            return
        start, train_n, heldout_n = self._anchor
        if epoch - start < self.every:
            return
        if self.form == "paper":
            new = blend_weights(train_n, heldout_n, train, heldout, eps=self.eps)
        else:
            new = multibench_weights(train, heldout, eps=self.eps)
        if new.sum() > 0:
            self.head_weights.copy_(new)
        self._anchor = (epoch, train, heldout)

    def _vector(self, what: str, losses: Mapping[str, float]) -> Tensor:
        missing = [h for h in self.heads if h not in losses]
        if missing:
            raise ConfigError(
                f"balancer {self.name!r}: {what} lacks heads {missing} (needs {list(self.heads)}); gradient "
                "blending needs every head's mean train and held-out loss, so the trainer must hold out a "
                "slice of the training data (Balancer.needs_heldout)"
            )
        return torch.tensor([float(losses[h]) for h in self.heads], dtype=torch.float64)

    def weights(self) -> dict[str, float]:
        """``w_k`` per head (they sum to 1)."""
        return dict(zip(self.heads, self.head_weights.tolist(), strict=True))

    def get_extra_state(self) -> dict[str, Any]:
        """The open window's epoch and losses, so checkpoints resume the schedule."""
        return {"anchor": self._anchor}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what ``get_extra_state`` saved."""
        self._anchor = state["anchor"]
