import pytest
import torch

from dan.data import TensorBatchLoader
from dan.data.dataset import Split
from dan.errors import ConfigError


def _split(n: int = 23) -> Split:
    return Split(
        name="train",
        items={
            "image": torch.arange(n, dtype=torch.float).view(n, 1, 1, 1).expand(n, 1, 28, 28).clone(),
            "audio": -torch.arange(n, dtype=torch.float).view(n, 1, 1, 1).expand(n, 1, 4, 5).clone(),
        },
        rows={"image": torch.arange(n), "audio": torch.arange(n).flip(0)},
        labels=torch.arange(n) % 10,
        manifest_hash="x",
        preprocessing={},
        source="test",
    )


def test_batches_gather_the_pairs() -> None:
    split = _split()
    batches = list(TensorBatchLoader(split, 5, shuffle=False))
    assert [len(b["label"]) for b in batches] == [5, 5, 5, 5, 3]
    b = batches[1]
    assert b["image"][:, 0, 0, 0].tolist() == [5, 6, 7, 8, 9]
    assert b["audio"][:, 0, 0, 0].tolist() == [-17, -16, -15, -14, -13]
    assert b["label"].tolist() == [5, 6, 7, 8, 9]


def test_shuffle_is_seeded_per_epoch_and_covers_all() -> None:
    loader = TensorBatchLoader(_split(), 4, seed=3)
    e0 = torch.cat([b["index"] for b in loader])
    assert sorted(e0.tolist()) == list(range(23))
    assert torch.equal(e0, torch.cat([b["index"] for b in TensorBatchLoader(_split(), 4, seed=3)]))
    loader.set_epoch(1)
    assert not torch.equal(e0, torch.cat([b["index"] for b in loader]))


def test_resume_skips_seen_batches() -> None:
    full = [b["index"] for b in TensorBatchLoader(_split(), 4, seed=1)]
    loader = TensorBatchLoader(_split(), 4, seed=1)
    loader.set_epoch(0, start_batch=2)
    rest = [b["index"] for b in loader]
    assert len(rest) == len(full) - 2 and all(torch.equal(a, b) for a, b in zip(rest, full[2:], strict=True))


def test_ranks_partition_the_epoch() -> None:
    split = _split(22)
    seen = [torch.cat([b["index"] for b in TensorBatchLoader(split, 4, seed=0, rank=r, world_size=2)]) for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 11
    assert sorted(torch.cat(seen).tolist()) == list(range(22))


def test_drop_last_and_bad_batch_size() -> None:
    assert len(TensorBatchLoader(_split(), 5, drop_last=True)) == 4
    with pytest.raises(ConfigError, match="batch_size"):
        TensorBatchLoader(_split(), 0)
