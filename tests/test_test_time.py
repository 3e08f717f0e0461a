"""``eval.tta``: the test at the end of training, ``dan eval`` and ``dan.load`` average the model's
log-probabilities over fixed mel-axis scalings of each batch, the same views everywhere; training and
validation never see them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_runs import tiny_run

import dan
from dan.cli import main
from dan.config import load_config
from dan.data.augment import scale_axes, warp_spectrograms
from dan.data.synthetic import build_synthetic
from dan.errors import ConfigError

FACTORS = [0.9, 1.0, 1.1]
TTA = "eval.tta={audio: {freq_warp: [0.9, 1.0, 1.1]}}"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tta")
    torch.set_num_threads(1)
    changes = {"data.n_train": 200, "train.epochs": 3, "train.log_every": None, "optimizer.lr": 0.01}
    assert main(["train", "quickstart", *tiny_run(changes), TTA, f"output_dir={out}", "run_name=r"]) == 0
    return out / "r"


def by_hand(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The mean over FACTORS of the fused log-probabilities ``[B, C]``, each view's audio scaled by hand."""
    b = batch["audio"].shape[0]
    views = [{**batch, "audio": scale_axes(batch["audio"], torch.full((b,), f), torch.ones(b))} for f in FACTORS]
    with torch.no_grad():
        return torch.stack([model(v).logits.log_softmax(-1) for v in views]).mean(0)


def test_training_dan_eval_and_load_average_the_same_views(run_dir: Path, tmp_path: Path) -> None:
    loaded = dan.load(run_dir / "best.pt")
    split = build_synthetic({"n_train": 200, "n_val": 60, "n_test": 60})["test"]
    batch = split.batch(torch.arange(len(split)))
    expected = by_hand(loaded.model, batch)
    with torch.no_grad():
        assert torch.allclose(loaded(batch).logits, expected, atol=1e-5)
        plain = loaded.model(batch).logits
    assert not torch.allclose(plain.log_softmax(-1), expected, atol=1e-3)  # the views change the prediction
    acc = float((expected.argmax(-1) == batch["label"]).float().mean())
    summary = json.loads((run_dir / "results.json").read_text())["summary"]
    assert summary["test/acc"] == pytest.approx(acc, abs=1e-6)
    assert main(["eval", str(run_dir / "best.pt"), "eval.noise_levels=[0]", "--out", str(tmp_path / "a")]) == 0
    report = json.loads((tmp_path / "a" / "eval_test.json").read_text())
    assert report["acc"] == pytest.approx(acc, abs=1e-6)
    assert report["tta"] == {"audio": {"freq_warp": FACTORS}}
    # a modality set to null drops its views: the plain model's accuracy
    args = ["eval", str(run_dir / "best.pt"), "eval.tta.audio=null", "eval.noise_levels=[0]", "--out", str(tmp_path / "b")]
    assert main(args) == 0
    plain_acc = float((plain.argmax(-1) == batch["label"]).float().mean())
    assert json.loads((tmp_path / "b" / "eval_test.json").read_text())["acc"] == pytest.approx(plain_acc, abs=1e-6)


def test_validation_is_not_augmented(run_dir: Path) -> None:
    """The last epoch's val/acc in metrics.jsonl is the plain model's on the validation split."""
    loaded = dan.load(run_dir / "last.pt")
    split = build_synthetic({"n_train": 200, "n_val": 60, "n_test": 60})["val"]
    batch = split.batch(torch.arange(len(split)))
    with torch.no_grad():
        acc = float((loaded.model(batch).logits.argmax(-1) == batch["label"]).float().mean())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["val/acc"] for r in rows if "val/acc" in r][-1] == pytest.approx(acc, abs=1e-6)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("eval.tta.audio.shift=2", "unknown key eval.tta.audio.shift; valid keys: freq_warp"),
        ("eval.tta.audio.freq_warp=0.9", "eval.tta.audio.freq_warp is a list of scale factors, e.g. [0.95,1.0,1.05]"),
        ("eval.tta.audio.freq_warp=[0.9,3]", "every factor must lie in [0.5, 2]"),
    ],
)
def test_bad_tta_names_the_key_and_the_fix(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("quickstart", [override])
    assert message in str(err.value)
    load_config("quickstart", ["eval.tta.audio.freq_warp=[0.95,1.0,1.05]"])  # the hint, pasted


def test_scale_axes_identity_and_the_random_warp_unchanged() -> None:
    x = torch.randn(3, 1, 40, 63)
    assert torch.allclose(scale_axes(x, torch.ones(3), torch.ones(3)), x, atol=1e-5)
    torch.manual_seed(0)
    warped = warp_spectrograms(x, 0.1, 0.1, 4)
    torch.manual_seed(0)
    a, s, d = 1 + (torch.rand(3) * 2 - 1) * 0.1, 1 + (torch.rand(3) * 2 - 1) * 0.1, (torch.rand(3) * 2 - 1) * 4
    assert torch.equal(warped, scale_axes(x, a, s, d))


def test_tta_on_a_tower_without_a_frequency_axis_is_refused_before_training(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    lines = ["a,b,c,label"] + [f"{i % 3},0,1,{'xyz'[i % 3]}" for i in range(30)]
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    config = f"""
recipe: fusion
logger: none
data:
  name: manifest
  path: {tmp_path / "m.csv"}
  val_fraction: 0.2
  test_fraction: 0.2
  modalities:
    tab: {{reader: columns, columns: [a, b, c]}}
model:
  num_classes: 3
  dim: 8
  towers:
    tab: {{name: vector_mlp, features: 3, hidden: 8}}
train: {{epochs: 1, batch_size: 8, num_threads: 1}}
"""
    (tmp_path / "tab.yaml").write_text(config)
    base = ["train", str(tmp_path / "tab.yaml"), f"output_dir={tmp_path / 'runs'}", "run_name=r"]
    assert main([*base, "eval.tta={tab: {freq_warp: [0.9, 1.0]}}"]) != 0
    err = capsys.readouterr().err
    assert "eval.tta.tab scales the frequency axis of [C, F, T] inputs; tab samples are [3]" in err
    assert "drop it with eval.tta.tab=null" in err
    assert not (tmp_path / "runs" / "r" / "last.pt").exists()  # refused before any training
    assert main([*base, "eval.tta={audio: {freq_warp: [0.9, 1.0]}}"]) != 0
    assert "eval.tta.audio: the model has no audio tower (towers: tab); drop it with eval.tta.audio=null" in capsys.readouterr().err
    # the printed fix, pasted
    assert main([*base, "eval.tta={tab: {freq_warp: [0.9, 1.0]}}", "eval.tta.tab=null", "overwrite=true"]) == 0


def test_a_view_of_a_batch_without_a_frequency_axis_names_the_fix() -> None:
    """``dan eval`` and ``dan.load`` meet the batch only at the test: the same error there."""
    from dan.engine.test_time import views

    (view,) = views({"tab": [0.9]})
    with pytest.raises(ConfigError, match=r"eval.tta.tab scales .*; tab batches are \[2, 3\]: drop it with eval.tta.tab=null"):
        view({"tab": torch.zeros(2, 3)})
