"""The ``TOWERS`` registry: modality name-agnostic builders of ``raw input -> tokens [B, N, D]``.

A tower is an ``nn.Module`` whose ``forward(x)`` returns tokens ``[B, N, D]`` and which exposes the
token width ``D`` as the attribute ``out_dim``. Register one with ``@register_tower("name")`` (from any
package), or from an installed package through the entry-point group ``dan.towers``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from dan.errors import ConfigError, DataFormatError
from dan.registry import Registry

TOWERS: Registry[nn.Module] = Registry("towers")


def register_tower(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a tower class or factory as ``name`` in :data:`TOWERS`."""
    return TOWERS.register(name)


def build_tower(name: str, /, **kwargs: Any) -> nn.Module:
    """Build the tower registered as ``name``; unknown names or bad kwargs raise ConfigError."""
    return TOWERS.build(name, **kwargs)


def check_input(
    tower: str, x: Tensor, layout: str, ndim: int, channels: Sequence[tuple[int, int]] = ()
) -> None:
    """Raise DataFormatError unless ``x`` has ``ndim`` dims and ``x.shape[axis] == size`` per ``channels``.

    ``layout`` is the expected shape in words (``"[B, 1, H, W]"``), quoted in the message.
    """
    ok = x.dim() == ndim and all(x.shape[axis] == size for axis, size in channels)
    if not ok:
        raise DataFormatError(
            f"tower {tower!r} expects input {layout}, got shape {tuple(x.shape)}; "
            "check the batch key feeding this tower and the tower's config (e.g. n_mels, in_channels)"
        )


def positive_ints(tower: str, key: str, values: Sequence[int]) -> tuple[int, ...]:
    """``values`` as a tuple of ints; ConfigError naming ``key`` unless non-empty and all >= 1."""
    values = tuple(int(v) for v in values)
    if not values or any(v < 1 for v in values):
        raise ConfigError(
            f"tower {tower!r}: {key} must be a non-empty list of positive ints, got {values!r}; fix model.towers.<m>.{key}"
        )
    return values
