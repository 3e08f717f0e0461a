"""The minor cases of the reliability review: environment variables kept out of saved configs, no duplicate
log rows or stale temp files after a resume, one FSDD recording under two names refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tiny_runs import tiny_run

from dan.cli import main
from dan.config import load_config
from dan.data.fsdd import index_recordings
from dan.errors import ConfigError, DataFormatError
from dan.logging.console import ConsoleLogger


def test_environment_interpolation_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^wandb\.project='\$\{oc\.env:HOME\}' reads an environment variable"):
        load_config("quickstart", ["wandb.project=${oc.env:HOME}"])
    (tmp_path / "c.yaml").write_text("recipe: fusion\ndata: {name: synthetic}\nwandb:\n  tags: ['${oc.env:WANDB_API_KEY,x}']\n")
    with pytest.raises(ConfigError, match=r"^wandb\.tags\[0\]=.* pass wandb\.tags\[0\]=VALUE"):
        load_config(tmp_path / "c.yaml")


def test_rewind_drops_rows_after_the_checkpoint(tmp_path: Path) -> None:
    log = ConsoleLogger(tmp_path, quiet=True)
    for step in (2, 4, 6):
        log.log_scalars({"train/loss": 1.0}, step)
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 8, "train/lo')  # a row a kill cut in half
    log.rewind(4)
    assert [json.loads(r)["step"] for r in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [2, 4]


def test_resume_leaves_no_duplicate_rows_and_no_stale_temp_file(tmp_path: Path) -> None:
    args = ["train", "quickstart", *tiny_run({"train.epochs": 1}), f"output_dir={tmp_path}", "run_name=r"]
    assert main(args) == 0
    run = tmp_path / "r"
    with (run / "metrics.jsonl").open("a") as f:  # rows logged after the last checkpoint by a killed run
        f.write(json.dumps({"step": 7, "train/loss": 9.0}) + "\n")
    (run / ".last.pt.x1y2.tmp").write_bytes(b"half a checkpoint")  # a save cut short by a second signal
    assert main([*args, "train.epochs=2", f"resume={run / 'last.pt'}"]) == 0
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "train/loss" in r]
    assert steps == sorted(set(steps)) and 9.0 not in [r["train/loss"] for r in rows if "train/loss" in r]
    assert not list(run.glob(".*.tmp"))


@pytest.mark.parametrize("twin", ["2_george_07.wav", "2_george_0.WAV"])
def test_one_recording_under_two_names_is_refused(tmp_path: Path, shared_data: Path, twin: str) -> None:
    src = shared_data / "fsdd" / "recordings" / "2_george_0.wav"
    for name in ("2_george_0.wav", "3_george_0.wav"):
        shutil.copy(shared_data / "fsdd" / "recordings" / name, tmp_path / name)
    shutil.copy(src, tmp_path / ("2_george_7.wav" if twin == "2_george_07.wav" else twin))
    if twin == "2_george_07.wav":
        shutil.copy(src, tmp_path / twin)
    with pytest.raises(DataFormatError, match=r"name the same recording \(digit 2, speaker george, index [07]\)"):
        index_recordings(tmp_path)
