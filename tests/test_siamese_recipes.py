"""Tiny end-to-end runs of the siamese and crossmodal recipes on data the tests write out from the real
MNIST idx files and FSDD recordings (skipped where DAN_DATA is absent), plus their bad-input errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from dan.config import load_config
from dan.data import build_data
from dan.engine.checkpoint import load_checkpoint
from dan.engine.recipes import run_config
from dan.errors import ConfigError, DataFormatError, DataNotFoundError

FAST = ["logger=none", "quiet=true", "train.epochs=1", "train.log_every=1000", "train.num_threads=1"]


def write_mnist_tree(root: Path, data: Path, classes: int = 4, per_class: int = 15, start: int = 0) -> None:
    """``root/digit_<c>/<k>.png``: real MNIST test digits written as PNG files."""
    from dan.data.mnist import load_mnist

    images, labels = load_mnist(data, "test")
    for c in range(classes):
        (root / f"digit_{c}").mkdir(parents=True, exist_ok=True)
        for k, i in enumerate((labels == c).nonzero().squeeze(1)[start : start + per_class].tolist()):
            Image.fromarray(images[i].numpy()).save(root / f"digit_{c}" / f"{k}.png")


def copy_fsdd(
    dest: Path, data: Path, speakers: tuple[str, ...], indices: range, digits: range = range(10)
) -> Path:
    """A small ``dest/fsdd/recordings`` with the named real FSDD files; returns ``dest``."""
    rec = dest / "fsdd" / "recordings"
    rec.mkdir(parents=True)
    for s in speakers:
        for d in digits:
            for i in indices:
                shutil.copy(data / "fsdd" / "recordings" / f"{d}_{s}_{i}.wav", rec)
    return dest


def _run(config: str, tmp_path: Path, *overrides: str) -> dict:
    cfg = load_config(config, [*FAST, f"output_dir={tmp_path / 'runs'}", *overrides])
    summary = run_config(cfg)
    run_dir = tmp_path / "runs" / cfg.run_name
    saved = json.loads((run_dir / "results.json").read_text())["summary"]
    assert saved["test/accuracy"] == summary["test/accuracy"]
    assert (run_dir / "roc_test.png").stat().st_size > 1000
    state = load_checkpoint(run_dir / "best.pt")
    assert state["verification"]["threshold"] == summary["threshold"]
    assert state["verification"]["test"]["accuracy"] == summary["test/accuracy"]
    return {"summary": summary, "state": state}


@pytest.mark.parametrize("loss", ["triplet", "pair_bce"])  # contrastive: the folder and fsdd runs below
def test_mnist_siamese_each_loss(tmp_path: Path, shared_data: Path, loss: str) -> None:
    out = _run(
        f"mnist_siamese_{loss}",
        tmp_path,
        f"data.root={shared_data}",
        "data.splits.train=test[:600]",
        "data.splits.val=test[600:800]",
        "data.splits.test=test[800:1000]",
        "verify.val_pairs=200",
        "verify.test_pairs=200",
        "train.batch_size=64",
        "loss.pairs_per_epoch=640" if loss == "pair_bce" else "seed=0",
    )
    s, state = out["summary"], out["state"]
    assert state["metric_model"]["kind"] == ("pair_classifier" if loss == "pair_bce" else "siamese")
    assert state["metric_model"]["input_shapes"] == {"image": [1, 28, 28]}
    assert state["config"]["loss"]["name"] == loss and "image" in state["preprocessing"]["modalities"]
    # one epoch on 600 digits already separates same from different pairs far better than chance
    assert s["test/auc"] > 0.75, s
    assert 0.0 <= s["test/far"] <= 1.0 and 0.0 <= s["test/frr"] <= 1.0
    assert abs(s["test/accuracy"] - (1 - (s["test/far"] + s["test/frr"]) / 2)) < 1e-6  # balanced pairs


def test_loss_override_by_name(tmp_path: Path) -> None:
    cfg = load_config("mnist_siamese_contrastive", ["loss=triplet"])
    assert cfg.loss == "triplet"
    with pytest.raises(ConfigError, match="loss='arcface' is not valid for the siamese recipe"):
        load_config("mnist_siamese_contrastive", ["loss=arcface"])
    with pytest.raises(ConfigError, match="train.early_stopping.mode must be 'max' for val/auc"):
        load_config("mnist_siamese_contrastive", ["train.early_stopping.metric=val/auc"])
    with pytest.raises(ConfigError, match="data.root is required"):
        load_config("folder_siamese")
    with pytest.raises(ConfigError, match="unknown key data.variant"):
        load_config("mnist_siamese_contrastive", ["data.variant=hard"])


def test_folder_siamese_on_png_tree(tmp_path: Path, shared_data: Path) -> None:
    write_mnist_tree(tmp_path / "tree", shared_data)
    out = _run(
        "folder_siamese",
        tmp_path,
        f"data.root={tmp_path / 'tree'}",
        "train.epochs=3",
        "train.batch_size=20",
        "verify.val_pairs=100",
        "verify.test_pairs=100",
    )
    assert out["state"]["metric_model"]["classes"] == ["digit_0", "digit_1", "digit_2", "digit_3"]
    assert out["summary"]["test/auc"] > 0.7, out["summary"]


def test_fsdd_siamese_is_speaker_independent(tmp_path: Path, shared_data: Path) -> None:
    root = copy_fsdd(tmp_path / "data", shared_data, ("george", "jackson", "lucas"), range(3), range(4))
    out = _run(
        "fsdd_siamese",
        tmp_path,
        f"data.root={root}",
        "data.val_speakers=[jackson]",
        "data.test_speakers=[george]",
        "train.batch_size=12",
        "verify.val_pairs=50",
        "verify.test_pairs=50",
    )
    assert out["state"]["metric_model"]["input_shapes"] == {"audio": [1, 40, 63]}
    splits = build_data({"name": "fsdd", "root": str(root), "val_speakers": ["jackson"], "test_speakers": ["george"]})
    assert [len(splits[k]) for k in ("train", "val", "test")] == [12, 12, 12]
    with pytest.raises(ConfigError, match="speakers found: george, jackson, lucas"):
        build_data({"name": "fsdd", "root": str(root), "val_speakers": ["x"], "test_speakers": ["george"]})


def test_avmnist_crossmodal_retrieval(tmp_path: Path, shared_data: Path) -> None:
    root = copy_fsdd(tmp_path / "data", shared_data, ("george", "jackson"), range(8))
    (root / "mnist").symlink_to(shared_data / "mnist")
    out = _run(
        "avmnist_crossmodal",
        tmp_path,
        f"data.root={root}",
        "data.splits.train.mnist=test[:400]",
        "data.splits.train.fsdd=train[20:]",
        "data.splits.val.mnist=test[400:500]",
        "data.splits.val.fsdd=train[:20]",
        "data.splits.test.mnist=test[500:600]",
        "data.splits.test.fsdd=test",
        "train.batch_size=50",
        "verify.val_pairs=100",
        "verify.test_pairs=100",
    )
    s = out["summary"]
    for direction in ("image_to_audio", "audio_to_image"):
        for k in ("precision_at_1", "r_precision", "mean_average_precision_at_r"):
            assert 0.0 <= s[f"test/{direction}/{k}"] <= 1.0
    assert out["state"]["metric_model"]["input_shapes"] == {"audio": [1, 40, 63], "image": [1, 28, 28]}
    assert out["state"]["modules"]["loss"]["loss.logit_scale"].numel() == 1  # the learnable temperature is saved


def test_single_sample_class_is_named(tmp_path: Path, shared_data: Path) -> None:
    write_mnist_tree(tmp_path / "tree", shared_data, classes=3, per_class=10)
    write_mnist_tree(tmp_path / "tree2", shared_data, classes=1, per_class=1, start=40)
    shutil.move(tmp_path / "tree2" / "digit_0", tmp_path / "tree" / "lonely")
    with pytest.raises(DataFormatError, match=r"class 3 \('lonely'\) has a single sample"):
        build_data({"name": "folder", "root": str(tmp_path / "tree")})


def test_folder_bad_files_stop_or_skip_by_config(tmp_path: Path, shared_data: Path) -> None:
    tree = tmp_path / "tree"
    write_mnist_tree(tree, shared_data, classes=3, per_class=10)
    (tree / "digit_1" / "torn.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataFormatError, match="torn.png"):
        build_data({"name": "folder", "root": str(tree)})
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        splits = build_data({"name": "folder", "root": str(tree), "on_bad_file": "skip"})
    prep = splits["train"].preprocessing["modalities"]
    assert sum(len(s) for s in splits.values()) == 30 and prep["image"]["size"] == 28
    (tree / "empty_class").mkdir()
    with pytest.raises(DataNotFoundError, match="empty_class holds no image files"):
        build_data({"name": "folder", "root": str(tree), "on_bad_file": "raise"})


def test_train_split_statistics_only(tmp_path: Path) -> None:
    from dan.data.labelled import labelled_splits

    parts = {
        "train": torch.rand(20, 1, 8, 8),
        "val": torch.rand(5, 1, 8, 8) + 5,
        "test": torch.rand(5, 1, 8, 8),
    }
    labels = {k: torch.arange(len(v)) % 2 for k, v in parts.items()}
    splits = labelled_splits("t", "image", parts, labels, ["a", "b"], {})
    normed = {k: s.items["image"] for k, s in splits.items()}
    assert abs(float(normed["train"].mean())) < 1e-5 and float(normed["val"].mean()) > 5
    assert splits["val"].preprocessing["modalities"]["image"]["size"] == 8
