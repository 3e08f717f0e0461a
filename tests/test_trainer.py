"""Trainer pieces: optimiser and scheduler from config, early stopping, held-out split, NaN stop,
gradient clipping, and a balancer that needs held-out losses driven by the recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_runs import tiny_run

import dan.engine.trainer as T
from dan.cli import main
from dan.config import load_config
from dan.data.synthetic import build_synthetic
from dan.engine.checkpoint import improves, load_checkpoint
from dan.engine.recipes import run_config
from dan.errors import ConfigError

TINY = tiny_run()


def _params() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.ones(3))]


def test_optimizers_and_schedulers_from_config() -> None:
    cfg = load_config("quickstart", ["optimizer.name=sgd", "optimizer.lr=0.1", "optimizer.momentum=0.5"])
    opt = T.build_optimizer(_params(), cfg.optimizer)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.5
    assert opt.param_groups[0]["nesterov"] is True
    adam = T.build_optimizer(_params(), load_config("quickstart").optimizer)
    assert isinstance(adam, torch.optim.AdamW) and adam.param_groups[0]["weight_decay"] == 0.01

    one = T.build_scheduler(adam, load_config("quickstart").scheduler, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(T.current_lr(adam))
        adam.step()
        one.step()
    assert max(lrs) == pytest.approx(0.003, rel=0.02) and lrs[0] < 0.001 and lrs[-1] < lrs[3]
    sgd = T.build_optimizer(_params(), cfg.optimizer)
    cos = T.build_scheduler(
        sgd, load_config("quickstart", ["scheduler.name=cosine", "scheduler.min_lr=0.01"]).scheduler, 4
    )
    for _ in range(4):
        sgd.step()
        cos.step()
    assert T.current_lr(sgd) == pytest.approx(0.01)
    assert T.build_scheduler(sgd, {"name": "none"}, 4) is None


def test_early_stopping() -> None:
    stop = T.EarlyStopping(patience=2, mode="max")
    assert [stop.step(v) for v in (0.5, 0.6, 0.6, 0.55)] == [False, False, False, True]
    again = T.EarlyStopping(patience=2, mode="max")
    again.load_state_dict(stop.state_dict())
    assert again.best == 0.6 and again.bad_epochs == 2
    never = T.EarlyStopping(patience=0, mode="min")
    assert not any(never.step(v) for v in (1.0, 2.0, 3.0))
    last = T.EarlyStopping(patience=1, mode="last")
    assert not any(last.step(v) for v in (1.0, 2.0, 0.5)) and last.best == 0.5
    assert improves(0.1, 0.5, "last") and improves(0.9, 0.5, "last") and not improves(0.9, 0.5, "min")


def test_early_stopping_ends_the_run(tmp_path: Path) -> None:
    args = [
        "train.epochs=6",
        "train.early_stopping.patience=1",
        "train.early_stopping.metric=val/loss",
        "train.early_stopping.mode=min",
        "optimizer.lr=1e-9",
        "scheduler.name=none",
    ]
    assert main(["train", "quickstart", *TINY, *args, f"output_dir={tmp_path}", "run_name=es"]) == 0
    summary = json.loads((tmp_path / "es" / "results.json").read_text())["summary"]
    assert summary["epochs"] < 6  # a learning rate of 1e-9 cannot improve the loss for long


def test_mode_last_keeps_the_last_epoch(tmp_path: Path) -> None:
    args = ["train.epochs=3", "train.early_stopping.metric=val/loss", "train.early_stopping.mode=last"]
    assert main(["train", "quickstart", *TINY, *args, f"output_dir={tmp_path}", "run_name=last"]) == 0
    run = tmp_path / "last"
    summary = json.loads((run / "results.json").read_text())["summary"]
    assert summary["best_epoch"] == 3 and summary["epochs"] == 3
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val_loss = [e["val/loss"] for e in history if "val/loss" in e]
    assert summary["best_val"] == val_loss[-1]
    best, last = load_checkpoint(run / "best.pt")["model"], load_checkpoint(run / "last.pt")["model"]
    assert all(torch.equal(best[k], last[k]) for k in last)


def test_mode_last_refuses_patience(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train.early_stopping.mode=last", "train.early_stopping.patience=2", f"output_dir={tmp_path}"]
    assert main(["train", "quickstart", *TINY, *args]) == 2
    assert "set train.early_stopping.patience=0, or mode=max or min" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # refused before a run folder was claimed
    fixed = [*args, "train.early_stopping.patience=0", "train.epochs=1", "run_name=fixed"]
    assert main(["train", "quickstart", *TINY, *fixed]) == 0


def test_clip_gradients() -> None:
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.full((4,), 3.0)
    assert T.clip_gradients([p], 1.0) == pytest.approx(6.0)
    assert float(p.grad.norm()) == pytest.approx(1.0, rel=1e-5)


def test_split_heldout_is_disjoint_and_seeded() -> None:
    split = build_synthetic({"n_train": 50, "n_val": 10, "n_test": 10})["train"]
    train, held = T.split_heldout(split, 0.2, seed=3)
    assert len(train) == 40 and len(held) == 10 and held.name == "train-heldout"
    rows = set(train.rows["image"].tolist())
    assert not rows & set(held.rows["image"].tolist())
    assert torch.equal(T.split_heldout(split, 0.2, seed=3)[1].rows["audio"], held.rows["audio"])


def test_nan_loss_stops_and_keeps_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dan.losses.balancers import StaticBalancer

    real = StaticBalancer.combine
    calls = {"n": 0}

    def poisoned(self, fused, per, ctx):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        loss = real(self, fused, per, ctx)
        return loss * float("nan") if calls["n"] == 9 else loss

    monkeypatch.setattr(StaticBalancer, "combine", poisoned)
    cfg = load_config(
        "quickstart", [*TINY, "train.checkpoint_every=4", f"output_dir={tmp_path}", "run_name=nan"]
    )
    with pytest.raises(
        T.NonFiniteLossError, match=r"loss is nan at epoch 1 step 8 .*last good checkpoint is .*last\.pt"
    ):
        run_config(cfg)
    state = load_checkpoint(tmp_path / "nan" / "last.pt")
    assert state["progress"]["step"] == 8
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_gradient_blend_holds_out_data_and_updates_weights(tmp_path: Path) -> None:
    args = [
        "balancer.name=gradient_blend",
        "balancer.every=2",
        "balancer.estimate_epochs=1",
        "train.epochs=3",
        "train.heldout_fraction=0.25",
        f"output_dir={tmp_path}",
        "run_name=gb",
    ]
    assert main(["train", "quickstart", *TINY, *args]) == 0
    records = [json.loads(x) for x in (tmp_path / "gb" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "balancer/fused" in r]
    first, last = steps[0], steps[-1]
    assert first["balancer/fused"] != pytest.approx(1 / 3)  # estimated before the first step
    assert sum(first[f"balancer/{h}"] for h in ("fused", "audio", "image")) == pytest.approx(1.0)
    assert last["balancer/fused"] != pytest.approx(first["balancer/fused"])  # re-estimated at epoch 2
    # every validation logs each modality's Shapley contribution and the imbalance degree
    vals = [r for r in records if "val/acc" in r]
    assert len(vals) == 3 and all({"val/shapley_audio", "val/shapley_image", "val/imbalance"} <= set(r) for r in vals)
    # 90 of 120 pairs are trained on: 5 batches of 20 per epoch
    assert json.loads((tmp_path / "gb" / "results.json").read_text())["summary"]["steps"] == 15


def test_global_batch_must_split_over_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    import dan.engine.distributed as dist
    from dan.engine import Engine

    monkeypatch.setattr(dist, "setup", lambda device: dist.DistInfo(rank=0, world_size=3))
    cfg = load_config("quickstart", [*TINY, "train.batch_size=20"])
    with pytest.raises(ConfigError, match="train.batch_size=20 must divide by the 3 processes"):
        Engine(cfg)


def test_resume_on_other_data_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = [*TINY, "train.epochs=1", f"output_dir={tmp_path}"]
    assert main(["train", "quickstart", *common, "run_name=a"]) == 0
    last = tmp_path / "a" / "last.pt"
    assert main(["train", "quickstart", *common, "run_name=b", "data.seed=5", f"resume={last}"]) == 2
    assert "the checkpoint was trained on other data (manifest hash differs)" in capsys.readouterr().err


@pytest.mark.parametrize("total", [1, 2, 3, 5, 9])
def test_onecycle_survives_runs_too_short_for_its_warmup_fraction(total: int) -> None:
    # 5 steps at pct_start=0.2 gave torch a warm-up of 0 steps and a ZeroDivisionError
    opt = T.build_optimizer(_params(), load_config("quickstart").optimizer)
    sched = T.build_scheduler(opt, {"name": "onecycle", "pct_start": 0.2}, total_steps=total)
    for _ in range(total):
        opt.step()
        sched.step()
    assert 0 < T.current_lr(opt) <= load_config("quickstart").optimizer.lr


@pytest.mark.parametrize("init_scale", [1.0, float("inf")])
def test_a_step_the_grad_scaler_skips_skips_the_balancers_gradient_work(
    init_scale: float, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found on CUDA with AMP: an fp16 overflow step's gradients reached greedy's speed sums (inf, then a math
    domain error). A step the scaler skips (here every one: an infinite scale overflows every gradient) runs no
    balancer gradient hook and moves no weight; a finite scale runs the hook at every step."""
    from dan.losses.balancers.greedy import GreedyBalancer

    calls = {"n": 0}
    real = GreedyBalancer.after_backward

    def counted(self, ctx):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        real(self, ctx)
        assert torch.isfinite(self.bypass).all() and torch.isfinite(self.main).all()

    monkeypatch.setattr(GreedyBalancer, "after_backward", counted)
    monkeypatch.setattr(T, "grad_scaler", lambda device, enabled: torch.amp.GradScaler("cpu", init_scale=init_scale))
    overrides = tiny_run({"train.epochs": 1, "logger": "none", "device": "cpu"})
    cfg = load_config("quickstart", ["balancer=greedy", *overrides, f"output_dir={tmp_path}", "run_name=amp"])
    run_config(cfg)
    steps = json.loads((tmp_path / "amp" / "results.json").read_text())["summary"]["steps"]
    assert calls["n"] == (steps if init_scale == 1.0 else 0)
