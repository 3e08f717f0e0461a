"""``ogm_ge``: on-the-fly gradient modulation with generalisation enhancement (Peng et al., CVPR 2022).

The objective is the static ``L_f + Σ_m w_m L_m``. After ``backward``, from the batch's labels ``y``
and each modality's share of the fused logits ``W_m φ_m + b/M`` (``output.contributions``):

- ``s_m = Σ_i softmax(W_m φ_m(x_i) + b/M)[y_i]``;
- ``ρ_m = s_m / mean_{j≠m} s_j`` (for two modalities ``s_m / s_other``);
- ``k_m = 1 - tanh(α ρ_m)`` where ``ρ_m > 1``, else 1;

and, from ``start_epoch`` to ``end_epoch`` (both inclusive, as in the reference code), every gradient of
``model.tower_parameters(m)`` becomes ``k_m g``, plus with GE ``N(0, std(g)²)`` noise, ``std(g)`` taken
over that parameter's original gradient. As in the authors' code the noise goes to every modality's
tower, the unmodulated one included. Samples where a modality is masked out (``<m>_mask``) are left
out of every score. Where the head is not decomposable (``contributions is None``) the auxiliary
logits stand in for the contributions, with one warning.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from dan.errors import ConfigError
from dan.losses.balancers.base import check_int, check_number, register_balancer
from dan.losses.balancers.context import StepContext
from dan.losses.balancers.static import StaticBalancer


@register_balancer("ogm_ge")
class OGMGEBalancer(StaticBalancer):
    """Gradient modulation of the dominant modality's tower; losses combined as in ``static``.

    Config: ``alpha`` (>= 0, default 0.8), ``start_epoch`` (default 0), ``end_epoch`` (default 50,
    ``None`` for no end), ``ge`` (add the Gaussian noise, default True), ``weights`` (as ``static``).
    """

    name = "ogm_ge"

    def __init__(
        self,
        modalities: Sequence[str],
        alpha: float = 0.8,
        start_epoch: int = 0,
        end_epoch: int | None = 50,
        ge: bool = True,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(modalities, weights=weights)
        self.alpha = check_number(self.name, "alpha", alpha)
        self.start_epoch = check_int(self.name, "start_epoch", start_epoch, low=0)
        if end_epoch is not None:
            check_int(self.name, "end_epoch", end_epoch, low=0)
            if end_epoch < start_epoch:
                raise ConfigError(
                    f"balancer 'ogm_ge': end_epoch ({end_epoch}) is before start_epoch ({start_epoch}); "
                    "set balancer.end_epoch >= balancer.start_epoch"
                )
        self.end_epoch = end_epoch
        if not isinstance(ge, bool):
            raise ConfigError(f"balancer 'ogm_ge': ge must be true or false, got {ge!r}; set balancer.ge")
        self.ge = ge
        self._coeffs = dict.fromkeys(self.modalities, 1.0)
        self._ratios = dict.fromkeys(self.modalities, 1.0)
        self._warned = False

    def active(self, epoch: int) -> bool:
        """Whether modulation runs in ``epoch`` (``start_epoch <= epoch <= end_epoch``)."""
        end = math.inf if self.end_epoch is None else self.end_epoch
        return self.start_epoch <= epoch <= end

    def coefficients(self, scores: Mapping[str, Tensor]) -> tuple[dict[str, float], dict[str, float]]:
        """``(k_m, ρ_m)`` per modality from scores ``{m: s_m}`` (scalars)."""
        ratios, coeffs = {}, {}
        for m, s in scores.items():
            others = torch.stack([v for j, v in scores.items() if j != m]).mean()
            rho = float(s / others.clamp_min(1e-12))
            ratios[m] = rho
            coeffs[m] = 1.0 - math.tanh(self.alpha * rho) if rho > 1.0 else 1.0
        return coeffs, ratios

    def after_backward(self, ctx: StepContext) -> None:
        """Scale each tower's gradients by ``k_m`` (and add GE noise) inside the epoch window."""
        scores = self._scores(ctx.output, ctx.batch)
        self._coeffs = dict.fromkeys(self.modalities, 1.0)
        if len(scores) < 2:
            return
        coeffs, ratios = self.coefficients(scores)
        self._ratios.update(ratios)
        if not self.active(ctx.epoch):
            return
        self._coeffs.update(coeffs)
        with torch.no_grad():
            for m, k in coeffs.items():
                for p in ctx.model.tower_parameters(m):
                    if p.grad is None:
                        continue
                    std = p.grad.std() if p.grad.numel() > 1 else p.grad.new_zeros(())
                    p.grad.mul_(k)
                    if self.ge:
                        p.grad.add_(torch.randn_like(p.grad) * std)

    def _scores(self, output: Any, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``{m: s_m}`` for the modalities present in ``output``."""
        if "label" not in batch:
            raise ConfigError("balancer 'ogm_ge' needs batch['label'] (int64 [B]) to score each modality")
        source = output.contributions
        if source is None:
            if not self._warned:
                warnings.warn(
                    "balancer 'ogm_ge': output.contributions is None (head not a linear layer over concat "
                    "fusion); scoring modalities with their auxiliary heads' logits instead",
                    stacklevel=3,
                )
                self._warned = True
            source = output.modality_logits
        present = [m for m in self.modalities if m in source]
        labels = batch["label"].reshape(-1, 1)
        keep = torch.ones(labels.shape[0], dtype=torch.bool, device=labels.device)
        for m in present:
            mask = batch.get(f"{m}_mask")
            if mask is not None:
                keep &= mask.to(device=keep.device, dtype=torch.bool)
        scores = {}
        for m in present:
            probs = torch.softmax(source[m].detach().float(), dim=-1)
            scores[m] = probs.gather(1, labels.to(probs.device)).squeeze(1)[keep.to(probs.device)].sum()
        return scores

    def weights(self) -> dict[str, float]:
        """Static weights plus the applied ``k/<m>`` and the last ``rho/<m>`` per modality."""
        out = super().weights()
        out.update({f"k/{m}": self._coeffs[m] for m in self.modalities})
        out.update({f"rho/{m}": self._ratios[m] for m in self.modalities})
        return out
