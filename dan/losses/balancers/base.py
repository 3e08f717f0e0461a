"""The ``Balancer`` contract, the ``BALANCERS`` registry and config checks shared by every strategy.

A balancer turns the fused-head loss ``L_f`` and the auxiliary-head losses ``{m: L_m}`` into one
objective (``combine``), may rework gradients between ``backward`` and ``optimizer.step``
(``after_backward``) or the step just taken (``after_step``), may re-estimate its weights at an epoch's
start or end (``on_epoch_start``, ``on_epoch_end``), and reports its
current per-head weights or coefficients for logging (``weights``). ``combine`` and ``after_backward``
get a :class:`StepContext` (batch, labels, outputs, model, extra forward passes, the optimizer);
the epoch hooks an :class:`EpochContext` (model, data loaders, per-head train losses, a loss meter).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dan.errors import ConfigError
from dan.losses.balancers.context import EpochContext, StepContext
from dan.losses.masked import masked_cross_entropy
from dan.registry import Registry

FUSED = "fused"

BALANCERS: Registry[Balancer] = Registry("balancers")


def register_balancer(name: str) -> Callable[[Callable[..., Balancer]], Callable[..., Balancer]]:
    """Decorator: ``@register_balancer("name")`` on a ``Balancer`` subclass."""
    return BALANCERS.register(name)


class Balancer(nn.Module):
    """Base class: static behaviour with every head weighted 1; subclasses override what they change.

    Attributes:
        modalities: sorted modality names.
        heads: ``("fused", *modalities)``, the order of every per-head vector a balancer keeps.
        needs_heldout: True where the epoch hooks need a held-out slice of the training data (``loaders["heldout"]``).
        soft_targets: True where the method sees the labels only through the head losses it is given, so it
            is defined for mixed targets (``train.mixup``); False where it reads the batch's labels itself.
        plain_backward: True where the loss :meth:`combine` returns is backpropagated as it is and no hook
            rewrites the gradients, so a further loss term (``train.adversary``) may be added to it.
    """

    name = "balancer"
    needs_heldout: bool = False
    soft_targets: bool = False
    plain_backward: bool = False
    start_epoch: int = 0
    end_epoch: int | None = None

    def __init__(self, modalities: Sequence[str]) -> None:
        super().__init__()
        self.modalities = check_modalities(self.name, modalities)
        self.heads: tuple[str, ...] = (FUSED, *self.modalities)

    def set_window(self, start_epoch: int, end_epoch: int | None) -> None:
        """Check and keep the epochs a method modulates, ``start_epoch..end_epoch`` inclusive (``None``: no
        end), for :meth:`active`; a ConfigError names the key."""
        self.start_epoch = check_int(self.name, "start_epoch", start_epoch, low=0)
        if end_epoch is not None and check_int(self.name, "end_epoch", end_epoch, low=0) < start_epoch:
            raise ConfigError(
                f"balancer {self.name!r}: end_epoch ({end_epoch}) is before start_epoch ({start_epoch}); "
                "set balancer.end_epoch >= balancer.start_epoch"
            )
        self.end_epoch = end_epoch

    def active(self, epoch: int) -> bool:
        """Whether ``epoch`` lies in the window :meth:`set_window` kept (``start_epoch <= epoch <= end_epoch``)."""
        return self.start_epoch <= epoch and (self.end_epoch is None or epoch <= self.end_epoch)

    def check_model(self, model: nn.Module) -> None:
        """Raise a ConfigError naming the fix where ``model`` lacks what this balancer needs; nothing by
        default. Recipes call it once the model is built."""

    def combine(self, fused_loss: Tensor, modality_losses: Mapping[str, Tensor], ctx: StepContext) -> Tensor:
        """The scalar objective to backward from scalar losses ``L_f`` and ``{m: L_m}`` of step ``ctx``."""
        return stack_losses(self, fused_loss, modality_losses)[1].sum()

    def after_backward(self, ctx: StepContext) -> None:
        """Gradient-side work after ``loss.backward()`` and before ``optimizer.step()``; none by default."""

    def after_step(self, ctx: StepContext) -> None:
        """Work right after ``optimizer.step()`` (e.g. scaling the step just taken); none by default."""

    def on_epoch_start(self, ctx: EpochContext) -> None:
        """Work before an epoch's first step (not when a run resumes inside the epoch); none by default."""

    def on_epoch_end(self, ctx: EpochContext) -> None:
        """Work at the end of an epoch (``ctx``: model, loaders, per-head losses); none by default."""

    def weights(self) -> dict[str, float]:
        """Current per-head weights or coefficients, same keys every call."""
        return dict.fromkeys(self.heads, 1.0)


