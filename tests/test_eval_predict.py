"""``dan.load``, ``dan eval`` and ``dan predict`` on a checkpoint of a tiny synthetic run."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_runs import tiny_run

import dan
from dan.cli import main
from dan.data.synthetic import build_synthetic, glyphs
from dan.errors import CheckpointError

TINY = tiny_run({"data.n_train": 200, "train.epochs": 3, "train.log_every": None, "optimizer.lr": 0.01})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    torch.set_num_threads(1)
    assert main(["train", "quickstart", *TINY, f"output_dir={out}", "run_name=r"]) == 0
    return out / "r"


def test_load_gives_eval_model_matching_training(run_dir: Path) -> None:
    loaded = dan.load(run_dir / "best.pt")
    assert not loaded.training and not loaded.model.training
    assert loaded.modalities == ["audio", "image"]
    split = build_synthetic({"n_train": 200, "n_val": 60, "n_test": 60})["test"]
    batch = split.batch(torch.arange(len(split)))
    with torch.no_grad():
        out = loaded(batch)
        assert torch.equal(out.logits, loaded.model(batch).logits)  # without eval.tta: the plain forward
        acc = float((out.logits.argmax(-1) == batch["label"]).float().mean())
    summary = json.loads((run_dir / "results.json").read_text())["summary"]
    assert acc == pytest.approx(summary["test/acc"], abs=1e-6)
    # preprocessing reproduces the data's normalisation
    raw = glyphs()[3].unsqueeze(0)
    prep = loaded.preprocessing.spec["modalities"]["image"]
    expected = ((raw - prep["mean"][0]) / prep["std"][0]).unsqueeze(0)
    assert torch.allclose(loaded.preprocessing.image(raw), expected)


def test_load_refuses_mismatch(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        dan.load(tmp_path / "none.pt")


def test_eval_writes_json_and_plots(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ev"
    assert main(["eval", str(run_dir / "best.pt"), "eval.noise_levels=[0.0,3.0]", "--out", str(out)]) == 0
    report = json.loads((out / "eval_test.json").read_text())
    summary = json.loads((run_dir / "results.json").read_text())["summary"]
    assert report["acc"] == pytest.approx(summary["test/acc"], abs=1e-6)
    assert report["num_samples"] == 60 and sum(map(sum, report["confusion"])) == 60
    assert len(report["per_class_acc"]) == 10 and set(report["modality_acc"]) == {"audio", "image"}
    assert set(report["acc_without"]) == {"audio", "image"}
    # two modalities: φ_audio = ½ (v({audio}) - v(∅)) + ½ (v(both) - v({image})), v(∅) = 1/10
    alone = {"audio": report["acc_without"]["image"], "image": report["acc_without"]["audio"]}
    shares = report["contributions"]
    for m, other in (("audio", "image"), ("image", "audio")):
        expected = 0.5 * (alone[m] - 0.1) + 0.5 * (report["acc"] - alone[other])
        assert shares[f"shapley_{m}"] == pytest.approx(expected, abs=1e-6)
        assert summary[f"test/shapley_{m}"] == pytest.approx(expected, abs=1e-6)
    gap = abs(shares["shapley_audio"] - shares["shapley_image"])
    assert shares["imbalance"] == pytest.approx(gap / (abs(shares["shapley_audio"]) + abs(shares["shapley_image"])))
    assert [p["std"] for p in report["noise"]["image"]] == [0.0, 3.0]
    assert report["noise"]["audio"][0]["acc"] == pytest.approx(report["acc"])
    for name in ("confusion_test.png", "per_class_error_test.png", "noise_test.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed and f"imbalance degree {shares['imbalance']:.3f}" in printed


def test_eval_without_out_writes_a_new_folder_each_time(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The training run's own test plots and an earlier evaluation's report are never overwritten."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(run_dir / "best.pt", run / "best.pt")
    plot = b"the training run's own plot"  # what dan eval would write differs, whatever the model scores
    (run / "confusion_test.png").write_bytes(plot)
    assert main(["eval", str(run / "best.pt"), "eval.noise_levels=[0.0]"]) == 0
    assert main(["eval", str(run / "best.pt"), "eval.noise_levels=[0.0,3.0]"]) == 0
    assert (run / "confusion_test.png").read_bytes() == plot
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ["eval-best-test", "eval-best-test-2"]
    noise = [json.loads((run / d / "eval_test.json").read_text())["noise"]["image"] for d in ("eval-best-test", "eval-best-test-2")]
    assert [len(n) for n in noise] == [1, 2]
    assert str(run / "eval-best-test-2" / "confusion_test.png") in capsys.readouterr().out


def test_eval_other_split_and_bad_override(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "eval",
                str(run_dir / "best.pt"),
                "eval.split=val",
                "eval.noise_levels=[0.0]",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "eval_val.json").read_text())["split"] == "val"
    assert main(["eval", str(run_dir / "best.pt"), "optimizer.lr=1"]) == 2
    assert "dan eval overrides may only change data, eval" in capsys.readouterr().err
    assert main(["eval", str(run_dir / "best.pt"), "eval.split=dev"]) == 2
    assert "valid choices: train, val, test" in capsys.readouterr().err


def test_predict_image_any_size_and_mode(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # an RGB, 80x64, dark-on-white rendering of the glyph for 1
    glyph = (glyphs()[1].numpy() * 255).astype(np.uint8)
    img = Image.fromarray(255 - glyph).resize((64, 80)).convert("RGB")
    path = tmp_path / "one.png"
    img.save(path)
    assert main(["predict", str(run_dir / "best.pt"), "--image", str(path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["used"] == ["image"] and set(result["modalities"]) == {"image"}
    assert 0 <= result["class"] <= 9 and result["label"] == str(result["class"]) and math.isclose(sum(result["probs"]), 1.0, rel_tol=1e-4)
    assert result["probability"] == pytest.approx(max(result["probs"]), abs=1e-5)


def test_predict_audio_waveform_any_rate_and_channels(run_dir: Path) -> None:
    loaded = dan.load(run_dir / "best.pt")
    t = torch.arange(16000) / 16000
    stereo = torch.stack([torch.sin(2 * math.pi * 440 * t), torch.sin(2 * math.pi * 660 * t)])
    r = loaded.predict(audio=(stereo, 16000))
    assert r["used"] == ["audio"] and set(r["modalities"]) == {"audio"}
    feats = loaded.preprocessing.audio(stereo, 16000)
    assert feats.shape == (1, 1, 40, 63)


def test_predict_wav_file(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("dan.data.fsdd", reason="dan.data.fsdd (read_wav) not available yet")
    import soundfile as sf

    path = tmp_path / "tone.wav"
    t = np.arange(22050) / 22050
    sf.write(path, np.stack([np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 500 * t)], axis=1) * 0.5, 22050)
    assert (
        main(
            [
                "predict",
                str(run_dir / "best.pt"),
                "--audio",
                str(path),
                "--image",
                str(tmp_path / "missing.png"),
                "--json",
            ]
        )
        == 2
    )
    assert main(["predict", str(run_dir / "best.pt"), "--audio", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["used"] == ["audio"]


def test_predict_needs_an_input(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(run_dir / "best.pt")]) == 2
    assert "give at least one input: --input MODALITY=PATH, --image PATH or --audio PATH" in capsys.readouterr().err


def test_eval_on_a_root_with_only_test_files_uses_the_checkpoints_statistics(
    tmp_path: Path, shared_data: Path
) -> None:
    """An AV-MNIST model evaluated on a data root that holds only the MNIST test files and the FSDD test
    recordings: nothing is refitted (the report equals the run's own test result) and no training file is read."""
    small = [
        f"data.root={shared_data}",
        "data.splits.train.mnist=test[:600]",
        "data.splits.val.mnist=test[600:800]",
        "data.splits.test.mnist=test[800:1000]",
        "model.dim=16",
        "train.epochs=1",
        "train.num_threads=1",
        "quiet=true",
        f"output_dir={tmp_path}",
        "run_name=av",
    ]
    assert main(["train", "avmnist_concat_offline", *small]) == 0
    summary = json.loads((tmp_path / "av" / "results.json").read_text())["summary"]
    only_test = tmp_path / "only_test"
    (only_test / "mnist").mkdir(parents=True)
    for f in (shared_data / "mnist").glob("t10k-*"):
        (only_test / "mnist" / f.name).symlink_to(f)
    (only_test / "fsdd" / "recordings").mkdir(parents=True)
    for f in (shared_data / "fsdd" / "recordings").glob("*_[0-4].wav"):
        (only_test / "fsdd" / "recordings" / f.name).symlink_to(f)
    out = tmp_path / "ev"
    args = ["eval", str(tmp_path / "av" / "best.pt"), f"data.root={only_test}", "eval.noise_levels=[0.0]", "--out", str(out)]
    assert main(args) == 0
    report = json.loads((out / "eval_test.json").read_text())
    assert report["num_samples"] == 200 and report["acc"] == pytest.approx(summary["test/acc"], abs=1e-6)


def test_predict_says_what_is_wrong_and_what_to_do(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import soundfile as sf

    best = str(run_dir / "best.pt")
    assert main(["predict", best, "--image", str(tmp_path / "nope.png")]) == 2
    assert "nope.png: no such file; check the path" in capsys.readouterr().err
    png = tmp_path / "digit.png"
    Image.fromarray((glyphs()[2].numpy() * 255).astype(np.uint8)).save(png)
    assert main(["predict", str(png), "--image", str(png)]) == 2
    err = capsys.readouterr().err
    assert "digit.png is not a dan checkpoint (it is a PNG image); pass the best.pt or last.pt" in err
    wav = tmp_path / "tone.wav"
    sf.write(wav, np.sin(np.arange(8000) / 5.0) * 0.3, 8000)
    assert main(["predict", best, "--image", str(wav)]) == 2
    assert f"{wav} looks like a recording, but image reads images; pass it as --input audio={wav}" in capsys.readouterr().err
    # the suggested command works when pasted
    assert main(["predict", best, "--input", f"audio={wav}"]) == 0


def test_classifier_commands_name_a_siamese_checkpoint(tmp_path: Path) -> None:
    from dan.engine.checkpoint import save_checkpoint

    ck = save_checkpoint(
        tmp_path / "siamese.pt",
        {"config": {"recipe": "siamese", "model": {"embed_dim": 8}}, "model": {}, "metric_model": {"kind": "siamese"}},
    )
    with pytest.raises(CheckpointError, match=r"siamese.pt is a siamese checkpoint of the siamese recipe, not a classifier; "
                       r"compare two inputs with it: dan verify .*siamese.pt A B"):
        dan.load(ck)
