"""Every command an error message suggests works when pasted: the missing-data error's `dan ...` hints are
taken from the message and run as they are (the download hint needs a network and is tested against a local
server in test_download.py)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from dan.cli import main


def test_missing_data_hint_runs_when_pasted(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["train", "avmnist_concat_offline", f"data.root={tmp_path / 'empty'}", f"output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    hints = [h for h in re.findall(r"`(dan [^`]+)`", err) if not h.startswith("dan data download")]
    assert hints == ["dan train quickstart"], err
    for hint in hints:
        proc = subprocess.run(
            [sys.executable, "-m", "dan.cli", *shlex.split(hint)[1:]], cwd=tmp_path, capture_output=True, text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "runs" / "quickstart" / "results.json").read_text())["summary"]
    assert summary["data_source"] == "synthetic" and summary["test/acc"] > 0.5


def test_switching_dataset_drops_the_config_s_own_data_keys(tmp_path: Path) -> None:
    from dan.config import load_config

    cfg = load_config("avmnist_concat_offline", ["data.name=synthetic", "data.n_train=50"])
    assert dict(cfg.data) == {"name": "synthetic", "n_train": 50}
    same = load_config("avmnist_concat_offline", ["data.name=avmnist", "data.variant=hard"])
    assert same.data.variant == "hard" and "splits" in same.data  # the same dataset keeps its keys
    overrides = ["data.name=synthetic", "data.n_train=200", "data.n_val=60", "data.n_test=60", "train.epochs=1"]
    assert main(["train", "avmnist_concat_offline", *overrides, "quiet=true", f"output_dir={tmp_path}"]) == 0
    summary = json.loads((tmp_path / "avmnist_concat_offline" / "results.json").read_text())["summary"]
    assert summary["data_source"] == "synthetic"
