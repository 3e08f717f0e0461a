"""``eval.tta``: the test at the end of training, ``dan eval`` and ``dan.load`` average the model's
log-probabilities over fixed views of each batch (mel-axis scalings, image shifts and rotations), the same
views everywhere; training and validation never see them."""

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
    # and eval.tta=null drops every modality's
    args = ["eval", str(run_dir / "best.pt"), "eval.tta=null", "eval.noise_levels=[0]", "--out", str(tmp_path / "c")]
    assert main(args) == 0
    report = json.loads((tmp_path / "c" / "eval_test.json").read_text())
    assert report["acc"] == pytest.approx(plain_acc, abs=1e-6) and report["tta"] is None


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
        ("eval.tta.audio.zoom=2", "unknown key eval.tta.audio.zoom; valid keys: freq_warp, shift, rotate; drop it with eval.tta.audio.zoom=null"),
        ("eval.tta.audio.freq_warp=0.9", "eval.tta.audio.freq_warp is a list of scale factors, e.g. eval.tta.audio.freq_warp=[0.95,1.0,1.05]"),
        ("eval.tta.audio.freq_warp=[0.9,3]", "every value must lie in [0.5, 2], got [0.9, 3]; e.g. eval.tta.audio.freq_warp=[0.95,1.0,1.05]"),
        ("eval.tta.image.shift=[0,true]", "eval.tta.image.shift: every value must lie in [-8, 8], got [0, True]; e.g. eval.tta.image.shift=[-0.5,0,0.5]"),
        ("eval.tta.image.rotate=5", "eval.tta.image.rotate is a list of angles in degrees, e.g. eval.tta.image.rotate=[-5,0,5]"),
        ("eval.tta.image.rotate=[90]", "eval.tta.image.rotate: every value must lie in [-45, 45], got [90]; e.g. eval.tta.image.rotate=[-5,0,5]"),
    ],
)
def test_bad_tta_names_the_key_and_the_fix(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("quickstart", [override])
    assert message in str(err.value)
    fix = str(err.value).rsplit("e.g. " if "e.g. " in str(err.value) else "drop it with ", 1)[1].split(";")[0]
    load_config("quickstart", [override, fix] if fix.endswith("=null") else [fix])  # the hint, pasted


def test_image_views_move_and_rotate_the_batch_as_training_does() -> None:
    """``shift`` adds one view moved right and one moved down per value, ``rotate`` one per angle; the
    unchanged batch counts once; a move by whole pixels is exact."""
    from dan.data.augment import move_images, resample
    from dan.engine.test_time import View, check_tta, views

    got = check_tta({"image": {"shift": [-1, 0, 1], "rotate": [0, 5]}})["image"]
    assert check_tta({"image": {"shift": None}, "audio": None}) == {}  # keys set to null leave no views
    assert got == [View(dx=-1), View(dy=-1), View(), View(dx=1), View(dy=1), View(degrees=5)]
    x = torch.zeros(2, 1, 9, 9)
    x[:, 0, 4, 6] = 1.0  # right of the centre
    assert torch.equal(move_images(x, dx=1)[:, 0, 4, 7], torch.ones(2))
    assert torch.equal(move_images(x, dy=-2)[:, 0, 2, 6], torch.ones(2))
    turned = move_images(x, degrees=90)  # counter-clockwise as displayed: right of the centre goes above it
    assert torch.allclose(turned[:, 0, 2, 4], torch.ones(2), atol=1e-5)
    assert torch.equal(move_images(x), x)
    # the same resampling as augment_images' affine: 5 degrees about the centre, half a pixel right
    a = torch.full((2,), torch.pi / 36)
    expected = resample(x, a.cos(), a.sin(), torch.full((2,), -2 * 0.5 / 9), torch.zeros(2))
    assert torch.equal(move_images(x, dx=0.5, degrees=5), expected)
    batch = {"image": x, "label": torch.zeros(2, dtype=torch.long)}
    out = [t(batch)["image"] for t in views({"image": got})]
    assert len(out) == 6 and torch.equal(out[2], x) and torch.equal(out[3], move_images(x, dx=1))


def test_augment_images_draws_as_before() -> None:
    """The affine and elastic draws of ``augment_images`` through :func:`resample`: the same random
    numbers in the same order as the code before it, so shipped figures stand."""
    import math

    import torch.nn.functional as F

    from dan.data.augment import augment_images, elastic_displacement

    x = torch.rand(4, 1, 28, 28)
    torch.manual_seed(3)
    got = augment_images(x, shift=2, rotate=10, elastic=12, elastic_sigma=4)
    torch.manual_seed(3)
    angle = (torch.rand(4) * 2 - 1) * math.radians(10)
    tx, ty = (torch.rand(4) * 2 - 1) * 2 * 2 / 28, (torch.rand(4) * 2 - 1) * 2 * 2 / 28
    theta = torch.stack([torch.stack([angle.cos(), -angle.sin(), tx], 1), torch.stack([angle.sin(), angle.cos(), ty], 1)], 1)
    grid = F.affine_grid(theta, [4, 1, 28, 28], align_corners=False) + elastic_displacement(4, 28, 28, 12, 4)
    assert torch.equal(got, F.grid_sample(x, grid, align_corners=False, padding_mode="border"))


def test_scale_axes_identity_and_the_random_warp_unchanged() -> None:
    x = torch.randn(3, 1, 40, 63, generator=torch.Generator().manual_seed(0))
    # the identity grid is exact only to float rounding of the sampling positions: about 1e-5 of a unit value
    assert torch.allclose(scale_axes(x, torch.ones(3), torch.ones(3)), x, atol=1e-4)
    torch.manual_seed(0)
    warped = warp_spectrograms(x, 0.1, 0.1, 4)
    torch.manual_seed(0)
    a, s, d = 1 + (torch.rand(3) * 2 - 1) * 0.1, 1 + (torch.rand(3) * 2 - 1) * 0.1, (torch.rand(3) * 2 - 1) * 4
    assert torch.equal(warped, scale_axes(x, a, s, d))


def test_tta_on_a_tower_without_spatial_axes_is_refused_before_training(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
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
    assert "eval.tta.tab views need [C, H, W] or [C, F, T] inputs; tab samples are [3]" in err
    assert "drop it with eval.tta.tab=null" in err
    assert not (tmp_path / "runs" / "r" / "last.pt").exists()  # refused before any training
    assert main([*base, "eval.tta={audio: {freq_warp: [0.9, 1.0]}}"]) != 0
    assert "eval.tta.audio: the model has no audio tower (towers: tab); drop it with eval.tta.audio=null" in capsys.readouterr().err
    # the printed fix, pasted
    assert main([*base, "eval.tta={tab: {freq_warp: [0.9, 1.0]}}", "eval.tta.tab=null", "overwrite=true"]) == 0


def test_a_view_of_a_batch_without_spatial_axes_names_the_fix() -> None:
    """``dan eval`` and ``dan.load`` meet the batch only at the test: the same error there."""
    from dan.engine.test_time import View, views

    (view,) = views({"tab": [View(freq=0.9)]})
    with pytest.raises(ConfigError, match=r"eval.tta.tab views need .*; tab batches are \[2, 3\]: drop it with eval.tta.tab=null"):
        view({"tab": torch.zeros(2, 3)})


@pytest.mark.parametrize(("config", "recipe"), [("mnist_siamese_triplet", "siamese"), ("avmnist_crossmodal", "crossmodal")])
@pytest.mark.parametrize(
    ("option", "message", "fix"),
    [
        ("eval.tta={image: {shift: [-0.5,0,0.5]}}", "the {recipe} recipe scores embeddings.*set eval.tta=null", "eval.tta=null"),
        ("eval.noise_levels=[0,1]", r"eval.noise_levels=\[0.0, 1.0\] sweeps .* no such sweep: set eval.noise_levels=null", "eval.noise_levels=null"),
        ("eval.split=val", r"eval.split='val': the {recipe} recipe chooses its threshold .*set eval.split=test", "eval.split=test"),
        ("balancer.name=gradnorm", r"balancer=\{{'name': 'gradnorm'\}} weighs .* the {recipe} recipe trains one loss: set balancer.name=static", "balancer.name=static"),
        ("balancer=gradnorm", r"balancer=\{{'name': 'gradnorm', 'alpha': 1.5\}} weighs .*set balancer=static", "balancer=static"),
    ],
)
def test_metric_recipes_refuse_options_they_would_ignore(config: str, recipe: str, option: str, message: str, fix: str) -> None:
    """Each was silently ignored by the verification recipes (views: they score embeddings); the printed fix
    validates when pasted (load_config validates)."""
    with pytest.raises(ConfigError, match=message.format(recipe=recipe)):
        load_config(config, [option])
    load_config(config, [option, fix])
