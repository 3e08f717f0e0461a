"""``gradnorm``: gradient normalisation (Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018).

Every head ``i`` (fused and each modality, ``T`` in all) has a weight ``w_i``; the model is trained on
``Σ_i w_i L_i``. With ``W = model.shared_parameters()`` (the trunk's last layer):

- ``G_i = ‖∇_W (w_i L_i)‖₂``, ``Ḡ = mean_i G_i``;
- ``r_i = L̃_i / mean_j L̃_j`` with ``L̃_i = L_i(t) / L_i(0)`` (``L_i(0)``: the first training loss seen);
- ``L_grad = Σ_i |G_i - stopgrad(Ḡ r_i^α)|`` updates only the ``w_i``, with this balancer's own Adam;
- after that step the ``w_i`` are kept positive and renormalised so that ``Σ_i w_i = T``.

Under DDP every rank computes ``L_i``, ``∇_W L_i`` and so ``G_i``, ``L_i(0)`` and ``L_grad`` from the
global batch (losses and gradients of ``W`` averaged over the ranks), so the weights, their Adam state and
``L_i(0)`` are identical on every rank, as in the paper's single-process training.

Where the computation happens:

- ``combine`` (training, grad enabled) calls ``torch.autograd.grad(L_i, W, retain_graph=True)`` once per
  head, so the main graph survives for the trainer's ``backward``. As ``w_i > 0`` is a scalar,
  ``G_i = w_i ‖∇_W L_i‖₂``, hence ``∂L_grad/∂w_i = sign(G_i - target_i) ‖∇_W L_i‖₂``: first-order
  gradients suffice and no ``create_graph`` (second-order graph through the model) is needed; the result
  equals the create-graph formulation exactly. ``combine`` stores ``∂L_grad/∂w`` and returns
  ``Σ_i w_i.detach() L_i``.
- The ``w_i`` are an ``nn.Parameter`` with ``requires_grad=False``: the main backward never writes their
  ``.grad``, so nothing leaks into their update but ``L_grad``, even when the trainer hands this module's
  parameters to its optimiser (a parameter without a gradient is skipped).
- ``after_backward`` writes the stored gradient, steps the weights' optimiser, clears ``.grad`` and
  renormalises.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dan.engine.distributed import all_reduce_sum
from dan.errors import ConfigError
from dan.losses.balancers.base import Balancer, check_number, register_balancer, stack_losses
from dan.losses.balancers.context import StepContext

_MIN_WEIGHT = 1e-4
_TINY = 1e-12


@register_balancer("gradnorm")
class GradNormBalancer(Balancer):
    """GradNorm over every head; ``loss_weights [T]`` in ``heads`` order.

    Config: ``alpha`` (restoring-force strength, default 1.5, >= 0), ``lr`` (learning rate of the
    weights' Adam, default 0.025, > 0).
    """

    name = "gradnorm"
    soft_targets = True

    def __init__(self, modalities: Sequence[str], alpha: float = 1.5, lr: float = 0.025) -> None:
        super().__init__(modalities)
        self.alpha = check_number(self.name, "alpha", alpha)
        self.lr = check_number(self.name, "lr", lr, strict=True)
        n = len(self.heads)
        self.loss_weights = nn.Parameter(torch.ones(n), requires_grad=False)
        self.register_buffer("initial_losses", torch.full((n,), float("nan")))
        self._optimizer = torch.optim.Adam([self.loss_weights], lr=self.lr)
        self._pending: Tensor | None = None
        self.last_grad_loss = float("nan")

    def combine(self, fused_loss: Tensor, modality_losses: Mapping[str, Tensor], ctx: StepContext) -> Tensor:
        """``Σ_i w_i L_i`` (scalar, no gradient to ``w``); in training also prepares ``∂L_grad/∂w``."""
        index, losses = stack_losses(self, fused_loss, modality_losses)
        weights = self.loss_weights[index].detach().to(losses)
        if self.training and torch.is_grad_enabled() and losses.requires_grad:
            self._pending = self._weight_gradient(index, losses, ctx.model)
        return (weights * losses).sum()

    def _weight_gradient(self, index: list[int], losses: Tensor, model: nn.Module) -> Tensor:
        """``∂L_grad/∂w [T]`` (zero for heads absent from this batch) from losses ``[H]``."""
        shared = [p for p in model.shared_parameters() if p.requires_grad]
        if not shared:
            raise ConfigError(
                "balancer 'gradnorm': model.shared_parameters() is empty or frozen; GradNorm needs the "
                "trunk's last layer trainable (pick another balancer for a model without a shared trunk)"
            )
        idx, detached, norms = self._global(index, losses, shared)
        initial = self.initial_losses[idx]
        unseen = torch.isnan(initial)
        if unseen.any():
            initial = torch.where(unseen, detached.to(initial), initial)
            self.initial_losses[idx] = initial
        ratio = detached / initial.to(detached).clamp_min(_TINY)
        inverse_rate = ratio / ratio.mean().clamp_min(_TINY)
        w = self.loss_weights[idx].detach().to(detached).clone().requires_grad_(True)
        g = w * norms
        target = (g.mean() * inverse_rate**self.alpha).detach()
        grad_loss = (g - target).abs().sum()
        (grad_w,) = torch.autograd.grad(grad_loss, w)
        self.last_grad_loss = float(grad_loss.detach())
        full = torch.zeros_like(self.loss_weights)
        full[idx] = grad_w.to(full)
        return full

    def _global(self, index: list[int], losses: Tensor, shared: list[nn.Parameter]) -> tuple[Tensor, Tensor, Tensor]:
        """The heads present on any rank (indices ``[H']``), their losses ``[H']`` and ``‖∇_W L_i‖₂``
        ``[H']`` on the global batch: losses and ``∇_W L_i`` averaged over the DDP ranks where head ``i``
        had a loss (this rank's own values when not distributed)."""
        n = len(self.heads)
        grads = torch.zeros(n, sum(p.numel() for p in shared), device=losses.device)
        for row, loss in zip(index, losses, strict=True):
            grads[row] = _flat_grad(loss, shared)
        value = torch.zeros(n, device=losses.device)
        value[index] = losses.detach().float()
        seen = torch.zeros(n, device=losses.device)
        seen[index] = 1.0
        total = all_reduce_sum(torch.cat([seen[:, None], value[:, None], grads], 1))
        present = total[:, 0] > 0
        count = total[present, 0:1]
        mean = total[present] / count
        idx = torch.arange(n, device=losses.device)[present].to(self.initial_losses.device)
        return idx, mean[:, 1].to(losses.dtype), mean[:, 2:].norm(dim=1).to(losses.dtype)

    def after_backward(self, ctx: StepContext) -> None:
        """Step the weights on ``∂L_grad/∂w``, keep them positive, renormalise to ``Σ w = T``."""
        if self._pending is None:
            return
        self.loss_weights.grad = self._pending
        self._optimizer.step()
        self.loss_weights.grad = None
        self._pending = None
        with torch.no_grad():
            self.loss_weights.clamp_(min=_MIN_WEIGHT)
            self.loss_weights.mul_(len(self.heads) / self.loss_weights.sum())

    def weights(self) -> dict[str, float]:
        """``w_i`` per head (they sum to ``T``)."""
        return dict(zip(self.heads, self.loss_weights.detach().tolist(), strict=True))

    def get_extra_state(self) -> dict[str, Any]:
        """The weights' optimiser state, so checkpoints resume GradNorm exactly."""
        return {"optimizer": self._optimizer.state_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what ``get_extra_state`` saved."""
        self._optimizer.load_state_dict(state["optimizer"])


def _flat_grad(loss: Tensor, params: list[nn.Parameter]) -> Tensor:
    """``∇_params loss`` flattened ``[P]`` (zeros for parameters it does not reach), keeping the graph for
    the main backward."""
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat(
        [(g.detach() if g is not None else torch.zeros_like(p)).float().reshape(-1) for g, p in zip(grads, params, strict=True)]
    )
