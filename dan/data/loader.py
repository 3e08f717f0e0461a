"""Batching on the tensor side: whole splits live in memory, a batch is one gather, no per-item Python."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch
from torch import Tensor

from dan.config import NONFINITE_INPUTS
from dan.data.dataset import Split
from dan.errors import ConfigError, DataFormatError


class TensorBatchLoader:
    """Iterates a :class:`Split` in batches of ``{m, f"{m}_mask" per modality, "label", "index"}`` tensors.

    Shuffling is seeded by ``(seed, epoch)``, so an epoch's order is known without running it; that is what
    lets a resumed run skip the batches it already saw. Under DDP each rank takes every ``world_size``-th
    sample of the (padded) permutation, as ``DistributedSampler`` does.
    """

    def __init__(
        self,
        split: Split,
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


def _describe(split: Split, i: int) -> str:
    if not 0 <= i < len(split):
        return f"sample {i} of split {split.name!r}"
    rows = ", ".join(f"{m} row {int(split.rows[m][i])}" for m in split.modalities)
    return f"sample {i} of split {split.name!r} ({rows})"


def gather(split: Split, idx: Tensor) -> dict[str, Tensor]:
    """``split.batch(idx)``; a failure raises DataFormatError naming the first sample at fault (its index and
    storage rows) instead of a bare indexing error. ``idx [B]`` int64."""
    try:
        return split.batch(idx)
    except (IndexError, RuntimeError) as exc:
        for i in idx.tolist():
            try:
                split.batch(torch.tensor([i]))
            except (IndexError, RuntimeError) as one:
                raise DataFormatError(
                    f"could not load {_describe(split, i)}: {one}; the sample table does not fit the data: "
                    "delete the dataset cache (DAN_CACHE) and rebuild it"
                ) from exc
        raise


def nonfinite_samples(split: Split, chunk: int = 8192) -> Tensor:
    """Indices ``[K]`` of the samples any of whose (present) inputs holds NaN or Inf (sorted). Integer
    storage cannot hold either and is not scanned; float storage is scanned ``chunk`` rows at a time."""
    bad = torch.zeros(len(split), dtype=torch.bool)
    for m in split.modalities:
        items = split.items[m]
        if not items.is_floating_point():
            continue
        bad_rows = torch.cat(
            [~torch.isfinite(items[s : s + chunk].flatten(1)).all(dim=1) for s in range(0, items.shape[0], chunk)]
        ) if items.shape[0] else torch.zeros(0, dtype=torch.bool)
        rows = split.rows[m]
        present = rows >= 0
        bad[present] |= bad_rows[rows[present]]
    return bad.nonzero().flatten()


def check_finite_inputs(split: Split, mode: str = "stop") -> Split:
    """``split`` unchanged when every input is finite. Otherwise the samples holding NaN/Inf are named, then
    ``mode="stop"`` raises DataFormatError and ``mode="skip"`` warns and returns the split without them."""
    if mode not in NONFINITE_INPUTS:
        raise ConfigError(
            f"train.nonfinite_inputs={mode!r} is not valid; valid choices: {', '.join(NONFINITE_INPUTS)}"
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
    return split.select(keep.nonzero().flatten())


def check_num_classes(num_classes: int, split: Split, dataset: str) -> None:
    """``model.num_classes`` must equal the data's class count (its ``classes`` list, or the largest label + 1):
    a ConfigError naming both and the value to set."""
    names = list(split.preprocessing.get("classes") or [])
    found = len(names) or (int(split.labels.max()) + 1 if len(split) else 0)
    if found and found != num_classes:
        listed = f" ({', '.join(map(str, names[:12]))}{' ...' if len(names) > 12 else ''})" if names else ""
        raise ConfigError(
            f"model.num_classes={num_classes} but data.name={dataset} has {found} classes{listed}; "
            f"set model.num_classes={found}"
        )
