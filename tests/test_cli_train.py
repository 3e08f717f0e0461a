"""``dan train``, ``python recipes/<name>.py`` (the shipped scripts) and ``dan recipes`` end to end on tiny
synthetic runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_runs import tiny_run

from dan.cli import main
from dan.engine.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY = tiny_run()


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_dan_train_writes_checkpoints_and_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "quickstart", *TINY, f"output_dir={tmp_path}", "run_name=a"]) == 0
    run = tmp_path / "a"
    res = _results(run)["summary"]
    assert res["data_source"] == "synthetic" and res["epochs"] == 2 and res["steps"] == 12
    assert 0.0 <= res["test/acc"] <= 1.0 and {"test/acc_image", "test/acc_audio"} <= set(res)
    last, best = load_checkpoint(run / "last.pt"), load_checkpoint(run / "best.pt")
    assert last["progress"]["epoch"] == 2 and last["config"]["train"]["epochs"] == 2
    assert last["manifest_hash"] and last["preprocessing"]["modalities"]["image"]["size"] == 28
    assert best["best_metric"] == max(h["val/acc"] for h in _results(run)["history"])
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in lines if "train/loss" in r]
    assert [r["step"] for r in steps] == [2, 4, 6, 8, 10, 12]
    assert {
        "train/loss_fused",
        "train/loss_image",
        "train/loss_audio",
        "balancer/fused",
        "lr",
        "samples_per_s",
    } <= set(steps[0])
    assert "test accuracy" in capsys.readouterr().out


def test_results_record_the_best_checkpoint_and_the_run(tmp_path: Path) -> None:
    assert main(["train", "quickstart", *tiny_run({"train.epochs": 3, "device": "cpu"}), f"output_dir={tmp_path}", "run_name=a"]) == 0
    res = _results(tmp_path / "a")
    history, summary = res["history"], res["summary"]
    assert [(h["epoch"], h["step"]) for h in history] == [(1, 6), (2, 12), (3, 18)]
    best = max(history, key=lambda h: h["val/acc"])  # max() keeps the first of equal values, as best.pt does
    assert summary["best_epoch"] == best["epoch"] and summary["val/acc"] == best["val/acc"] == summary["best_val"]
    assert summary["val/loss"] == best["val/loss"]  # val and test figures both come from best.pt
    assert load_checkpoint(tmp_path / "a" / "best.pt")["progress"]["epoch"] == best["epoch"]
    assert {"lr", "balancer/image", "train/loss_fused"} <= set(history[0])
    assert res["config"]["train"]["epochs"] == 3 and res["config"]["run_name"] == "a" and res["seed"] == 0
    assert res["manifest_hash"] == load_checkpoint(tmp_path / "a" / "last.pt")["manifest_hash"]
    assert {"dan", "torch", "torchaudio", "torchvision", "python"} <= set(res["versions"])
    assert res["machine"]["device"] == "cpu" and res["machine"]["amp"] is False and res["machine"]["threads"] == 1
    assert isinstance(res["machine"]["device_name"], str) and res["machine"]["device_name"]
    assert 0 < summary["train_seconds"] <= res["wall_seconds"]
    for png in ("curves.png", "confusion_test.png", "per_class_error_test.png", "noise_test.png"):
        assert (tmp_path / "a" / png).read_bytes()[:4] == b"\x89PNG", png
        assert png in res["files"]


def test_same_seed_same_metrics_other_seed_differs(tmp_path: Path) -> None:
    for name, seed in (("x", 0), ("y", 0), ("z", 1)):
        assert (
            main(["train", "quickstart", *TINY, f"output_dir={tmp_path}", f"run_name={name}", f"seed={seed}"])
            == 0
        )
    x, y, z = (_results(tmp_path / n)["history"] for n in "xyz")
    assert x == y
    assert x != z


def test_bad_override_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "quickstart", "optimizer.lr=-0.1", f"output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "dan train: error: optimizer.lr must be a finite number > 0, got -0.1"
    assert not any(tmp_path.iterdir())


def test_print_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "quickstart", "train.epochs=9", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "epochs: 9" in out and "recipe: fusion" in out


def test_dan_recipes_lists_recipes_and_configs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "fusion: Multimodal fusion" in out and "siamese: Siamese verification" in out
    for name in (
        "avmnist_concat_offline",
        "avmnist_attention_offline",
        "avmnist_concat_hard_offline",
        "avmnist_concat_full",
        "quickstart",
        "crossmodal:",
        "image_only",
        "audio_only",
    ):
        assert name in out


def test_recipe_script_runs_directly(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        str(REPO / "recipes" / "fusion.py"),
        "--config",
        "quickstart",
        *TINY,
        "train.epochs=1",
        f"output_dir={tmp_path}",
        "run_name=s",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _results(tmp_path / "s")["summary"]["epochs"] == 1
    bad = subprocess.run(
        [*cmd[:2], "--config", "quickstart", "train.nope=1"], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and "unknown config key 'train.nope'" in bad.stderr


def test_one_tower_model_on_two_modality_data(tmp_path: Path) -> None:
    text = (REPO / "recipes" / "configs" / "quickstart.yaml").read_text()
    config = tmp_path / "img.yaml"
    config.write_text(text.replace("    audio: {name: audio_cnn, n_mels: 40}\n", ""))
    assert main(["train", str(config), *TINY, f"output_dir={tmp_path}", "run_name=u"]) == 0
    res = _results(tmp_path / "u")["summary"]
    assert "test/acc_image" in res and "test/acc_audio" not in res


def test_a_tower_without_data_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [*TINY, "model.towers.depth={name: vector_mlp, features: 3}", f"output_dir={tmp_path}"]
    assert main(["train", "quickstart", *args]) == 2
    err = capsys.readouterr().err
    assert "model.towers names ['depth'] but data.name=synthetic gives only ['audio', 'image']" in err
    hint = err.rsplit(": ", 1)[1].strip()
    assert hint == "train.absent_modalities=[depth]"
    assert main(["train", "quickstart", *args, hint, "run_name=allowed"]) == 0  # the hint works when pasted
    assert (tmp_path / "allowed" / "results.json").exists()


@pytest.mark.slow
def test_compiled_run_matches_eager_and_saves_plain_keys(tmp_path: Path) -> None:
    """``train.compile=true`` trains the same model as eager (same seed) and its checkpoint loads unchanged."""
    for name, compiled in (("eager", "false"), ("compiled", "true")):
        args = [
            *TINY,
            "train.epochs=1",
            f"train.compile={compiled}",
            f"output_dir={tmp_path}",
            f"run_name={name}",
        ]
        assert main(["train", "quickstart", *args]) == 0
    eager, compiled = (load_checkpoint(tmp_path / n / "last.pt")["model"] for n in ("eager", "compiled"))
    assert eager.keys() == compiled.keys() and not any("_orig_mod" in k for k in compiled)
    worst = max((eager[k].float() - compiled[k].float()).abs().max().item() for k in eager)
    assert worst < 1e-3
    assert (
        abs(
            _results(tmp_path / "eager")["summary"]["test/acc"]
            - _results(tmp_path / "compiled")["summary"]["test/acc"]
        )
        <= 0.05
    )


def test_version_and_help_import_no_torch() -> None:
    code = (
        "import sys\n"
        "from dan.cli import main\n"
        "for argv in (['--help'], ['--version'], ['nosuchcommand']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip().splitlines()[-1] == "False", proc.stdout + proc.stderr
    assert "dan 0.1.0" in proc.stdout and "invalid choice: 'nosuchcommand'" in proc.stderr
    assert "train" in proc.stdout and "cv" in proc.stdout  # every command listed in the help


def test_recipes_listing_prints_whole_first_sentences(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip() and not line.startswith("run one")]
    for line in lines:  # every description ends where its sentence ends
        assert line.rstrip().endswith("."), line
    full = next(line for line in lines if "avmnist_concat_full" in line)
    assert "fetch them with `dan data download`" in full and full.rstrip().endswith(".")


def test_training_starts_with_a_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "quickstart", *TINY, "train.epochs=1", "device=cpu", f"output_dir={tmp_path}", "run_name=h"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("fusion recipe | data synthetic: train 120 / val 60 / test 60, manifest ")
    assert "parameters | device cpu, " in first and "1 process(es) | seed 0 | run folder " in first
    assert first.endswith(str(tmp_path / "h"))


def test_no_progress_bar_updates_when_output_is_not_a_terminal(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "dan.cli", "train", "quickstart", *TINY, "quiet=false", "train.epochs=1",
           f"output_dir={tmp_path}", "run_name=log"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\r" not in proc.stdout + proc.stderr  # no bar redraws in a log file
    assert "step 2 train/loss=" in proc.stdout  # the plain step lines carry the progress instead
    assert re.search(r"step 4 .* run ETA \d+:\d\d:\d\d", proc.stdout)  # with the whole run's time left


def test_a_terminal_gets_bars_with_the_run_eta(tmp_path: Path) -> None:
    import fcntl
    import os
    import pty
    import struct
    import termios

    cmd = [sys.executable, "-m", "dan.cli", "train", "quickstart", *TINY, "quiet=false", "train.epochs=2",
           f"output_dir={tmp_path}", "run_name=tty"]
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a 160-column terminal
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=120) == 0
    text = b"".join(chunks).decode(errors="replace")
    assert "\r" in text and "epoch 1/2" in text and "batch" in text  # a tqdm bar, redrawn in place
    assert re.search(r"run_eta=\d+:\d\d:\d\d", text)


def test_a_null_tower_trains_the_config_without_that_modality(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dan.config import load_config
    from dan.errors import ConfigError

    assert main(["train", "quickstart", *TINY, "model.towers.audio=null", f"output_dir={tmp_path}", "run_name=a"]) == 0
    res = _results(tmp_path / "a")["summary"]
    assert "test/acc_image" in res and not any("audio" in k for k in res)
    assert list(load_checkpoint(tmp_path / "a" / "best.pt")["config"]["model"]["towers"]) == ["image"]
    with pytest.raises(ConfigError) as err:  # an augmentation for the dropped tower would be silently unused
        load_config("quickstart", ["model.towers.audio=null", "augment.audio={noise: 0.1}"])
    assert "augment.audio names no modality of the model's towers (image)" in str(err.value)
    assert "drop it with augment.audio=null" in str(err.value)
    fixed = load_config("quickstart", ["model.towers.audio=null", "augment.audio={noise: 0.1}", "augment.audio=null"])
    assert list(fixed.model.towers) == ["image"]
