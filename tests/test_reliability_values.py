"""Values the validator must stop before any data is read: non-finite and out-of-range numbers; and values
that only the data can refute (the class count, a batch larger than the training set), stopped before
training. Each is one line naming the key, with a value that works."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_runs import tiny_run

from dan.cli import main
from dan.config import load_config
from dan.errors import ConfigError


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=nan", "optimizer.lr must be a finite number > 0, got nan"),
        ("optimizer.lr=inf", "optimizer.lr must be a finite number > 0, got inf"),
        ("optimizer.weight_decay=-1", "optimizer.weight_decay must be a finite number >= 0, got -1"),
        ("optimizer.betas=[2,2]", "optimizer.betas[0] must lie in [0, 1), got 2"),
        ("optimizer.betas=[0.9]", "optimizer.betas must be two numbers"),
        ("optimizer.momentum=1.5", "optimizer.momentum must lie in [0, 1), got 1.5"),
        ("seed=99999999999999999999", "seed must lie in [0, 9.22337e+18), got 99999999999999999999"),
        ("seed=-1", "seed must lie in [0, 9.22337e+18), got -1"),
        ("train.grad_clip=nan", "train.grad_clip must be a finite number >= 0, got nan"),
        ("scheduler.min_lr=-0.1", "scheduler.min_lr must be a finite number >= 0"),
        ("model.num_classes=1", "model.num_classes must be at least 2"),
    ],
)
def test_out_of_range_values_are_refused_before_any_data(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("quickstart", [override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_num_classes_must_match_the_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "quickstart", *tiny_run(), "model.num_classes=12", f"output_dir={tmp_path}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "model.num_classes=12 but data.name=synthetic has 10 classes (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)" in err
    assert err.strip().endswith("set model.num_classes=10") and not any(tmp_path.iterdir())


def test_a_batch_larger_than_the_training_set_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "quickstart", *tiny_run(), "train.batch_size=1000000000", f"output_dir={tmp_path}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "train.batch_size=1000000000 exceeds the 120 samples of split 'train'" in err
    assert err.strip().endswith("set train.batch_size to at most 120")
    hint = ["train.batch_size=120"]
    assert main(["train", "quickstart", *tiny_run(), *hint, f"output_dir={tmp_path}", "train.epochs=1"]) == 0
