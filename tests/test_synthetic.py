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


def test_speakers_are_groups_with_their_own_pitch() -> None:
    size = {"name": "synthetic", "n_train": 300, "n_val": 60, "n_test": 60}
    plain = build_data(size)
    spoken = build_data({**size, "speakers": 3})
    train = spoken["train"]
    assert plain["train"].groups is None
    assert torch.equal(train.labels, plain["train"].labels)
    assert torch.equal(train.items["image"], plain["train"].items["image"])  # the same draws, one pitch each
    counts = torch.zeros(3, 10, dtype=torch.long).index_put_((train.groups, train.labels), torch.ones(300, dtype=torch.long), accumulate=True)
    assert counts.eq(10).all()  # every speaker says every digit equally often
    # a speaker's band of pitches is audible: among the three speakers' mean spectra of the same digit, a
    # recording lies closest to its own speaker's
    audio = train.items["audio"].mean(dim=(1, 3))  # [N, n_mels]
    fit, held = torch.arange(300) < 150, torch.arange(300) >= 150
    hits = []
    for d in range(10):
        means = torch.stack([audio[fit & (train.labels == d) & (train.groups == s)].mean(0) for s in range(3)])
        mine = held & (train.labels == d)
        hits.append(torch.cdist(audio[mine], means).argmin(1) == train.groups[mine])
    assert torch.cat(hits).float().mean() > 0.8
    with pytest.raises(ConfigError, match="data.speakers must be >= 0"):
        build_data({**size, "speakers": -1})
