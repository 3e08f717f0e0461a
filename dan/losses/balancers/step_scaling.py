"""Scaling a modality's update rather than its gradient, for gradient-modulating methods under optimizers
that normalise gradients (Adam divides each gradient by its running RMS, so a constant factor on it is
cancelled): the weights are saved before ``optimizer.step()`` and moved back to ``before + k (after -
before)`` after it, so they move ``k`` times as far as the optimizer asked, whatever the optimizer."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from dan.errors import ConfigError

MODULATE = ("auto", "gradient", "update")


def check_modulate(name: str, modulate: str) -> str:
    """``modulate`` if one of :data:`MODULATE`, else a ConfigError naming ``balancer.modulate``."""
    if modulate not in MODULATE:
        raise ConfigError(
            f"balancer {name!r}: modulate={modulate!r} is not valid; set balancer.modulate to one of "
            f"{', '.join(MODULATE)}"
        )
    return modulate


def scales_updates(modulate: str, optimizer: torch.optim.Optimizer | None) -> bool:
    """Whether ``modulate`` scales the optimizer's step (True) or the gradient (False) under ``optimizer``:
    ``auto`` scales the gradient under SGD (as the papers do) and the step under any other optimizer."""
    if modulate != "auto":
        return modulate == "update"
    return optimizer is not None and not isinstance(optimizer, torch.optim.SGD)


class StepScaler:
    """Weights saved before a step with their factors (:meth:`save`), scaled after it (:meth:`apply`)."""

    def __init__(self) -> None:
        self._saved: list[tuple[nn.Parameter, Tensor, float]] = []

    def save(self, params: Iterable[nn.Parameter], k: float) -> None:
        """Keep ``params``' values to scale their coming update by ``k`` (nothing for ``k == 1``)."""
        if k != 1.0:
            self._saved.extend((p, p.detach().clone(), k) for p in params)

    @torch.no_grad()
    def apply(self) -> None:
        """Move each saved weight to ``before + k (after - before)``; forget them."""
        for p, before, k in self._saved:
            p.copy_(torch.lerp(before, p.detach(), k))
        self._saved = []

    def clear(self) -> None:
        """Forget the saved weights (a step that will not be scaled)."""
        self._saved = []
