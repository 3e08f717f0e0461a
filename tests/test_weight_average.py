"""``train.ema``: the weight average's arithmetic, what a run validates, checkpoints and tests with it, and
resuming runs written with and without it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_runs import tiny_run
from torch import nn

from dan.cli import main
from dan.engine.checkpoint import load_checkpoint, save_checkpoint
from dan.engine.weight_average import WeightAverage


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def _step(net: nn.Module, k: int) -> None:
    with torch.no_grad():
        for p in net.parameters():
            p.add_(float(k))
    net.train()(torch.randn(8, 3))  # moves BatchNorm's running statistics and its batch counter


@pytest.mark.parametrize("warmup", [False, True])
def test_the_average_follows_its_formula(warmup: bool) -> None:
    net = _net()
    avg = WeightAverage(net, decay=0.8, warmup=warmup)
    expected: dict[str, torch.Tensor] = {}
    for k in range(1, 6):
        _step(net, k)
        decay = min(0.8, (1 + k - 1) / (10 + k - 1)) if warmup else 0.8
        now = {name: t.detach().clone() for name, t in net.state_dict().items()}
        expected = {  # the first update copies; num_batches_tracked (an integer) is copied, not averaged
            name: decay * expected[name] + (1 - decay) * t if expected and t.is_floating_point() else t
            for name, t in now.items()
        }
        avg.update(net)
    got = avg.state_dict()
    assert got.keys() == expected.keys()
    for name, e in expected.items():
        assert got[name].dtype == e.dtype, name
        torch.testing.assert_close(got[name], e, rtol=1e-6, atol=1e-6)
    assert avg.updates == 5


def test_the_warmup_ramps_the_decay() -> None:
    avg = WeightAverage(_net(), decay=0.99, warmup=True)
    seen = []
    for _ in range(1000):
        seen.append(avg.current_decay())
        avg.updates += 1
    assert seen[0] == pytest.approx(0.1) and seen[10] == pytest.approx(11 / 20)
    assert seen == sorted(seen) and max(seen) == 0.99
    assert WeightAverage(_net(), decay=0.99, warmup=False).current_decay() == 0.99


def test_swapping_in_the_average_restores_the_model_exactly() -> None:
    net = _net()
    avg = WeightAverage(net, decay=0.5, warmup=False)
    avg.update(net)
    _step(net, 3)
    own = {k: v.clone() for k, v in net.state_dict().items()}
    with avg.swapped_into(net):
        inside = net.state_dict()
        for k, v in avg.state_dict().items():
            assert torch.equal(inside[k], v)
        assert not torch.equal(inside["0.weight"], own["0.weight"])
    after = net.state_dict()
    assert all(torch.equal(after[k], own[k]) for k in own)


EMA = tiny_run({"train.epochs": 2, "train.ema.decay": 0.9})


def test_a_run_with_ema_checkpoints_and_tests_the_average(tmp_path: Path) -> None:
    assert main(["train", "quickstart", *EMA, f"output_dir={tmp_path}", "run_name=ema"]) == 0
    state = load_checkpoint(tmp_path / "ema" / "last.pt")
    assert state["ema"] == {"updates": 12}  # 2 epochs x 6 steps of 20 samples
    averaged, trained = state["model"], state["train_model"]
    assert averaged.keys() == trained.keys()
    assert any(not torch.equal(averaged[k], trained[k]) for k in averaged if averaged[k].is_floating_point())
    # the run's own test figure is the averaged weights' figure: dan eval reads checkpoint["model"]
    res = json.loads((tmp_path / "ema" / "results.json").read_text())["summary"]
    assert res["best_epoch"] == 2  # with 2 epochs, both checkpoints hold the same weights when epoch 2 is best
    assert main(["eval", str(tmp_path / "ema" / "last.pt"), "eval.noise_levels=[0]", "--out", str(tmp_path / "ev")]) == 0
    evaluated = json.loads((tmp_path / "ev" / "eval_test.json").read_text())
    assert evaluated["acc"] == pytest.approx(res["test/acc"], abs=1e-9)
    assert evaluated["loss"] == pytest.approx(res["test/loss"], rel=1e-6)


def test_a_run_without_ema_keeps_one_set_of_weights(tmp_path: Path) -> None:
    assert main(["train", "quickstart", *tiny_run({"train.epochs": 1}), f"output_dir={tmp_path}", "run_name=a"]) == 0
    state = load_checkpoint(tmp_path / "a" / "last.pt")
    assert "train_model" not in state and "ema" not in state


@pytest.mark.parametrize("decay", ["1.0", "-0.1", "nan"])
def test_a_decay_outside_zero_one_is_refused(decay: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "quickstart", *tiny_run({"train.ema.decay": decay})]) == 2
    assert "train.ema.decay must lie in [0, 1), got" in capsys.readouterr().err


def test_a_checkpoint_from_before_train_ema_resumes(tmp_path: Path) -> None:
    short = tiny_run({"train.epochs": 1})
    assert main(["train", "quickstart", *short, f"output_dir={tmp_path}", "run_name=old"]) == 0
    last = tmp_path / "old" / "last.pt"
    state = load_checkpoint(last)
    del state["config"]["train"]["ema"]  # as dan wrote it before the key existed
    save_checkpoint(last, state)
    assert main(["train", "quickstart", *short, "train.epochs=2", f"resume={last}"]) == 0
    assert json.loads((tmp_path / "old" / "results.json").read_text())["summary"]["epochs"] == 2


def test_an_averaged_checkpoint_without_its_trained_weights_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = tiny_run({"train.epochs": 1, "train.ema.decay": 0.9})
    assert main(["train", "quickstart", *first, f"output_dir={tmp_path}", "run_name=a"]) == 0
    last = tmp_path / "a" / "last.pt"
    state = load_checkpoint(last)
    del state["train_model"]
    save_checkpoint(last, state)
    capsys.readouterr()
    args = ["train", "quickstart", *tiny_run({"train.epochs": 2, "train.ema.decay": 0.9}), f"resume={last}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"resume={last}: the checkpoint's config has train.ema.decay=0.9 but it lacks train_model" in err
    assert "start a new run without resume=" in err
