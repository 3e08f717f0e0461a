"""Seeded, class-consistent pairing of items from two labelled collections."""

from __future__ import annotations

import torch
from torch import Tensor

from dan.errors import ConfigError, DataFormatError

AUDIO_REUSE = ("cycle", "random")


def split_generator(seed: int, name: str) -> torch.Generator:
    """A CPU generator seeded from ``seed`` and a split name, so splits draw independent streams."""
    offset = sum((i + 1) * ord(c) for i, c in enumerate(name))
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + offset)


def pair_by_class(
    left_labels: Tensor,
    right_labels: Tensor,
    pairs_per_item: int,
    generator: torch.Generator,
    reuse: str = "cycle",
    what: str = "split",
) -> Tensor:
    """Pair every left item with ``pairs_per_item`` right items of the same class.

    Args:
        left_labels: ``[N_l]`` int64 classes (e.g. images).
        right_labels: ``[N_r]`` int64 classes (e.g. recordings).
        reuse: ``"cycle"`` walks seeded permutations of each class's right items, so each is used
            equally often; ``"random"`` draws uniformly with replacement.
    Returns:
        ``[N_l * pairs_per_item, 2]`` int64 rows (left index, right index), grouped by left item.
    """
    if pairs_per_item < 1:
        raise ConfigError(f"data.pairs_per_image must be >= 1, got {pairs_per_item}")
    if reuse not in AUDIO_REUSE:
        raise ConfigError(f"data.audio_reuse={reuse!r} is unknown; valid: {', '.join(AUDIO_REUSE)}")
    left_rep = torch.arange(len(left_labels)).repeat_interleave(pairs_per_item)
    right = torch.empty_like(left_rep)
    for cls in torch.unique(left_labels).tolist():
        slots = (left_labels[left_rep] == cls).nonzero().squeeze(1)
        pool = (right_labels == cls).nonzero().squeeze(1)
        if len(pool) == 0:
            raise DataFormatError(
                f"{what}: class {cls} has {int((left_labels == cls).sum())} images but no recordings; "
                "widen the audio split or drop that class"
            )
        if reuse == "cycle":
            rounds = -(-len(slots) // len(pool))
            order = torch.cat([pool[torch.randperm(len(pool), generator=generator)] for _ in range(rounds)])
            right[slots] = order[: len(slots)]
        else:
            right[slots] = pool[torch.randint(len(pool), (len(slots),), generator=generator)]
    return torch.stack([left_rep, right], dim=1)
