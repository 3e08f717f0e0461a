"""What a balancer sees: the step (batch, labels, outputs, model, a way to run more forward passes and
optimizer steps) and the epoch boundary (model, data loaders, a way to measure per-head losses)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

Batch = Mapping[str, Tensor]


@dataclass
class StepContext:
    """One training step, as :meth:`Balancer.combine` and :meth:`Balancer.after_backward` see it.

    Attributes:
        model: the unwrapped model (``tower_parameters(m)``, ``shared_parameters()``, ``aux_heads``).
        batch: the batch on the device, ``{m: [B, ...], f"{m}_mask": bool [B], "label": [B], ...}``.
        output: the model's output on ``batch`` (a :class:`~dan.models.DANOutput`).
        epoch, step: where training is (0-based epoch; optimizer steps so far).
        forward: runs the training model (DDP-wrapped where distributed) on another batch, for methods
            that need extra forward passes (e.g. with a modality masked out).
        optimizer: the model's optimizer, for methods that take extra steps.
        batch_index, batches: the batch's index within this rank's epoch and the epoch's number of batches
            (0 where unknown).
    """

    model: nn.Module
    batch: Batch
    output: Any
    epoch: int = 0
    step: int = 0
    forward: Callable[[Batch], Any] | None = None
    optimizer: torch.optim.Optimizer | None = None
    batch_index: int = 0
    batches: int = 0

    @property
    def labels(self) -> Tensor:
        """``[B]`` int64 labels of the batch."""
        return self.batch["label"]


def _unchanged(batch: Batch) -> Batch:
    return batch


@dataclass
class EpochContext:
    """An epoch boundary, as :meth:`Balancer.on_epoch_start` and :meth:`Balancer.on_epoch_end` see it.

    Attributes:
        epoch: the epoch about to start (``on_epoch_start``) or that just ended (``on_epoch_end``), 0-based.
        model: the unwrapped model; ``forward`` runs the training model on a batch.
        train_losses: per-head mean training loss of the epoch that ended (``fused`` and each modality);
            empty at an epoch's start.
        loaders: ``{"train", "val", "heldout"?: iterable of raw batches}`` (this rank's shard; a fresh
            iteration each time; ``heldout`` where the balancer asked for one with ``needs_heldout``).
        forward: runs the training model (DDP-wrapped where distributed) on a prepared batch.
        prepare: a raw batch of ``loaders`` made into what a training step sees (on the device, augmented).
        measure: ``measure(model, batches)``, each head's mean loss of ``model`` over ``batches``
            (``{"fused": float, m: float}``, eval mode, reduced over DDP ranks).
        optimizer: the model's optimizer.
        new_optimizer: ``new_optimizer(params)``, a fresh optimizer of the recipe's kind and base
            hyper-parameters (no schedule) over ``params``, for methods that train copies of the model.
        device: where batches must go before ``forward``.
    """

    epoch: int
    model: nn.Module
    train_losses: Mapping[str, float] = field(default_factory=dict)
    loaders: Mapping[str, Iterable[Batch]] = field(default_factory=dict)
    forward: Callable[[Batch], Any] | None = None
    prepare: Callable[[Batch], Batch] = _unchanged
    measure: Callable[[nn.Module, Iterable[Batch]], Mapping[str, float]] | None = None
    optimizer: torch.optim.Optimizer | None = None
    new_optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None = None
    device: torch.device = torch.device("cpu")
