"""Numerics: NaN/Inf inputs are named, then skipped or the run stopped (``train.nonfinite_inputs``);
gradient clipping keeps a high-learning-rate run finite where the same run without it blows up."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tiny_runs import tiny_run

import dan.engine.trainer as T
from dan.config import load_config
from dan.data.loader import check_finite_inputs
from dan.data.synthetic import SyntheticConfig, build_synthetic
from dan.engine.recipes import run_config
from dan.errors import ConfigError, DataFormatError

TINY = tiny_run(
    {"data.n_val": 40, "data.n_test": 40, "train.epochs": 1, "train.log_every": 100, "logger": "none", "device": "cpu"}
)


def _poisoned(cfg, preprocessing=None, only=None):  # type: ignore[no-untyped-def]
    splits = build_synthetic(cfg, preprocessing, only)
    train = splits["train"]
    train.items["image"][3, 0, 5, 5] = float("nan")
    train.items["audio"][5, 0, 0, 0] = float("inf")
    return splits


def _bad_samples() -> list[int]:
    rows = build_synthetic({"n_train": 120, "n_val": 40, "n_test": 40})["train"].rows
    return ((rows["image"] == 3) | (rows["audio"] == 5)).nonzero().flatten().tolist()


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> dict:
    monkeypatch.setattr(SyntheticConfig, "build", _poisoned)
    cfg = load_config("quickstart", [*TINY, *extra, f"output_dir={tmp_path}", "run_name=n"])
    return run_config(cfg)


def test_nonfinite_inputs_stop_the_run_naming_the_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = _bad_samples()
    assert len(bad) == 2
    with pytest.raises(DataFormatError) as info:
        _run(tmp_path, monkeypatch)  # train.nonfinite_inputs=stop is the default
    message = str(info.value)
    assert message.startswith("2 of 120 samples hold NaN or Inf inputs: ")
    for i in bad:
        assert f"sample {i} of split 'train'" in message
    assert message.endswith("set train.nonfinite_inputs=skip to drop them") and "\n" not in message
    assert not (tmp_path / "n").exists()  # stopped before any training


def test_nonfinite_inputs_skipped_by_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.warns(UserWarning, match=r"skipped 2 of 120 samples hold NaN or Inf inputs: sample "):
        summary = _run(tmp_path, monkeypatch, "train.nonfinite_inputs=skip", "train.batch_size=118")
    assert summary["steps"] == 1  # 118 finite samples left: exactly one batch of 118
    history = json.loads((tmp_path / "n" / "results.json").read_text())["history"]
    assert all(math.isfinite(v) for v in history[0].values())


def test_check_finite_inputs_unit() -> None:
    split = build_synthetic({"n_train": 20, "n_val": 10, "n_test": 10})["val"]
    assert check_finite_inputs(split, "stop") is split  # clean data passes untouched
    split.items["image"][:] = float("nan")
    with pytest.raises(DataFormatError, match="every sample of split 'val' would be skipped"):
        check_finite_inputs(split, "skip")
    with pytest.raises(ConfigError, match="valid choices: stop, skip"):
        check_finite_inputs(split, "ignore")
    with pytest.raises(
        ConfigError, match="train.nonfinite_inputs='ignore' is not valid; valid choices: stop, skip"
    ):
        load_config("quickstart", ["train.nonfinite_inputs=ignore"])


def test_gradient_clipping_holds_a_high_learning_rate_stable(tmp_path: Path) -> None:
    high_lr = [
        *TINY,
        "data.n_train=200",
        "train.epochs=2",
        "optimizer.name=sgd",
        "optimizer.lr=1.0",
        "optimizer.weight_decay=0",
        "scheduler.name=none",
        f"output_dir={tmp_path}",
    ]
    with pytest.raises(T.NonFiniteLossError, match="loss is nan at epoch 0"):
        run_config(load_config("quickstart", [*high_lr, "train.grad_clip=0", "run_name=free"]))
    summary = run_config(load_config("quickstart", [*high_lr, "train.grad_clip=1.0", "run_name=clip"]))
    assert summary["steps"] == 20
    history = json.loads((tmp_path / "clip" / "results.json").read_text())["history"]
    assert all(math.isfinite(v) for h in history for v in h.values())
    assert history[-1]["train/loss_fused"] < math.log(10) + 0.2  # no worse than chance: it did not blow up
    assert summary["test/acc"] > 0.2  # and it learned something (chance is 0.1)
    weights = torch.load(tmp_path / "clip" / "last.pt", weights_only=True)["model"]
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


def test_no_checkpoint_ever_holds_nonfinite_weights(tmp_path: Path) -> None:
    from dan.engine.checkpoint import load_checkpoint

    overrides = [*TINY, "train.epochs=3", "optimizer.lr=1e3", "train.checkpoint_every=2", "train.log_every=1",
                 f"output_dir={tmp_path}", "run_name=blow"]
    with pytest.raises(T.NonFiniteLossError) as info:
        run_config(load_config("quickstart", overrides))
    message = str(info.value)
    assert "The last good checkpoint is" in message and "Fix: lower optimizer.lr (now 1000), e.g. optimizer.lr=100" in message
    assert "grad_clip" not in message and "amp" not in message  # clipping is on and AMP is off on the CPU
    written = sorted((tmp_path / "blow").glob("*.pt"))
    for path in written:
        load_checkpoint(path)  # refuses NaN/Inf weights: every file written loads
    if "(none yet)" not in message:
        assert str(tmp_path / "blow" / "last.pt") in message


def test_a_checkpoint_with_nonfinite_weights_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dan.cli import main
    from dan.engine.checkpoint import load_checkpoint, save_checkpoint

    assert main(["train", "quickstart", *TINY, f"output_dir={tmp_path}", "run_name=ok"]) == 0
    state = load_checkpoint(tmp_path / "ok" / "best.pt")
    state.pop("format")
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    save_checkpoint(tmp_path / "nan.pt", state)
    capsys.readouterr()
    for command in (["eval", str(tmp_path / "nan.pt")], ["train", "quickstart", *TINY, f"resume={tmp_path / 'nan.pt'}"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path / 'nan.pt'}: 1 of " in err and f"weight tensors hold NaN or Inf ({name})" in err, err
        assert "take an earlier checkpoint" in err


def test_weights_gone_nonfinite_are_never_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clip, calls = T.clip_gradients, []

    def poison_on_step_3(params, max_norm):  # type: ignore[no-untyped-def]
        params = list(params)
        calls.append(1)
        if len(calls) == 3:
            with torch.no_grad():
                params[0].fill_(float("inf"))  # the weights, not the loss, go bad first
        return clip(params, max_norm)

    monkeypatch.setattr(T, "clip_gradients", poison_on_step_3)
    cfg = load_config("quickstart", [*TINY, "train.checkpoint_every=1", f"output_dir={tmp_path}", "run_name=w"])
    with pytest.raises(T.NonFiniteLossError, match=r"the weights became NaN or Inf by epoch 1 step 3 \(\d+ tensors, e\.g\. ") as info:
        run_config(cfg)
    assert f"The last good checkpoint is {tmp_path / 'w' / 'last.pt'} (step 2)" in str(info.value)
    from dan.engine.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "w" / "last.pt")["progress"]["step"] == 2  # untouched, and it loads
