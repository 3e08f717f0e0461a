import pytest
import torch

from dan.data.pairing import pair_by_class, split_generator
from dan.errors import ConfigError, DataFormatError


def _labels() -> tuple[torch.Tensor, torch.Tensor]:
    left = torch.arange(100) % 10
    right = torch.arange(37) % 10
    return left, right


@pytest.mark.parametrize("reuse", ["cycle", "random"])
def test_pairs_are_class_consistent_and_seeded(reuse: str) -> None:
    left, right = _labels()
    a = pair_by_class(left, right, 3, split_generator(0, "train"), reuse)
    b = pair_by_class(left, right, 3, split_generator(0, "train"), reuse)
    c = pair_by_class(left, right, 3, split_generator(1, "train"), reuse)
    assert a.shape == (300, 2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(left[a[:, 0]], right[a[:, 1]])
    assert torch.equal(a[:, 0], torch.arange(100).repeat_interleave(3))


def test_cycle_uses_recordings_evenly() -> None:
    left = torch.zeros(40, dtype=torch.long)
    right = torch.zeros(8, dtype=torch.long)
    pairs = pair_by_class(left, right, 1, split_generator(0, "x"), "cycle")
    assert torch.bincount(pairs[:, 1], minlength=8).tolist() == [5] * 8


def test_split_streams_differ() -> None:
    assert torch.randint(1000, (5,), generator=split_generator(0, "train")).tolist() != torch.randint(
        1000, (5,), generator=split_generator(0, "test")
    ).tolist()


def test_class_without_recordings_is_named() -> None:
    with pytest.raises(DataFormatError, match="class 3"):
        pair_by_class(torch.tensor([1, 3]), torch.tensor([1, 1]), 1, split_generator(0, "t"), what="split test")


def test_bad_options() -> None:
    left, right = _labels()
    with pytest.raises(ConfigError, match="pairs_per_image"):
        pair_by_class(left, right, 0, split_generator(0, "t"))
    with pytest.raises(ConfigError, match="audio_reuse"):
        pair_by_class(left, right, 1, split_generator(0, "t"), "sometimes")
