"""``dan verify`` on real checkpoints of tiny siamese and crossmodal runs, with real PNG and WAV files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_siamese_recipes import FAST, copy_fsdd, write_mnist_tree

from dan.cli import main
from dan.config import load_config
from dan.engine.checkpoint import load_checkpoint, save_checkpoint
from dan.engine.recipes import run_config
from dan.engine.verify_command import load_metric_checkpoint, verify_files
from dan.errors import CheckpointError


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, Path]:
    """Best checkpoints of a folder_siamese run (PNG tree) and an avmnist_crossmodal run, plus input files."""
    tmp = tmp_path_factory.mktemp("verify")
    write_mnist_tree(tmp / "tree", shared_data, classes=3, per_class=12)
    torch.set_num_threads(1)
    run_config(
        load_config(
            "folder_siamese",
            [
                *FAST,
                f"output_dir={tmp / 'runs'}",
                f"data.root={tmp / 'tree'}",
                "train.epochs=2",
                "train.batch_size=12",
                "verify.val_pairs=40",
                "verify.test_pairs=40",
            ],
        )
    )
    root = copy_fsdd(tmp / "data", shared_data, ("george",), range(7))
    (root / "mnist").symlink_to(shared_data / "mnist")
    run_config(
        load_config(
            "avmnist_crossmodal",
            [
                *FAST,
                f"output_dir={tmp / 'runs'}",
                f"data.root={root}",
                f"data.cache_dir={tmp / 'cache'}",
                "data.splits.train.mnist=test[:200]",
                "data.splits.train.fsdd=train[10:]",
                "data.splits.val.mnist=test[200:300]",
                "data.splits.val.fsdd=train[:10]",
                "data.splits.test.mnist=test[300:400]",
                "data.splits.test.fsdd=test",
                "train.batch_size=50",
                "verify.val_pairs=60",
                "verify.test_pairs=60",
            ],
        )
    )
    return {
        "siamese": tmp / "runs" / "folder_siamese" / "best.pt",
        "crossmodal": tmp / "runs" / "avmnist_crossmodal" / "best.pt",
        "png0": tmp / "tree" / "digit_0" / "0.png",
        "png0b": tmp / "tree" / "digit_0" / "1.png",
        "png1": tmp / "tree" / "digit_1" / "0.png",
        "wav0": root / "fsdd" / "recordings" / "0_george_0.wav",
        "wav1": root / "fsdd" / "recordings" / "1_george_0.wav",
    }


def test_siamese_verify_prints_distance_threshold_verdict(
    trained: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    threshold = load_checkpoint(trained["siamese"])["verification"]["threshold"]
    assert (
        main(["verify", str(trained["siamese"]), str(trained["png0"]), str(trained["png0b"]), "--json"]) == 0
    )
    r = json.loads(capsys.readouterr().out)
    assert r["threshold"] == threshold and r["same"] == (r["distance"] <= threshold)
    assert r["modalities"] == ["image", "image"] and r["model"] == "siamese"
    # the command's distance is the model's distance on the preprocessed files
    ck = load_metric_checkpoint(trained["siamese"])
    xa, xb = (ck.preprocessing.image_file(trained[k]) for k in ("png0", "png0b"))
    with torch.no_grad():
        assert abs(float(ck.model.distance(xa, xb)[0]) - r["distance"]) < 1e-6
    assert verify_files(ck, trained["png0"], trained["png0"])["distance"] < 1e-3
    assert main(["verify", str(trained["siamese"]), str(trained["png0"]), str(trained["png1"])]) == 0
    out = capsys.readouterr().out
    assert out.startswith("distance ") and f"threshold {threshold:.4f}" in out and "verdict: " in out


def test_wrong_modality_is_named(trained: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert main(["verify", str(trained["siamese"]), str(trained["png0"]), str(trained["wav0"])]) == 2
    err = capsys.readouterr().err
    assert "0_george_0.wav is a recording" in err and "expects two image inputs" in err
    assert main(["verify", str(trained["crossmodal"]), str(trained["png0"]), str(trained["png1"])]) == 2
    assert "compares one image with one recording" in capsys.readouterr().err
    notes = trained["png0"].parent / "notes.txt"
    notes.write_text("hello")
    assert main(["verify", str(trained["siamese"]), str(trained["png0"]), str(notes)]) == 2
    assert "notes.txt: unknown input type .txt" in capsys.readouterr().err


def test_crossmodal_verify_either_order(trained: dict[str, Path]) -> None:
    ck = load_metric_checkpoint(trained["crossmodal"])
    assert ck.kind == "crossmodal" and ck.modalities == ["audio", "image"]
    ab = verify_files(ck, trained["png0"], trained["wav0"])
    ba = verify_files(ck, trained["wav0"], trained["png0"])
    assert abs(ab["distance"] - ba["distance"]) < 1e-5 and ab["modalities"] == ["image", "audio"]
    assert 0.0 <= ab["distance"] <= 2.0


def test_checkpoints_that_cannot_verify(trained: dict[str, Path], tmp_path: Path) -> None:
    fusion = save_checkpoint(tmp_path / "fusion.pt", {"config": {"recipe": "fusion"}, "model": {}})
    with pytest.raises(CheckpointError, match="trained by recipe 'fusion', not a Siamese"):
        load_metric_checkpoint(fusion)
    state = load_checkpoint(trained["siamese"])
    state.pop("verification")
    unfinished = save_checkpoint(tmp_path / "last.pt", state)
    with pytest.raises(CheckpointError, match="holds no verification threshold"):
        load_metric_checkpoint(unfinished)
