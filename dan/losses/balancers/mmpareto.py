"""``mmpareto``: MMPareto, boosting multimodal learning with innocent unimodal assistance (Wei & Hu,
ICML 2024).

Reference read: GeWu-Lab/MMPareto_ICML2024 ``code/MMPareto.py`` (``train_epoch``) and
``code/min_norm_solvers.py``; BalanceBenchmark's ``MMPareto_trainer.py`` ports it.

The model trains on ``L_f + Σ_m L_m``. For each modality's encoder ``θ_m`` (``model.tower_parameters(m)``:
the tower and its projection) the gradients of the fused loss ``g_f = ∇_θm L_f`` and of the modality's own
loss ``g_m = ∇_θm L_m`` are compared over the whole encoder:

- ``cos(g_f, g_m) > 0``: ``k = (½, ½)``;
- otherwise the two-task MGDA min-norm weights ``k = (γ, 1 - γ)``, ``γ = (g_m·g_m - g_f·g_m) /
  ‖g_f - g_m‖²`` (0.999 where ``g_f·g_m >= g_f·g_f``, 0.001 where ``g_f·g_m >= g_m·g_m``, as the
  reference's ``_min_norm_element_from2``).

Then, per parameter tensor ``p`` of ``θ_m``, ``new = 2 k_1 g_f + 2 k_2 g_m`` and
``p.grad = γ_boost · max(1, ‖p.grad‖ / ‖new‖) · new``, where ``p.grad`` was the plain gradient of the summed
loss (``g_f + g_m``): the Pareto direction, at least the summed gradient's magnitude, boosted by
``gamma`` (1.5 in the reference). Every other parameter (trunk, fusion, heads) keeps the gradient of the
summed loss, as the reference's heads do.

Where dan differs, and why:

- Any number of modalities: each encoder is treated alone against the fused loss, as the reference
  treats audio and visual; missing modalities leave ``L_m`` averaged over the samples present.
- The shared trunk (the reference has none) is not an encoder of one modality; it keeps the summed
  gradient.
- ``‖new‖ = 0`` leaves ``p.grad = 0`` (the reference divides by it).
- DDP: ``g_f`` and ``g_m`` are averaged over ranks before the cosine and the weights, so every rank
  takes the same ``k`` and writes the same gradients (``p.grad`` is already averaged by DDP).
- Optimizer: the paper trains with SGD (momentum 0.9). Under Adam the ``gamma`` magnitude boost is
  cancelled by Adam's normalisation; the conflict-free direction is not. To train as the paper does, set
  ``optimizer.name=sgd optimizer.momentum=0.9``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dan.engine.distributed import all_reduce_sum, current_world
from dan.losses.balancers.base import Balancer, check_number, register_balancer, stack_losses
from dan.losses.balancers.context import StepContext


def pareto_weights(g_fused: Tensor, g_own: Tensor) -> tuple[float, float]:
    """``(k_fused, k_own)`` of one encoder from its flattened gradients ``[P]``: ``(½, ½)`` when they agree
    (cosine > 0), else the min-norm point of their convex hull (MGDA for two tasks)."""
    if F.cosine_similarity(g_fused, g_own, dim=0) > 0:
        return 0.5, 0.5
    v11, v12, v22 = float(g_fused @ g_fused), float(g_fused @ g_own), float(g_own @ g_own)
    if v12 >= v11:
        gamma = 0.999
    elif v12 >= v22:
        gamma = 0.001
    else:
        gamma = (v22 - v12) / (v11 + v22 - 2 * v12)
    return gamma, 1.0 - gamma


def _flat(grads: Sequence[Tensor | None], params: Sequence[nn.Parameter]) -> Tensor:
    return torch.cat(
        [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params, strict=True)]
    )


@register_balancer("mmpareto")
class MMParetoBalancer(Balancer):
    """Pareto integration of the fused and unimodal gradients on each encoder.

    Config: ``gamma`` (magnitude boost, default 1.5 as the reference, > 0).
    """

    name = "mmpareto"
    soft_targets = True

    def __init__(self, modalities: Sequence[str], gamma: float = 1.5) -> None:
        super().__init__(modalities)
        self.gamma = check_number(self.name, "gamma", gamma, strict=True)
        self._pending: dict[str, tuple[list[nn.Parameter], Tensor, Tensor]] = {}
        self._k = {m: (0.5, 0.5) for m in self.modalities}
        self._cos = dict.fromkeys(self.modalities, 0.0)

    def combine(self, fused_loss: Tensor, modality_losses: Mapping[str, Tensor], ctx: StepContext) -> Tensor:
        """``L_f + Σ_m L_m`` (scalar); in training also takes ``∇_θm L_f`` and ``∇_θm L_m`` per encoder."""
        _, losses = stack_losses(self, fused_loss, modality_losses)
        self._pending = {}
        if self.training and torch.is_grad_enabled() and losses.requires_grad:
            for m, own in modality_losses.items():
                params = [p for p in ctx.model.tower_parameters(m) if p.requires_grad]
                if not params:
                    continue
                g_f = torch.autograd.grad(fused_loss, params, retain_graph=True, allow_unused=True)
                g_m = torch.autograd.grad(own, params, retain_graph=True, allow_unused=True)
                both = all_reduce_sum(torch.stack([_flat(g_f, params), _flat(g_m, params)])) / current_world()[1]
                self._pending[m] = (params, both[0], both[1])
        return losses.sum()

    def after_backward(self, ctx: StepContext) -> None:
        """Replace each encoder's gradient by the boosted Pareto combination."""
        for m, (params, g_f, g_m) in self._pending.items():
            k_f, k_m = pareto_weights(g_f, g_m)
            self._k[m] = (k_f, k_m)
            self._cos[m] = float(F.cosine_similarity(g_f, g_m, dim=0))
            offset = 0
            for p in params:
                n = p.numel()
                if p.grad is not None:
                    new = (2 * k_f * g_f[offset : offset + n] + 2 * k_m * g_m[offset : offset + n]).view_as(p)
                    new_norm = new.norm()
                    scale = p.grad.norm() / new_norm if new_norm > 0 else new_norm.new_ones(())
                    p.grad.copy_(new.to(p.grad) * (self.gamma * torch.clamp(scale, min=1.0)))
                offset += n
        self._pending = {}

    def weights(self) -> dict[str, float]:
        """Every head weighted 1, plus each encoder's ``k_fused/<m>`` and the last ``cos/<m>`` (0 before the
        first step)."""
        out = super().weights()
        out.update({f"k_fused/{m}": self._k[m][0] for m in self.modalities})
        out.update({f"cos/{m}": self._cos[m] for m in self.modalities})
        return out
