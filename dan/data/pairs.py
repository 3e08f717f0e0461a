"""Pairs and triplets for metric learning, drawn deterministically inside one labelled split."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from dan.errors import DataFormatError


def _pools(labels: Tensor) -> dict[int, Tensor]:
    return {int(c): (labels == c).nonzero().squeeze(1) for c in torch.unique(labels)}


def _class_name(c: int, class_names: Sequence[str] | None) -> str:
    return f"{c} ({class_names[c]!r})" if class_names is not None and 0 <= c < len(class_names) else str(c)


def _need_two(pools: dict[int, Tensor], what: str, class_names: Sequence[str] | None = None) -> None:
    single = [c for c, p in pools.items() if len(p) < 2]
    if single:
        raise DataFormatError(
            f"{what}: class {_class_name(single[0], class_names)} has a single sample, so it has no positive "
            "partner; add samples of that class or drop it"
        )
    if len(pools) < 2:
        only = _class_name(next(iter(pools)), class_names)
        raise DataFormatError(f"{what}: only one class ({only}); negatives need at least two classes")


def require_positives(labels: Tensor, what: str, class_names: Sequence[str] | None = None) -> None:
    """DataFormatError naming the first class of ``labels [N]`` with fewer than two samples (no positive
    partner), or when there is only one class (no negatives)."""
    _need_two(_pools(labels), what, class_names)


def balanced_pairs(
    labels: Tensor,
    num_pairs: int,
    generator: torch.Generator,
    what: str = "pairs",
    class_names: Sequence[str] | None = None,
) -> tuple[Tensor, Tensor]:
    """Half same-class, half different-class pairs of items of one collection.

    Args:
        labels: ``[N]`` int64 classes.
        class_names: names of the classes, quoted in errors (e.g. folder names).
    Returns:
        ``pairs [P, 2]`` int64 item indices (never an item with itself) and ``same [P]`` float (1 = same class).
    """
    pools = _pools(labels)
    _need_two(pools, what, class_names)
    n_pos = num_pairs // 2
    anchors = torch.randint(len(labels), (num_pairs,), generator=generator)
    partner = torch.empty_like(anchors)
    for i in range(num_pairs):
        a = int(anchors[i])
        c = int(labels[a])
        if i < n_pos:
            pool = pools[c]
            j = int(pool[torch.randint(len(pool) - 1, (1,), generator=generator)])
            partner[i] = j if j != a else int(pool[-1])
        else:
            others = [k for k in pools if k != c]
            k = others[int(torch.randint(len(others), (1,), generator=generator))]
            pool = pools[k]
            partner[i] = int(pool[torch.randint(len(pool), (1,), generator=generator)])
    same = torch.zeros(num_pairs)
    same[:n_pos] = 1.0
    order = torch.randperm(num_pairs, generator=generator)
    return torch.stack([anchors, partner], 1)[order], same[order]


def triplets(
    labels: Tensor,
    num_triplets: int,
    generator: torch.Generator,
    what: str = "triplets",
    class_names: Sequence[str] | None = None,
) -> Tensor:
    """``[T, 3]`` (anchor, positive, negative) item indices; positive != anchor, negative of another class."""
    pairs, same = balanced_pairs(labels, 2 * num_triplets, generator, what, class_names)
    pos = pairs[same == 1][:num_triplets]
    neg_pools = _pools(labels)
    negs = torch.empty(len(pos), dtype=torch.long)
    for i, a in enumerate(pos[:, 0].tolist()):
        others = [k for k in neg_pools if k != int(labels[a])]
        pool = neg_pools[others[int(torch.randint(len(others), (1,), generator=generator))]]
        negs[i] = pool[torch.randint(len(pool), (1,), generator=generator)]
    return torch.cat([pos, negs[:, None]], 1)


def cross_modal_pairs(
    left_labels: Tensor,
    right_labels: Tensor,
    num_pairs: int,
    generator: torch.Generator,
    what: str = "cross-modal pairs",
) -> tuple[Tensor, Tensor]:
    """Half same-digit, half different-digit pairs of (left item, right item) from two collections.

    Returns:
        ``pairs [P, 2]`` (left index, right index) and ``same [P]`` float.
    """
    right_pools = _pools(right_labels)
    missing = sorted(set(torch.unique(left_labels).tolist()) - set(right_pools))
    if missing:
        raise DataFormatError(
            f"{what}: class {missing[0]} has no item in the second modality; widen that split"
        )
    n_pos = num_pairs // 2
    left = torch.randint(len(left_labels), (num_pairs,), generator=generator)
    right = torch.empty_like(left)
    for i in range(num_pairs):
        c = int(left_labels[left[i]])
        choices = [c] if i < n_pos else [k for k in right_pools if k != c]
        k = choices[int(torch.randint(len(choices), (1,), generator=generator))]
        pool = right_pools[k]
        right[i] = pool[torch.randint(len(pool), (1,), generator=generator)]
    same = torch.zeros(num_pairs)
    same[:n_pos] = 1.0
    order = torch.randperm(num_pairs, generator=generator)
    return torch.stack([left, right], 1)[order], same[order]


class PairBatches:
    """Balanced same/different pairs of one modality of ``split``, drawn afresh every epoch (seeded by
    ``(seed, epoch)``), in batches ``{m: [B, ...], f"{m}_b": [B, ...], "same": [B] float}``; under DDP each
    rank takes every ``world_size``-th pair. Iterates like :class:`~dan.data.TensorBatchLoader`."""

    def __init__(
        self,
        split: Any,
        modality: str,
        num_pairs: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.split, self.modality, self.num_pairs = split, modality, num_pairs
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's pairs; skip the first ``start_batch`` batches (a resumed run saw them)."""
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return (self.num_pairs // self.world_size) // self.batch_size

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        from dan.data.pairing import split_generator

        g = split_generator(self.seed, f"train-pairs-{self.epoch}")
        pairs, same = balanced_pairs(self.split.labels, self.num_pairs, g, "train pairs", self.split.preprocessing.get("classes"))
        pairs, same = pairs[self.rank :: self.world_size], same[self.rank :: self.world_size]
        m, bs = self.modality, self.batch_size
        for b in range(self.start_batch, len(self)):
            p = pairs[b * bs : (b + 1) * bs]
            yield {m: self.split.batch(p[:, 0])[m], f"{m}_b": self.split.batch(p[:, 1])[m], "same": same[b * bs : (b + 1) * bs]}
        self.start_batch = 0