def stack_losses(
    balancer: Balancer, fused_loss: Tensor, modality_losses: Mapping[str, Tensor]
) -> tuple[list[int], Tensor]:
    """Indices into ``balancer.heads`` of the losses given, and those losses stacked ``[H]``.

    A modality absent from the batch may be absent from ``modality_losses``; a name the balancer was not
    built for is a ConfigError.
    """
    unknown = sorted(set(modality_losses) - set(balancer.modalities))
    if unknown:
        raise ConfigError(
            f"balancer {balancer.name!r} got losses for unknown modalities {unknown}; it was built for "
            f"{list(balancer.modalities)}: build it with the model's modalities"
        )
    index = [0] + [i for i, m in enumerate(balancer.heads) if m in modality_losses]
    losses = [fused_loss] + [modality_losses[balancer.heads[i]] for i in index[1:]]
    return index, torch.stack([loss.reshape(()) for loss in losses])


def fused_objective(fused_loss: Tensor, modality_losses: Mapping[str, Tensor], ctx: StepContext) -> Tensor:
    """``L_f`` plus each auxiliary head's loss on *detached* features (scalar): the heads still learn (their
    accuracies stay meaningful) while the towers and the trunk learn from the fused loss alone, as methods
    whose reference trains no auxiliary heads (OGM-GE, re-learning) require."""
    heads = getattr(ctx.model, "aux_heads", None)
    loss = fused_loss
    if heads is None or ctx.output is None:
        return loss
    for m in modality_losses:
        logits = heads[m](ctx.output.embeddings[m].detach())
        loss = loss + masked_cross_entropy(logits, ctx.labels, ctx.output.presence(m))
    return loss


def check_modalities(name: str, modalities: Sequence[str]) -> tuple[str, ...]:
    """Sorted, unique, non-empty modality names other than ``fused``."""
    if isinstance(modalities, str) or not modalities:
        raise ConfigError(
            f"balancer {name!r}: modalities must be a non-empty list of names, got {modalities!r}"
        )
    mods = tuple(sorted(str(m) for m in modalities))
    if len(set(mods)) != len(mods) or FUSED in mods:
        raise ConfigError(
            f"balancer {name!r}: modalities {list(mods)} must be unique and must not be named {FUSED!r}"
        )
    return mods


def check_number(name: str, key: str, value: Any, *, low: float = 0.0, strict: bool = False) -> float:
    """``value`` as a float, checked ``>= low`` (``> low`` if ``strict``); a ConfigError names ``key``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"balancer {name!r}: {key} must be a number, got {value!r}") from None
    if number != number or (number <= low if strict else number < low):
        bound = f"> {low:g}" if strict else f">= {low:g}"
        raise ConfigError(f"balancer {name!r}: {key} must be {bound}, got {value!r}; set balancer.{key}")
    return number


def check_int(name: str, key: str, value: Any, *, low: int) -> int:
    """``value`` as an int ``>= low``; a ConfigError names ``key``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(
            f"balancer {name!r}: {key} must be an integer >= {low}, got {value!r}; set balancer.{key}"
        )
    return value


def build_balancer(name_or_cfg: str | Mapping[str, Any], modalities: Sequence[str]) -> Balancer:
    """Build a balancer from its name, or from a mapping (dict or OmegaConf) ``{"name": ..., **config}``."""
    if isinstance(name_or_cfg, str):
        name, config = name_or_cfg, {}
    else:
        try:
            from omegaconf import DictConfig, OmegaConf

            if isinstance(name_or_cfg, DictConfig):
                name_or_cfg = OmegaConf.to_container(name_or_cfg, resolve=True)  # type: ignore[assignment]
        except ImportError:  # pragma: no cover - omegaconf is a dependency
            pass
        if not isinstance(name_or_cfg, Mapping) or "name" not in name_or_cfg:
            raise ConfigError(
                f"balancer config {name_or_cfg!r} has no 'name'; set balancer.name to one of "
                f"{', '.join(BALANCERS.names())}"
            )
        config = {str(k): v for k, v in name_or_cfg.items() if k != "name"}
        name = str(name_or_cfg["name"])
    return BALANCERS.build(name, modalities=modalities, **config)
