"""Faults while training: a full disk or a read-only run folder when a checkpoint is saved, an unreachable
W&B backend, a batch that cannot be assembled. Each gives a clear error (or a warning) and loses no work."""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path

import pytest
import torch
from test_wandb import read_records
from tiny_runs import tiny_run

import dan.engine.checkpoint as ckpt
from dan.cli import main
from dan.data import TensorBatchLoader
from dan.data.dataset import Split
from dan.engine.checkpoint import load_checkpoint, save_checkpoint
from dan.errors import CheckpointError, DataFormatError

TINY = tiny_run({"data.n_val": 40, "data.n_test": 40, "train.epochs": None, "device": "cpu"})
DEV_FULL = Path("/dev/full")


def _disk_full_after(monkeypatch: pytest.MonkeyPatch, good_writes: int) -> None:
    """Checkpoint files after the first ``good_writes`` are written to /dev/full: the kernel's ENOSPC."""
    real = os.fdopen
    calls = {"n": 0}

    def fdopen(fd: int, mode: str = "r", *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] <= good_writes:
            return real(fd, mode, *args, **kwargs)
        os.close(fd)
        return open(DEV_FULL, mode)  # noqa: SIM115 - closed by the caller's with block

    monkeypatch.setattr(ckpt.os, "fdopen", fdopen)


@pytest.mark.skipif(not DEV_FULL.exists(), reason="needs /dev/full (Linux)")
def test_full_disk_names_the_path_and_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _disk_full_after(
        monkeypatch, good_writes=2
    )  # epoch 1 writes last.pt and best.pt; epoch 2 hits the full disk
    args = ["train", "quickstart", *TINY, "train.epochs=3", f"output_dir={tmp_path}", "run_name=full"]
    assert main(args) == 2
    last = tmp_path / "full" / "last.pt"
    err = capsys.readouterr().err.strip()
    assert err == (
        f"dan train: error: could not write checkpoint {last} (No space left on device); the previous "
        f"checkpoint there is intact. Fix: free space on the disk holding {last.parent} or set output_dir= "
        "to another disk"
    )
    monkeypatch.undo()
    assert load_checkpoint(last)["progress"]["epoch"] == 1  # epoch 1's checkpoint, whole
    assert sorted(p.name for p in last.parent.iterdir() if p.name != ".lock") == ["best.pt", "last.pt", "metrics.jsonl"]


def _read_only(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``folder`` read-only; where that does not stop writes (running as root), make the write fail
    the way a read-only mount does."""
    folder.chmod(0o555)
    probe = folder / ".probe"
    try:
        probe.touch()
    except PermissionError:
        return
    probe.unlink()

    def new_temp_file(path: Path) -> tuple[int, str]:
        raise OSError(errno.EROFS, "Read-only file system", str(path.parent))

    monkeypatch.setattr(ckpt, "new_temp_file", new_temp_file)


def test_read_only_run_folder_names_the_path_and_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_checkpoint(tmp_path / "run" / "last.pt", {"progress": {"step": 1}})
    _read_only(path.parent, monkeypatch)
    try:
        with pytest.raises(CheckpointError) as info:
            save_checkpoint(path, {"progress": {"step": 2}})
    finally:
        path.parent.chmod(0o755)
    message = str(info.value)
    assert message.startswith(f"could not write checkpoint {path} (")
    assert f"the previous checkpoint there is intact. Fix: make {path.parent} writable" in message
    assert "\n" not in message
    assert load_checkpoint(path)["progress"]["step"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_run_folder_that_cannot_be_created_is_a_checkpoint_error(tmp_path: Path) -> None:
    blocker = tmp_path / "runs"
    blocker.write_text("a file where the run folder should go")
    with pytest.raises(
        CheckpointError, match=rf"could not write checkpoint {blocker}/x/last.pt .*no checkpoint"
    ):
        save_checkpoint(blocker / "x" / "last.pt", {"progress": {}})


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_wandb_backend_keeps_the_run_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    args = [*TINY, "train.epochs=1", "logger=wandb", "wandb.mode=online", "wandb.init_timeout=3"]
    started = time.perf_counter()
    with pytest.warns(
        UserWarning, match=r"W&B backend unreachable .*the run is kept offline in .*wandb sync"
    ):
        assert main(["train", "quickstart", *args, f"output_dir={tmp_path}", "run_name=o"]) == 0
    assert time.perf_counter() - started < 90  # a 3 s init timeout, not W&B's default 90 s of retries
    assert json.loads((tmp_path / "o" / "results.json").read_text())["summary"]["epochs"] == 1
    (run_file,) = (tmp_path / "wandb").glob("wandb/offline-run-*/run-*.wandb")
    history = [r for r in read_records(run_file) if r.WhichOneof("record_type") == "history"]
    logged = {i.key or "/".join(i.nested_key) for r in history for i in r.history.item}
    assert {"train/loss", "val/acc"} <= logged  # the offline run holds the training it can sync later


def _split(n: int = 12) -> Split:
    return Split.aligned(
        "train",
        {"image": torch.zeros(n, 1, 28, 28), "audio": torch.zeros(n, 1, 4, 5)},
        torch.arange(n) % 10,
        manifest_hash="x",
        preprocessing={},
        source="test",
    )


def test_a_sample_that_cannot_be_loaded_is_named() -> None:
    split = _split()
    split.rows["audio"][7] = 99  # a row pointing past the audio storage (a stale or tampered sample table)
    loader = TensorBatchLoader(split, 4, shuffle=False)
    with pytest.raises(
        DataFormatError, match=r"could not load sample 7 of split 'train' \(audio row 99, image row 7\)"
    ):
        list(loader)
    assert len(list(TensorBatchLoader(_split(), 4, shuffle=False))) == 3
