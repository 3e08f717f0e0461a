"""A real ``torchrun --nproc_per_node=2`` run on CPU (gloo) agrees with a 1-process run of the same
global batch: same step count, same number of validated samples (metrics reduced over ranks), and
validation accuracy within 0.05 and loss within 5% (the towers' BatchNorm sees 10 samples per rank instead of 20, so
the runs are close but not bitwise equal)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_runs import tiny_run

from dan.cli import main

REPO = Path(__file__).resolve().parents[1]
RUN = tiny_run({"data.n_train": 240, "train.epochs": 3, "train.log_every": 4, "device": "cpu", "optimizer.lr": 0.01})
TOLERANCE = 0.05


@pytest.mark.slow
@pytest.mark.parametrize("ema", ["0", "0.8"], ids=["plain", "ema"])  # ema: every rank averages the same weights
def test_torchrun_two_processes_agree_with_one(tmp_path: Path, ema: str) -> None:
    run = [*RUN, f"train.ema.decay={ema}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(REPO / "recipes" / "fusion.py"),
        "--config",
        "quickstart",
        *run,
        f"output_dir={tmp_path}",
        "run_name=ddp",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert main(["train", "quickstart", *run, f"output_dir={tmp_path}", "run_name=single"]) == 0

    ddp = json.loads((tmp_path / "ddp" / "results.json").read_text())
    single = json.loads((tmp_path / "single" / "results.json").read_text())
    # the global batch is the same: 12 steps per epoch of 2 ranks x 10 samples
    assert ddp["summary"]["world_size"] == 2 and single["summary"]["world_size"] == 1
    assert ddp["summary"]["steps"] == single["summary"]["steps"] == 36
    assert len(ddp["history"]) == len(single["history"]) == 3
    # only rank 0 writes: one metrics file, one line per validation
    records = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert sum("val/acc" in r for r in records) == 3
    for a, b in zip(ddp["history"], single["history"], strict=True):
        assert abs(a["val/acc"] - b["val/acc"]) <= TOLERANCE, (a, b)
        assert abs(a["val/loss"] - b["val/loss"]) <= TOLERANCE * b["val/loss"], (a, b)
    assert abs(ddp["summary"]["test/acc"] - single["summary"]["test/acc"]) <= TOLERANCE
    assert single["summary"]["test/acc"] > 0.5


@pytest.mark.slow
def test_torchrun_trains_the_group_adversary_as_one_process_does(tmp_path: Path) -> None:
    """The adversary is one of the run's modules: DDP does not own it, the engine averages its gradients. With
    2 ranks it ends where 1 process ends, up to what the towers' per-rank BatchNorm moves (its reversed
    gradient amplifies that difference, so the runs are compared on loss, not on a 60-sample accuracy)."""
    run = [*RUN, "data.speakers=3", "train.adversary.weight=1", "train.adversary.modality=audio"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(REPO / "recipes" / "fusion.py"), "--config", "quickstart", *run, f"output_dir={tmp_path}", "run_name=ddp",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert main(["train", "quickstart", *run, f"output_dir={tmp_path}", "run_name=single"]) == 0
    ddp, single = (json.loads((tmp_path / r / "results.json").read_text()) for r in ("ddp", "single"))
    assert ddp["summary"]["steps"] == single["summary"]["steps"] == 36
    for a, b in zip(ddp["history"], single["history"], strict=True):
        assert abs(a["val/loss"] - b["val/loss"]) <= TOLERANCE * b["val/loss"], (a, b)
    records = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["train/loss_adversary"]) for r in records if "train/loss_adversary" in r)
    weights = [torch.load(tmp_path / r / "last.pt", weights_only=True)["modules"]["adversary"] for r in ("ddp", "single")]
    for k, w in weights[1].items():
        assert float((weights[0][k] - w).norm() / w.norm()) < 0.3, k
