"""docs/adding-a-modality.md, word for word: the test writes a small three-modality dataset (PNG images of
several sizes, WAV recordings at several rates and channel counts, ``.npy`` vectors; rows with a missing
modality), takes the config and the ``dan`` commands from the doc's code blocks and runs them in a fresh
process each: train (stopped by SIGTERM after its first checkpoint), resume, eval, eval on a test-only
manifest, predict. Only ``quiet=true`` is appended to the training commands."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image
from tiny_runs import signal_when

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "adding-a-modality.md"
CLASSES = ("cat", "dog", "owl")
FREQS = (300.0, 900.0, 1800.0)


def doc_blocks() -> tuple[str, list[str]]:
    """The doc's ``my_data.yaml`` block and its ``dan ...`` command lines."""
    text = DOC.read_text()
    blocks = re.findall(r"```(\w*)\n(.*?)```", text, flags=re.S)
    (config,) = [body for lang, body in blocks if lang == "yaml" and body.startswith("# my_data.yaml")]
    commands = [
        line.strip() for lang, body in blocks if lang == "bash" for line in body.splitlines() if line.startswith("dan ")
    ]
    return config, commands


def write_sample(root: Path, i: int, label: int, g: torch.Generator, image: bool, audio: bool) -> dict[str, str]:
    """One sample's files, their content telling the class apart; returns the manifest cells."""
    name = f"{i:04d}"
    cells = {"image": "", "audio": "", "vector": f"vectors/{name}.npy"}
    if image:
        size = (28, 36, 20)[i % 3]
        x = 0.15 * torch.rand(size, size, generator=g)
        band = slice(int(size * (0.15 + 0.3 * label)), int(size * (0.15 + 0.3 * label)) + max(2, size // 7))
        x[band, :] += 0.8
        Image.fromarray((x.clamp(0, 1) * 255).byte().numpy()).save(root / "images" / f"{name}.png")
        cells["image"] = f"images/{name}.png"
    if audio:
        rate = (8000, 16000)[i % 2]
        t = torch.arange(int(rate * 0.6)) / rate
        wave = 0.5 * torch.sin(2 * math.pi * FREQS[label] * t) + 0.05 * torch.randn(len(t), generator=g)
        data = wave.numpy() if i % 4 else np.stack([wave.numpy(), wave.numpy()], 1)  # some stereo
        sf.write(root / "audio" / f"{name}.wav", data, rate)
        cells["audio"] = f"audio/{name}.wav"
    vec = torch.randn(8, generator=g) * 0.5
    vec[label] += 1.0
    np.save(root / "vectors" / f"{name}.npy", vec.numpy())
    return cells


def write_dataset(root: Path, speakers: int = 6, per_speaker: int = 9, first: int = 1) -> list[dict[str, str]]:
    for sub in ("images", "audio", "vectors"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(first)
    rows, i = [], first
    for s in range(speakers):
        for k in range(per_speaker):
            label = k % 3
            cells = write_sample(root, i, label, g, image=(i % 7 != 3), audio=(i % 5 != 2))
            rows.append({**cells, "label": CLASSES[label], "speaker": f"s{s}"})
            i += 1
    return rows


def write_manifest(path: Path, rows: list[dict[str, str]], extra: dict[str, str] | None = None) -> None:
    cols = ["image", "audio", "vector", "label", "speaker", *(extra or {})]
    lines = [",".join(cols)] + [",".join({**r, **(extra or {})}[c] for c in cols) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def dan(args: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "dan.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300, **kwargs
    )


def test_manifest_walkthrough_of_the_docs(tmp_path: Path) -> None:
    config, commands = doc_blocks()
    train, resume, evaluate, evaluate_new, predict = commands
    rows = write_dataset(tmp_path / "my_data")
    write_manifest(tmp_path / "my_data" / "manifest.csv", rows)
    assert any(r["image"] == "" for r in rows) and any(r["audio"] == "" for r in rows)
    (tmp_path / "my_data.yaml").write_text(config)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}

    # 1. train, stopped by SIGTERM once its first step checkpoint is written
    proc = subprocess.Popen(
        [sys.executable, "-m", "dan.cli", *shlex.split(train)[1:], "quiet=true"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    out = signal_when(proc, "(latest) step=5", signal.SIGTERM)
    assert proc.returncode == 143, out
    last = tmp_path / "runs" / "my_data" / "last.pt"
    assert last.exists() and not (tmp_path / "runs" / "my_data" / "results.json").exists()

    # 2. resume to the end
    out = dan([*shlex.split(resume)[1:], "quiet=true"], tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from runs/my_data/last.pt" in out.stdout + out.stderr
    summary = json.loads((tmp_path / "runs" / "my_data" / "results.json").read_text())["summary"]
    assert summary["epochs"] == 15
    assert summary["test/acc"] >= 0.8, summary  # the classes are easy to tell apart from any modality
    state = torch.load(tmp_path / "runs" / "my_data" / "best.pt", weights_only=True)
    assert state["preprocessing"]["classes"] == list(CLASSES)
    assert sorted(state["preprocessing"]["modalities"]) == ["audio", "image", "vector"]

    # 3. evaluate the best checkpoint on its test split
    out = dan(shlex.split(evaluate)[1:], tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "runs" / "my_data" / "eval-best-test" / "eval_test.json").read_text())
    assert report["acc"] == summary["test/acc"] and set(report["modality_acc"]) == {"audio", "image", "vector"}

    # 4. ... and on new data: a manifest of test rows only, in another folder
    new_rows = write_dataset(tmp_path / "new_recordings", speakers=2, per_speaker=6, first=500)
    write_manifest(tmp_path / "new_recordings" / "manifest.csv", new_rows, {"split": "test"})
    out = dan(shlex.split(evaluate_new)[1:], tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "runs" / "my_data" / "eval-best-test-2" / "eval_test.json").read_text())
    assert report["num_samples"] == 12 and report["acc"] >= 0.75, report

    # 5. predict from the three files of sample 0001
    out = dan([*shlex.split(predict)[1:], "--json"], tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["used"] == ["audio", "image", "vector"] and result["label"] in CLASSES
    assert result["label"] == rows[0]["label"]
