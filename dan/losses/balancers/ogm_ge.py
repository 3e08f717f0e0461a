"""``ogm_ge``: on-the-fly gradient modulation with generalisation enhancement (Peng et al., CVPR 2022).

Reference: the paper, Eq. 9-10, and the authors' ``main.py`` (GeWu-Lab/OGM-GE_CVPR2022, ``train_epoch``).
As there, the towers learn from the fused loss alone, and after ``backward``, from the batch's labels ``y``
and each modality's share of the fused logits ``W_m φ_m + b/M`` (``output.contributions``):

- ``s_m = Σ_i softmax(W_m φ_m(x_i) + b/M)[y_i]`` over the samples where every scored modality was present
  (``output.present``: the batch's masks *and* modality dropout);
- ``ρ_m = s_m / mean_{j≠m} s_j`` (for two modalities ``s_m / s_other``, as in the reference);
- ``k_m = 1 - tanh(α ρ_m)`` where ``ρ_m > 1``, else 1;

and, from ``start_epoch`` to ``end_epoch`` (both inclusive, as in the reference), the weight of every
convolution and linear layer of modality ``m``'s tower and projection is modulated by ``k_m``, and with GE
gets ``N(0, (std(g) + 1e-8)²)`` noise, ``std(g)`` over that weight's own gradient, on every modality's tower
(the unmodulated one included, as in the reference).

Where ``dan`` differs from the reference, and why:

- **Which parameters.** The reference scales the 4-D gradients of its ResNet-18 encoders, i.e. every
  convolution weight; their biases and BatchNorm are left alone. ``dan``'s towers also have linear layers
  (a flatten readout, the projection to the trunk width): their weights are encoder weights in the same
  sense and are modulated too; biases, norms and position embeddings are left alone, as there.
- **Under Adam.** The reference trains with SGD (momentum 0.9). Adam divides each gradient by its running
  RMS, so a constant factor on the gradient is cancelled (measured: a tower modulated by ``k`` moved 0.89x
  its unmodulated distance under AdamW, 0.34x under SGD). ``modulate: auto`` (the default) scales the
  gradient under SGD, exactly as the reference, and under any other optimizer scales the *step* instead:
  the tower's weights are saved before ``optimizer.step()`` and moved back to ``before + k (after -
  before)``, so the modulated tower moves ``k`` times as far as the optimizer asked, whatever the
  optimizer. ``modulate: gradient`` or ``update`` forces one.
- **Auxiliary heads.** The reference backpropagates the fused loss only (its per-modality losses are
  printed, never trained). ``dan``'s auxiliary heads, which report each modality's accuracy, are trained on
  *detached* features, so they learn without sending a gradient into the towers or the trunk.
- **DDP.** The reference uses ``DataParallel``, whose scores cover the whole batch. Under DDP each rank
  sums its shard's scores and the sums are all-reduced, so every rank computes the same ``k`` from the
  global batch and applies it to the same averaged gradients; the GE noise is drawn from a generator
  seeded with the balancer's ``noise_seed`` (drawn once from torch's seeded RNG, checkpointed) and the
  step, so it is identical on every rank.
- **Any fusion.** The scores need the fused head to decompose per modality: ``concat`` or ``sum`` fusion
  with a linear head (the reference's ``concat`` and ``sum``). For ``attention``, ``gated`` and ``film``
  fusion, or an MLP head, no such decomposition exists (the reference's code for ``gated``/``film`` splits
  a weight that is not per modality); ``dan`` then scores with the auxiliary heads' logits, which is *not*
  the paper's quantity, and warns once.
- **More than two modalities.** ``ρ_m`` compares with the mean score of the others (the reference has two).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dan.errors import ConfigError
from dan.losses.balancers.base import Balancer, check_number, fused_objective, register_balancer
from dan.losses.balancers.context import StepContext
from dan.losses.balancers.scores import modality_logits, true_class_scores
from dan.losses.balancers.step_scaling import StepScaler, check_modulate, scales_updates

MODULATED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def modulated_weights(model: nn.Module, m: str) -> list[nn.Parameter]:
    """The weights of every convolution and linear layer of modality ``m``'s tower and projection (what
    OGM-GE scales); biases, norms and embeddings are not included."""
    modules: list[nn.Module] = []
    towers, proj = getattr(model, "towers", None), getattr(model, "proj", None)
    for part in (towers, proj):
        if isinstance(part, nn.ModuleDict) and m in part:
            modules.append(part[m])
    if not modules:  # a model that only exposes tower_parameters
        return [p for p in model.tower_parameters(m) if p.dim() >= 2]
    return [
        layer.weight
        for module in modules
        for layer in module.modules()
        if isinstance(layer, MODULATED_LAYERS) and layer.weight.requires_grad
    ]


@register_balancer("ogm_ge")
class OGMGEBalancer(Balancer):
    """Gradient (or step) modulation of the dominant modality's tower, trained on the fused loss.

    Config: ``alpha`` (>= 0, default 0.8), ``start_epoch`` (default 0), ``end_epoch`` (default 50,
    ``None`` for no end), ``ge`` (add the Gaussian noise, default True), ``modulate`` (``auto``,
    ``gradient`` or ``update``; see the module docstring).
    """

    name = "ogm_ge"

    def __init__(
        self,
        modalities: Sequence[str],
        alpha: float = 0.8,
        start_epoch: int = 0,
        end_epoch: int | None = 50,
        ge: bool = True,
        modulate: str = "auto",
    ) -> None:
        super().__init__(modalities)
        self.alpha = check_number(self.name, "alpha", alpha)
        self.set_window(start_epoch, end_epoch)
        if not isinstance(ge, bool):
            raise ConfigError(f"balancer 'ogm_ge': ge must be true or false, got {ge!r}; set balancer.ge")
        self.ge, self.modulate = ge, check_modulate(self.name, modulate)
        self.register_buffer("noise_seed", torch.randint(0, 2**62, ()))
        self._coeffs = dict.fromkeys(self.modalities, 1.0)
        self._ratios = dict.fromkeys(self.modalities, 1.0)
        self._steps = StepScaler()
        self._warned = False

    def combine(self, fused_loss: Tensor, modality_losses: Mapping[str, Tensor], ctx: StepContext) -> Tensor:
        """``L_f`` plus the auxiliary heads' losses on detached features (scalar): the towers and the trunk
        learn from the fused loss alone."""
        return fused_objective(fused_loss, modality_losses, ctx)

    def coefficients(self, scores: Mapping[str, Tensor]) -> tuple[dict[str, float], dict[str, float]]:
        """``(k_m, ρ_m)`` per modality from scores ``{m: s_m}`` (scalars)."""
        ratios, coeffs = {}, {}
        for m, s in scores.items():
            others = torch.stack([v for j, v in scores.items() if j != m]).mean()
            rho = float(s / others.clamp_min(1e-12))
            ratios[m] = rho
            coeffs[m] = 1.0 - math.tanh(self.alpha * rho) if rho > 1.0 else 1.0
        return coeffs, ratios

    def scales_updates(self, optimizer: torch.optim.Optimizer | None) -> bool:
        """Whether ``k`` scales the optimizer's step (True) or the gradient (False) for ``optimizer``."""
        return scales_updates(self.modulate, optimizer)

    def after_backward(self, ctx: StepContext) -> None:
        """Compute ``k_m``; inside the epoch window scale the gradients (or save the weights to scale the
        step in :meth:`after_step`) and add the GE noise."""
        self._steps.clear()
        scores = self._scores(ctx.output, ctx.batch)
        self._coeffs = dict.fromkeys(self.modalities, 1.0)
        if len(scores) < 2:
            return
        coeffs, ratios = self.coefficients(scores)
        self._ratios.update(ratios)
        if not self.active(ctx.epoch):
            return
        self._coeffs.update(coeffs)
        on_step = self.scales_updates(ctx.optimizer)
        generators: dict[torch.device, torch.Generator] = {}
        with torch.no_grad():
            for m, k in coeffs.items():
                for p in modulated_weights(ctx.model, m):
                    g = p.grad
                    if g is None:
                        continue
                    if self.ge:  # the noise's scale is the gradient's as it came, before k
                        std = (g.std() if g.numel() > 1 else g.new_zeros(())) + 1e-8
                        if g.device not in generators:
                            generators[g.device] = self._noise_generator(g.device, ctx.step)
                        noise = torch.randn(g.shape, generator=generators[g.device], device=g.device, dtype=g.dtype)
                    if not on_step:
                        g.mul_(k)
                    else:
                        self._steps.save([p], k)
                    if self.ge:
                        g.add_(noise * std)

    def _noise_generator(self, device: torch.device, step: int) -> torch.Generator:
        """The GE noise source of optimizer step ``step``: the same on every DDP rank, and on resume."""
        return torch.Generator(device).manual_seed(int(self.noise_seed) + step)

    def after_step(self, ctx: StepContext) -> None:
        """Where the step is modulated: move each saved weight back to ``before + k (after - before)``."""
        self._steps.apply()

    def _scores(self, output: Any, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``{m: s_m}`` summed over every DDP rank, for the modalities present in ``output``."""
        logits, fallback = modality_logits(output)
        if fallback and not self._warned:
            warnings.warn(
                "balancer 'ogm_ge': output.contributions is None (the head does not decompose per "
                "modality: fusion other than concat/sum, or an MLP head); scoring modalities with their "
                "auxiliary heads' logits instead, which is not the paper's quantity",
                stacklevel=3,
            )
            self._warned = True
        return true_class_scores(self.name, logits, output, batch, self.modalities)

    def weights(self) -> dict[str, float]:
        """Every head weighted 1, plus the applied ``k/<m>`` and the last ``rho/<m>`` per modality."""
        out = super().weights()
        out.update({f"k/{m}": self._coeffs[m] for m in self.modalities})
        out.update({f"rho/{m}": self._ratios[m] for m in self.modalities})
        return out
