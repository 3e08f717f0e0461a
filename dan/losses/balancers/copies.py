"""Copies of the model trained on one head's loss alone, for balancers that need separately trained models
(gradient blending's per-head estimates, UMT's unimodal teachers), and the loop that trains them
(``train_model``, also ReconBoost's boosting phase on the model itself)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from dan.batch import only_modalities
from dan.engine.distributed import average_buffers, average_gradients
from dan.errors import ConfigError
from dan.losses.balancers.base import FUSED
from dan.losses.balancers.context import Batch, EpochContext
from dan.losses.masked import masked_cross_entropy


def head_loss(output: Any, labels: Tensor, head: str) -> Tensor:
    """Scalar loss of one head: the fused head's cross-entropy, or modality ``head``'s auxiliary loss over
    the samples where it was present."""
    if head == FUSED:
        return F.cross_entropy(output.logits.float(), labels)
    return masked_cross_entropy(output.modality_logits[head], labels, output.presence(head))


def train_copy(
    ctx: EpochContext,
    batches: Iterable[Batch],
    head: str,
    epochs: int,
    *,
    inputs: Sequence[str] | None = None,
) -> nn.Module:
    """A deep copy of ``ctx.model`` trained for ``epochs`` passes over ``batches`` on ``head``'s loss alone,
    with a fresh optimizer (``ctx.new_optimizer``); ``inputs`` limits the modalities it is given (the samples
    left without any are skipped). Under DDP the copy trains data-parallel (gradients averaged every step,
    running statistics averaged at the end), so every rank ends with the same copy."""
    model = copy.deepcopy(ctx.model)
    train_model(ctx, model, batches, lambda out, batch: head_loss(out, batch["label"], head), epochs, inputs=inputs)
    return model


def train_model(
    ctx: EpochContext,
    model: nn.Module,
    batches: Iterable[Batch],
    loss_fn: Callable[[Any, Batch], Tensor],
    epochs: int,
    *,
    inputs: Sequence[str] | None = None,
    params: Sequence[nn.Parameter] | None = None,
    lr: float | None = None,
) -> None:
    """Train ``model`` (unwrapped) in place for ``epochs`` passes over ``batches`` on the scalar
    ``loss_fn(model(batch), batch)``, with a fresh optimizer (``ctx.new_optimizer``) over its parameters (a
    parameter the loss never reaches keeps its value: the optimizer skips it); ``inputs`` limits the
    modalities it is given; ``lr`` replaces the optimizer's base learning rate. Under DDP gradients are
    averaged every step and running statistics at the end, so every rank ends with the same model."""
    if ctx.new_optimizer is None:
        raise ConfigError("training a copy of the model needs EpochContext.new_optimizer (the trainer gives it)")
    trained = list(model.parameters() if params is None else params)
    opt = ctx.new_optimizer(trained)
    if lr is not None:
        for group in opt.param_groups:
            group["lr"] = lr
    modalities = list(getattr(model, "modalities", []))
    model.train()
    for epoch in range(epochs):
        if hasattr(batches, "set_epoch"):
            batches.set_epoch(ctx.epoch + epoch)
        for raw in batches:
            batch = ctx.prepare(raw)
            if inputs is not None:
                batch = only_modalities(dict(batch), set(inputs), modalities)
            loss = loss_fn(model(batch), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients(trained)
            opt.step()
    average_buffers(model)
