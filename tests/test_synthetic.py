import pytest
import torch

from dan.data import build_data
from dan.data.synthetic import glyphs
from dan.errors import ConfigError


def test_synthetic_is_labelled_deterministic_and_learnable() -> None:
    a = build_data({"name": "synthetic", "n_train": 200, "n_val": 50, "n_test": 50})
    b = build_data({"name": "synthetic", "n_train": 200, "n_val": 50, "n_test": 50})
    assert set(a) == {"train", "val", "test"}
    for name in a:
        assert a[name].source == "synthetic" and "SYNTHETIC" in a[name].info["note"]
        assert torch.equal(a[name].items["image"], b[name].items["image"]) and torch.equal(a[name].items["audio"], b[name].items["audio"])
    assert a["train"].items["image"].shape == (200, 1, 28, 28)
    assert torch.bincount(a["train"].labels).tolist() == [20] * 10
    # nearest class-mean classification of images must beat chance by far: the labels mean something
    tr, te = a["train"], a["test"]
    means = torch.stack([tr.items["image"][tr.labels == c].mean(0).flatten() for c in range(10)])
    pred = torch.cdist(te.items["image"].flatten(1), means).argmin(1)
    assert (pred == te.labels).float().mean() > 0.5
    amean = torch.stack([tr.items["audio"][tr.labels == c].mean(0).flatten() for c in range(10)])
    apred = torch.cdist(te.items["audio"].flatten(1), amean).argmin(1)
    assert (apred == te.labels).float().mean() > 0.5


def test_glyphs_differ() -> None:
    g = glyphs().flatten(1)
    assert torch.cdist(g, g).add(torch.eye(10) * 1e3).min() > 1.0


def test_unknown_key() -> None:
    with pytest.raises(ConfigError, match="data.n_trian"):
        build_data({"name": "synthetic", "n_trian": 5})
    with pytest.raises(ConfigError, match="data.name"):
        build_data({"name": "cifar"})
