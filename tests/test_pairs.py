import pytest
import torch

from dan.data.pairs import balanced_pairs, cross_modal_pairs, triplets
from dan.errors import DataFormatError


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_balanced_pairs() -> None:
    labels = torch.arange(60) % 6
    pairs, same = balanced_pairs(labels, 200, _g())
    assert pairs.shape == (200, 2) and same.sum() == 100
    assert torch.equal((labels[pairs[:, 0]] == labels[pairs[:, 1]]).float(), same)
    assert (pairs[:, 0] != pairs[:, 1]).all()
    p2, s2 = balanced_pairs(labels, 200, _g())
    assert torch.equal(pairs, p2) and torch.equal(same, s2)
    assert not torch.equal(pairs, balanced_pairs(labels, 200, _g(1))[0])


def test_triplets() -> None:
    labels = torch.arange(40) % 4
    t = triplets(labels, 50, _g())
    assert t.shape == (50, 3)
    assert (labels[t[:, 0]] == labels[t[:, 1]]).all() and (t[:, 0] != t[:, 1]).all()
    assert (labels[t[:, 0]] != labels[t[:, 2]]).all()


def test_cross_modal_pairs() -> None:
    left, right = torch.arange(30) % 3, torch.arange(12) % 3
    pairs, same = cross_modal_pairs(left, right, 100, _g())
    assert torch.equal((left[pairs[:, 0]] == right[pairs[:, 1]]).float(), same)
    assert same.mean() == 0.5


def test_single_sample_class_is_named() -> None:
    with pytest.raises(DataFormatError, match="class 7 has a single sample"):
        balanced_pairs(torch.tensor([1, 1, 7]), 4, _g())
    with pytest.raises(DataFormatError, match="class 2 has no item"):
        cross_modal_pairs(torch.tensor([1, 2]), torch.tensor([1, 1]), 4, _g())


def test_class_names_in_errors() -> None:
    from dan.data.pairs import require_positives

    with pytest.raises(DataFormatError, match=r"class 1 \('bob'\) has a single sample"):
        balanced_pairs(torch.tensor([0, 0, 1]), 4, _g(), class_names=["alice", "bob"])
    with pytest.raises(DataFormatError, match=r"train: only one class \(0 \('alice'\)\)"):
        require_positives(torch.tensor([0, 0]), "train", ["alice"])
    require_positives(torch.tensor([0, 0, 1, 1]), "train")
