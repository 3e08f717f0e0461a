"""A run killed with SIGKILL mid-epoch and resumed from its last checkpoint ends bitwise equal to an
uninterrupted run with the same seed (CPU, one thread), with EMA, with mixup and with a group adversary too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_runs import signal_when, tiny_run

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


def _kill_after_first_checkpoint(tmp_path: Path, run: list[str]) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "dan.cli",
        "train",
        "quickstart",
        *run,
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
    out = signal_when(proc, "(latest) step=4", signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, out
    return tmp_path / "killed" / "last.pt"


ADVERSARY = ["data.speakers=3", "train.adversary.weight=1", "train.adversary.modality=audio"]


@pytest.mark.parametrize(
    "extra",
    [[], ["train.ema.decay=0.8"], ["train.mixup=0.4"], ADVERSARY],
    ids=["plain", "ema", "mixup", "adversary"],
)
def test_sigkill_then_resume_equals_uninterrupted(tmp_path: Path, extra: list[str]) -> None:
    run = [*RUN, *extra]
    last = _kill_after_first_checkpoint(tmp_path, run)
    state = load_checkpoint(last)
    progress = state["progress"]
    assert progress["epoch"] == 0 and 0 < progress["batch"] < 12, progress  # killed mid-epoch

    assert (
        main(
            [
                "train",
                "quickstart",
                *run,
                "quiet=true",
                f"output_dir={tmp_path}",
                "run_name=resumed",
                f"resume={last}",
            ]
        )
        == 0
    )
    assert main(["train", "quickstart", *run, "quiet=true", f"output_dir={tmp_path}", "run_name=full"]) == 0

    assert not (tmp_path / "resumed").exists()  # a resumed run continues in its own folder
    resumed = json.loads((tmp_path / "killed" / "results.json").read_text())
    full = json.loads((tmp_path / "full" / "results.json").read_text())
    assert resumed["history"] == full["history"]
    for key in ("test/acc", "test/loss", "test/acc_image", "test/acc_audio", "best_val", "steps", "epochs"):
        assert resumed["summary"][key] == full["summary"][key], key
    a, b = load_checkpoint(tmp_path / "killed" / "last.pt"), load_checkpoint(tmp_path / "full" / "last.pt")
    for weights in ("model", *(["train_model"] if "train.ema.decay=0.8" in extra else [])):
        assert all(torch.equal(a[weights][k], b[weights][k]) for k in b[weights]), weights
    assert a.get("ema") == b.get("ema")
    assert a["modules"].keys() == b["modules"].keys()
    assert ("adversary" in b["modules"]) == (extra == ADVERSARY)
    for name, state in b["modules"].items():  # the balancer's and the adversary's own weights
        assert all(torch.equal(a["modules"][name][k], v) for k, v in state.items()), name


SHORT = tiny_run({"train.epochs": 1})


def _first_run(tmp_path: Path) -> Path:
    assert main(["train", "quickstart", *SHORT, f"output_dir={tmp_path}", "run_name=a"]) == 0
    return tmp_path / "a" / "last.pt"


def test_resume_may_extend_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    last = _first_run(tmp_path)
    capsys.readouterr()
    assert main(["train", "quickstart", *SHORT, "train.epochs=3", f"resume={last}"]) == 0
    assert "train.epochs changed from 1 to 3: the learning-rate schedule is rebuilt for 3 epochs and continued from step 6" in capsys.readouterr().out
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    assert [h["epoch"] for h in res["history"]] == [1, 2, 3] and res["summary"]["steps"] == 18
    # the rebuilt schedule is where a 3-epoch schedule is at each step
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.003)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.003, total_steps=18, pct_start=0.25)
    lrs = []
    for _ in range(18):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert [h["lr"] for h in res["history"][1:]] == pytest.approx([lrs[11], lrs[17]])


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("train.batch_size=30", "train.batch_size: checkpoint 20, now 30"),
        ("optimizer.name=sgd", "optimizer.name: checkpoint 'adamw', now 'sgd'"),
        ("balancer.name=uncertainty", "balancer.name: checkpoint 'static', now 'uncertainty'"),
        ("model.dim=32", "model.dim: checkpoint 16, now 32"),
        ("train.ema.decay=0.9", "train.ema.decay: checkpoint 0.0, now 0.9"),
    ],
)
def test_resume_names_a_change_it_cannot_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str, named: str
) -> None:
    last = _first_run(tmp_path)
    capsys.readouterr()
    assert main(["train", "quickstart", *SHORT, change, f"resume={last}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"resume={last}: the config differs from the checkpoint's in keys resume cannot change: {named}" in err
    assert "or start a new run without resume=" in err


def test_resume_from_a_checkpoint_without_progress_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dan.engine.checkpoint import save_checkpoint

    last = _first_run(tmp_path)
    state = load_checkpoint(last)
    del state["progress"], state["format"]
    save_checkpoint(tmp_path / "weights.pt", state)
    capsys.readouterr()
    assert main(["train", "quickstart", *SHORT, f"resume={tmp_path / 'weights.pt'}"]) == 2
    assert "holds no training progress" in capsys.readouterr().err
