"""``greedy``: balanced multimodal learning against the greedy nature of multimodal networks (Wu,
Jastrzębski, Cho & Geras, "Characterizing and Overcoming the Greedy Nature of Learning in Multi-modal Deep
Neural Networks", ICML 2022).

References read: the authors' ``src/callbacks.py`` (``Bias_Mitigation_Strong``), ``src/balanced_mmtm.py``
and ``configs/training_guided.gin`` (nyukat/greedy_multimodal_learning), and BalanceBenchmark's
``balancemm/trainer/Greedy_trainer.py``. The model needs cross-modal *bypass* paths: MMTM blocks between
the towers' stages (``model.mid_fusion.name=mmtm``). After every backward the method measures each
modality's *conditional learning speed*: with ``g²/w²`` the squared gradient norm over the squared weight
norm of a set of parameters, ``M_bypass,m`` and ``M_main,m`` accumulate, over every step since the run
began, ``g²/w²`` of the MMTM parameters that serve ``m`` (its excitation layer and the shared squeeze
layer) and of ``m``'s own tower; ``BDR_m = log10(M_bypass,m / M_main,m)``. When
``d = BDR_0 - BDR_1`` exceeds ``epsilon`` in size, the next ``window`` steps are *re-balancing* steps: the
modality leaning most on the bypass (``BDR`` highest) has its MMTM excitation replaced by the running mean
of its excitations, so it must learn from its own input. The measurement starts at ``start_epoch``
(before, the sums accumulate but no step re-balances), as the authors' ``starting_epoch=2``.

Where dan differs, and why:

- **More than two modalities.** ``d = max_m BDR_m - min_m BDR_m`` and the re-balanced modality is the
  ``argmax``; for two modalities this is the authors' ``|BDR_0 - BDR_1|`` and sign rule.
- **Main parameters.** The authors' branch is a whole ResNet with its own classifier; dan's main path of
  ``m`` is its tower and projection (``tower_parameters(m)``); the trunk and fused head are shared.
- **Running mean.** The authors' ``balanced_mmtm.py`` updates the second modality's running mean from the
  first modality's excitations (a copy slip BalanceBenchmark fixes), and from evaluation forwards too; dan
  keeps each modality's own running mean, from training forwards only (``dan.models.mid_fusion``).
- **Optimizer.** The authors train with SGD (lr 0.1, no momentum): ``optimizer.name=sgd
  optimizer.momentum=0``. The method changes which paths carry information, not gradient sizes, so Adam
  does not cancel it.
- **The frozen excitation layer.** It gets no gradient in a re-balancing step (its output is replaced);
  dan keeps it in the graph with a zero gradient, as DDP requires, and drops that gradient before the
  step, so no optimizer moves it (no momentum, no weight decay), as in the references.
- **Missing modalities.** An absent modality's squeeze enters the MMTM as zero (the model's exact
  masking); the speeds come from the gradients, which already cover only the samples present.
- **DDP.** The gradients are DDP's averages and the weights are the same on every rank, so every rank
  computes the same speeds and re-balances the same modality; DDP broadcasts rank 0's running means with
  the other buffers at each forward.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dan.errors import ConfigError
from dan.losses.balancers.base import Balancer, check_int, check_number, fused_objective, register_balancer
from dan.losses.balancers.context import EpochContext, StepContext


def _ratio(params: Sequence[nn.Parameter]) -> float:
    """``Σ ||g||² / Σ ||w||²`` over ``params`` (parameters without a gradient count 0)."""
    g2 = sum(float(p.grad.detach().float().pow(2).sum()) for p in params if p.grad is not None)
    w2 = sum(float(p.detach().float().pow(2).sum()) for p in params)
    return g2 / w2 if w2 > 0 else 0.0


@register_balancer("greedy")
class GreedyBalancer(Balancer):
    """Re-balancing steps for the modality that learns through the MMTM bypass faster than on its own.

    Config: ``epsilon`` (threshold on ``d``, default 0.01), ``window`` (re-balancing steps, int >= 1,
    default 5), ``start_epoch`` (default 2).
    """

    name = "greedy"

    def __init__(self, modalities: Sequence[str], epsilon: float = 0.01, window: int = 5, start_epoch: int = 2) -> None:
        super().__init__(modalities)
        if len(self.modalities) < 2:
            raise ConfigError("balancer 'greedy' compares modalities; the model needs at least two")
        self.epsilon = check_number(self.name, "epsilon", epsilon)
        self.window = check_int(self.name, "window", window, low=1)
        self.set_window(start_epoch, None)
        self.register_buffer("bypass", torch.zeros(len(self.modalities), dtype=torch.float64))
        self.register_buffer("main", torch.zeros(len(self.modalities), dtype=torch.float64))
        self._caring: str | None = None
        self._left = 0
        self._d = 0.0

    def check_model(self, model: nn.Module) -> None:
        """A ConfigError unless the model has MMTM bypass paths between its towers."""
        mid = getattr(model, "mid_fusion", None)
        if mid is None or not hasattr(mid, "set_frozen"):
            raise ConfigError(
                "balancer 'greedy' needs cross-modal bypass paths between the towers; set model.mid_fusion.name=mmtm "
                "(towers image_cnn / audio_cnn with the same number of channels entries)"
            )

    def combine(self, fused_loss: Tensor, modality_losses: Mapping[str, Tensor], ctx: StepContext) -> Tensor:
        """``L_f`` plus the auxiliary heads' losses on detached features (scalar), as the authors train the
        fused output alone."""
        return fused_objective(fused_loss, modality_losses, ctx)

    def speeds(self, model: nn.Module) -> dict[str, float]:
        """Add this step's ``g²/w²`` to the sums and return ``{m: BDR_m}``."""
        mid = model.mid_fusion
        shared = [p for name, p in mid.named_parameters() if ".squeeze." in f".{name}"]
        for k, m in enumerate(self.modalities):
            own = [p for name, p in mid.named_parameters() if f".excite.{m}." in f".{name}"]
            self.bypass[k] += _ratio([*shared, *own])
            self.main[k] += _ratio(list(model.tower_parameters(m)))
        return {
            m: math.log10(float(self.bypass[k]) / float(self.main[k]))
            if self.bypass[k] > 0 and self.main[k] > 0
            else 0.0
            for k, m in enumerate(self.modalities)
        }

    def after_backward(self, ctx: StepContext) -> None:
        """The authors' ``on_backward_end``: measure (outside a re-balancing window), then open or count down
        a window; the model's MMTM freezes the chosen modality from the next forward on."""
        self.check_model(ctx.model)
        if self._caring is not None:  # its excitation was frozen in this step: the optimizer skips that layer
            for name, p in ctx.model.mid_fusion.named_parameters():
                if f".excite.{self._caring}." in f".{name}":
                    p.grad = None
        if not self.active(ctx.epoch):
            self._record(self.speeds(ctx.model))
            self._caring, self._left = None, 0
        elif self._caring is None:
            bdr = self._record(self.speeds(ctx.model))
            if self._d > self.epsilon:
                self._caring, self._left = max(bdr, key=lambda m: bdr[m]), self.window
        else:
            self._left -= 1
            if self._left == 0:
                self._caring = None
        ctx.model.mid_fusion.set_frozen(self._caring)

    def _record(self, bdr: dict[str, float]) -> dict[str, float]:
        self._d = max(bdr.values()) - min(bdr.values())
        return bdr

    def on_epoch_start(self, ctx: EpochContext) -> None:
        """Put the model's MMTM in the saved state (a resumed run continues a re-balancing window)."""
        mid = getattr(ctx.model, "mid_fusion", None)
        if mid is not None and hasattr(mid, "set_frozen"):
            mid.set_frozen(self._caring)

    def weights(self) -> dict[str, float]:
        """Every head weighted 1, plus ``d_bdr`` (the last measured spread of the BDRs) and
        ``rebalancing/<m>`` (1 while ``m``'s excitation is frozen)."""
        out = super().weights()
        out["d_bdr"] = self._d
        out.update({f"rebalancing/{m}": float(self._caring == m) for m in self.modalities})
        return out

    def get_extra_state(self) -> dict[str, Any]:
        """The re-balancing window and the last ``d``."""
        return {"caring": self._caring, "left": self._left, "d": self._d}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        self._caring, self._left, self._d = state["caring"], int(state["left"]), float(state["d"])
