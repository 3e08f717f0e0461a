"""A run killed with SIGKILL mid-epoch and resumed from its last checkpoint ends bitwise equal to an
uninterrupted run with the same seed (CPU, one thread)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
from tiny_runs import tiny_run

from dan.cli import main
from dan.engine.checkpoint import load_checkpoint

RUN = tiny_run(
    {
        "data.n_train": 240,
        "model.modality_dropout": 0.3,
        "train.epochs": 3,
        "train.log_every": 5,
        "train.checkpoint_every": 4,
        "device": "cpu",
        "quiet": None,
    }
)


def _kill_after_first_checkpoint(tmp_path: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "dan.cli",
        "train",
        "quickstart",
        *RUN,
        "quiet=true",
        f"output_dir={tmp_path}",
        "run_name=killed",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
    )
    seen = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if "checkpoint saved" in line and "step=4" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    return tmp_path / "killed" / "last.pt"


def test_sigkill_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    last = _kill_after_first_checkpoint(tmp_path)
    state = load_checkpoint(last)
    progress = state["progress"]
    assert progress["epoch"] == 0 and 0 < progress["batch"] < 12, progress  # killed mid-epoch

    assert (
        main(
            [
                "train",
                "quickstart",
                *RUN,
                "quiet=true",
                f"output_dir={tmp_path}",
                "run_name=resumed",
                f"resume={last}",
            ]
        )
        == 0
    )
    assert main(["train", "quickstart", *RUN, "quiet=true", f"output_dir={tmp_path}", "run_name=full"]) == 0

    resumed = json.loads((tmp_path / "resumed" / "results.json").read_text())
    full = json.loads((tmp_path / "full" / "results.json").read_text())
    assert resumed["history"] == full["history"]
    for key in ("test/acc", "test/loss", "test/acc_image", "test/acc_audio", "best_val", "steps", "epochs"):
        assert resumed["summary"][key] == full["summary"][key], key
    a = load_checkpoint(tmp_path / "resumed" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in b)
