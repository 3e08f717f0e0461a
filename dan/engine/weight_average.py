"""An exponential moving average (EMA) of a model's weights, the weights a run validates, checkpoints as
``model`` and tests (``train.ema.decay``; off at 0).

After each optimizer step every floating-point parameter and buffer (BatchNorm's running statistics
included) moves towards the trained model's: ``ema = decay_t * ema + (1 - decay_t) * weight``, where
``decay_t = min(decay, (1 + t) / (10 + t))`` after ``t`` earlier updates with ``warmup`` (the ``num_updates``
rule of TensorFlow's ``ExponentialMovingAverage``, so the average does not stay dominated by the first
steps' weights in a short run) and ``decay_t = decay`` without. Integer buffers (BatchNorm's batch counter)
are copied. The averaging is ``torch.optim.swa_utils.AveragedModel``'s.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from dan.errors import CheckpointError


def _tensors(model: nn.Module) -> list[Tensor]:
    return [t.detach() for t in itertools.chain(model.parameters(), model.buffers())]


class WeightAverage:
    """The EMA of ``model``'s parameters and buffers (see the module docstring); ``updates`` counts
    :meth:`update` calls. Every tensor keeps its shape, dtype and device."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        self.decay, self.warmup, self.updates = float(decay), bool(warmup), 0
        self.averaged = AveragedModel(model, multi_avg_fn=self._lerp, use_buffers=True)

    def current_decay(self) -> float:
        """The decay the next :meth:`update` applies."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def _lerp(self, averaged: list[Tensor], current: list[Tensor], _: Any) -> None:
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - self.current_decay())
        else:
            torch._foreach_copy_(averaged, current)

    def update(self, model: nn.Module) -> None:
        """Move the average one step towards ``model``'s weights (the first call copies them)."""
        self.averaged.update_parameters(model)
        self.updates += 1

    def state_dict(self) -> dict[str, Tensor]:
        """The averaged weights under ``model.state_dict()``'s keys (loadable into the model itself)."""
        return self.averaged.module.state_dict()

    def load_state_dict(self, weights: dict[str, Tensor], updates: int) -> None:
        """Restore the average from :meth:`state_dict` and its ``updates`` count (a resumed run)."""
        self.averaged.module.load_state_dict(weights)
        self.averaged.n_averaged.fill_(updates)
        self.updates = int(updates)

    @contextmanager
    @torch.no_grad()
    def swapped_into(self, model: nn.Module) -> Iterator[None]:
        """Inside the block ``model`` holds the averaged weights; afterwards its own again, exactly."""
        own = [t.clone() for t in _tensors(model)]
        for dst, src in zip(_tensors(model), _tensors(self.averaged.module), strict=True):
            dst.copy_(src)
        try:
            yield
        finally:
            for dst, src in zip(_tensors(model), own, strict=True):
                dst.copy_(src)


def restore_average(average: WeightAverage, state: dict[str, Any], path: str) -> dict[str, Tensor]:
    """The trained (not averaged) weights of a checkpoint written with ``train.ema`` on, after loading its
    average into ``average``; a checkpoint without them cannot continue an averaged run."""
    missing = [k for k in ("train_model", "ema") if k not in state]
    if missing:
        raise CheckpointError(
            f"resume={path}: the checkpoint's config has train.ema.decay={average.decay:g} but it lacks "
            f"{' and '.join(missing)} (dan train writes both with the average), so the trained weights cannot "
            "be told from the averaged ones; start a new run without resume="
        )
    average.load_state_dict(state["model"], int(state["ema"]["updates"]))
    return state["train_model"]
