"""The Siamese and cross-modal recipes run in the one engine loop, so they gain what the fusion recipe has:
a run killed with SIGKILL and resumed ends bitwise equal to an uninterrupted one, SIGTERM writes a
checkpoint and exits 143, and a real 2-process torchrun trains them. Data: a folder tree of PNG glyphs
the test writes (Siamese) and the synthetic image+audio set (cross-modal)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_runs import signal_when

from dan.data.synthetic import glyphs, render_images
from dan.engine.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
COMMON = ["train.epochs=3", "train.batch_size=20", "train.log_every=1", "train.num_threads=1", "device=cpu"]

CROSSMODAL = """
recipe: crossmodal
data: {name: synthetic, n_train: 200, n_val: 60, n_test: 60}
model:
  dim: 16
  towers:
    image: {name: image_cnn, channels: [4, 8], grid: 2}
    audio: {name: audio_cnn, n_mels: 40, channels: [4, 8]}
  trunk: null
  embed_dim: 16
  head: mlp
  pool: flatten
loss: {name: supcon, temperature: 0.1, learnable_temperature: true}
verify: {threshold: eer, val_pairs: 100, test_pairs: 100}
optimizer: {name: adamw, lr: 0.003}
train: {early_stopping: {metric: val/auc, mode: max}}
augment:
  image: {shift: 1}
  audio: {noise: 0.05}
"""


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """``dan train`` arguments of a Siamese run on a PNG tree and of a cross-modal run."""
    root = tmp_path_factory.mktemp("metric")
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(25)
    images = render_images(labels, g, 0.1)
    for i, (x, y) in enumerate(zip(images, labels.tolist(), strict=True)):
        (root / "tree" / f"class_{y}").mkdir(parents=True, exist_ok=True)
        Image.fromarray((x.numpy() * 255).astype(np.uint8)).save(root / "tree" / f"class_{y}" / f"{i}.png")
    assert glyphs().shape == (10, 28, 28)
    (root / "crossmodal.yaml").write_text(CROSSMODAL)
    siamese = ["folder_siamese", f"data.root={root / 'tree'}", "model.dim=16", "model.embed_dim=16", "verify.val_pairs=100", "verify.test_pairs=100"]
    return {"siamese": siamese, "crossmodal": [str(root / "crossmodal.yaml")]}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _train(args: list[str], out: Path, name: str, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "dan.cli", "train", *args, *COMMON, "quiet=true", *extra, f"output_dir={out}", f"run_name={name}"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), cwd=REPO)


@pytest.mark.parametrize("recipe", ["siamese", "crossmodal"])
def test_sigkill_then_resume_equals_uninterrupted(configs: dict[str, list[str]], tmp_path: Path, recipe: str) -> None:
    args = configs[recipe]
    out = signal_when(_train(args, tmp_path, "killed", "train.checkpoint_every=4"), "(latest) step=4", signal.SIGKILL)
    last = tmp_path / "killed" / "last.pt"
    progress = load_checkpoint(last)["progress"]
    assert progress["step"] == 4 and 0 < progress["batch"], out  # killed mid-epoch

    resumed = _train(args, tmp_path, "resumed", "train.checkpoint_every=4", f"resume={last}")
    full = _train(args, tmp_path, "full", "train.checkpoint_every=4")
    for proc in (resumed, full):
        text = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, text[-3000:]
    a = json.loads((tmp_path / "killed" / "results.json").read_text())
    b = json.loads((tmp_path / "full" / "results.json").read_text())
    assert a["history"] == b["history"]
    for key, value in b["summary"].items():
        if key.startswith(("test/", "val/")) or key in ("threshold", "steps", "epochs", "best_val"):
            assert a["summary"][key] == value, key
    wa, wb = (load_checkpoint(tmp_path / n / "last.pt") for n in ("killed", "full"))
    assert all(torch.equal(wa["model"][k], wb["model"][k]) for k in wb["model"])
    assert wa["modules"] and all(
        torch.equal(wa["modules"][m][k], wb["modules"][m][k]) for m in wb["modules"] for k in wb["modules"][m]
    )


@pytest.mark.parametrize("recipe", ["siamese", "crossmodal"])
def test_sigterm_writes_a_checkpoint_and_exits_143(configs: dict[str, list[str]], tmp_path: Path, recipe: str) -> None:
    proc = _train(configs[recipe], tmp_path, "term", "train.epochs=200", "quiet=false")
    out = signal_when(proc, "step 3 ", signal.SIGTERM)
    assert proc.returncode == 143, out[-3000:]
    assert "stopped by SIGTERM" in out and "Traceback" not in out
    assert load_checkpoint(tmp_path / "term" / "last.pt")["progress"]["step"] >= 3
    assert not (tmp_path / "term" / "results.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["siamese", "crossmodal"])
def test_torchrun_two_processes(configs: dict[str, list[str]], tmp_path: Path, recipe: str) -> None:
    script = REPO / "recipes" / f"{recipe}.py"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
        "--config", *configs[recipe][:1], *configs[recipe][1:], *COMMON, "quiet=true", f"output_dir={tmp_path}", "run_name=ddp",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert res["summary"]["world_size"] == 2 and res["summary"]["epochs"] == 3
    history = res["history"]
    assert len(history) == 3 and history[-1]["train/loss_loss"] < history[0]["train/loss_loss"], history
    assert res["summary"]["test/auc"] > 0.5, res["summary"]
    records = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert sum("val/auc" in r and "epoch" in r for r in records) == 3  # rank 0 alone writes
    state = load_checkpoint(tmp_path / "ddp" / "best.pt")
    assert state["verification"]["threshold"] == res["summary"]["threshold"]


def test_crossmodal_trains_on_augmented_batches(configs: dict[str, list[str]], tmp_path: Path) -> None:
    """``augment.*`` was silently ignored by the cross-modal recipe: with it, the same seed's first step now
    sees other inputs, and without it (``augment.<m>=null``) the run is the plain one."""
    from dan.cli import main

    off = ["augment.image=null", "augment.audio=null"]
    first = {}
    for name, extra in (("aug", []), ("plain", off), ("plain_again", off)):
        args = [*configs["crossmodal"], *COMMON, "train.epochs=1", "quiet=true", f"output_dir={tmp_path}", f"run_name={name}"]
        assert main(["train", *args, *extra]) == 0
        rows = [json.loads(r) for r in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        first[name] = next(r["train/loss"] for r in rows if "train/loss" in r)
    assert first["plain"] == first["plain_again"]
    assert first["aug"] != first["plain"]
