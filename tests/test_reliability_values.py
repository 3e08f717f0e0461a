"""Values that only the data can refute (the class count, a batch larger than the training set), stopped
before training, in one line naming the key with a value that works. (Non-finite and out-of-range numbers,
stopped before any data is read, are cases of tests/test_config.py::test_bad_values_give_one_line_errors.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_runs import tiny_run

from dan.cli import main


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
