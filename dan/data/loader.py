"""Batching on the tensor side: whole splits live in memory, a batch is one gather, no per-item Python."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import replace

import torch
from torch import Tensor

from dan.data.dataset import AVSplit
from dan.errors import ConfigError, DataFormatError

NONFINITE_MODES = ("stop", "skip")


class TensorBatchLoader:
    """Iterates an :class:`AVSplit` in batches of ``{"image", "audio", "label", "index"}`` tensors.

    Shuffling is seeded by ``(seed, epoch)``, so an epoch's order is known without running it; that is what
    lets a resumed run skip the batches it already saw. Under DDP each rank takes every ``world_size``-th
    sample of the (padded) permutation, as ``DistributedSampler`` does.
    """

    def __init__(
        self,
        split: AVSplit,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside world_size {world_size}")
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's order; ``start_batch`` skips the batches a resumed run already trained on."""
        self.epoch = epoch
        self.start_batch = start_batch

    def indices(self) -> Tensor:
        """This rank's sample order for the current epoch, ``[n]`` int64."""
        n = len(self.split)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            per_rank = -(-n // self.world_size)
            pad = per_rank * self.world_size - n
            if pad:
                order = torch.cat([order, order[:pad]])
            order = order[self.rank :: self.world_size]
        return order

    def __len__(self) -> int:
        n = len(self.indices()) if self.world_size > 1 else len(self.split)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        order = self.indices()
        for b in range(self.start_batch, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield gather(self.split, idx)
        self.start_batch = 0


def _describe(split: AVSplit, i: int) -> str:
    row = split.pairs[i].tolist() if 0 <= i < len(split) else "?"
    return f"sample {i} of split {split.name!r} (pair rows image/audio {row})"


def gather(split: AVSplit, idx: Tensor) -> dict[str, Tensor]:
    """``split.batch(idx)``; a failure raises DataFormatError naming the first sample at fault (its index and
    pair rows) instead of a bare indexing error. ``idx [B]`` int64."""
    try:
        return split.batch(idx)
    except (IndexError, RuntimeError) as exc:
        for i in idx.tolist():
            try:
                split.batch(torch.tensor([i]))
            except (IndexError, RuntimeError) as one:
                raise DataFormatError(
                    f"could not load {_describe(split, i)}: {one}; the pair table does not fit the data: "
                    "delete the dataset cache (DAN_CACHE) and rebuild it"
                ) from exc
        raise


def nonfinite_samples(split: AVSplit) -> Tensor:
    """Indices ``[K]`` of the samples whose image or audio holds NaN or Inf (sorted)."""
    bad_rows = {m: ~torch.isfinite(getattr(split, m).flatten(1)).all(dim=1) for m in ("images", "audio")}
    bad = bad_rows["images"][split.pairs[:, 0]] | bad_rows["audio"][split.pairs[:, 1]]
    return bad.nonzero().flatten()


def check_finite_inputs(split: AVSplit, mode: str = "stop") -> AVSplit:
    """``split`` unchanged when every input is finite. Otherwise the samples holding NaN/Inf are named, then
    ``mode="stop"`` raises DataFormatError and ``mode="skip"`` warns and returns the split without them."""
    if mode not in NONFINITE_MODES:
        raise ConfigError(
            f"train.nonfinite_inputs={mode!r} is not valid; valid choices: {', '.join(NONFINITE_MODES)}"
        )
    bad = nonfinite_samples(split)
    if not len(bad):
        return split
    shown = "; ".join(_describe(split, i) for i in bad[:5].tolist()) + (" ..." if len(bad) > 5 else "")
    what = f"{len(bad)} of {len(split)} samples hold NaN or Inf inputs: {shown}"
    if mode == "stop":
        raise DataFormatError(f"{what}; fix the data, or set train.nonfinite_inputs=skip to drop them")
    if len(bad) == len(split):
        raise DataFormatError(f"{what}; every sample of split {split.name!r} would be skipped: fix the data")
    warnings.warn(f"skipped {what}", stacklevel=2)
    keep = torch.ones(len(split), dtype=torch.bool)
    keep[bad] = False
    return replace(split, pairs=split.pairs[keep], labels=split.labels[keep])
