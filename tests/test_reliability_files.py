"""Only regular files are read: a FIFO named like an image or a recording, and a symlink loop, are named
(or skipped with ``data.on_bad_file=skip``), never read; nothing hangs, nothing raises a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dan.data.files import regular_file
from dan.data.folder import load_folder_tree
from dan.data.fsdd import read_audio
from dan.data.images import read_image
from dan.errors import DataFormatError, DataNotFoundError


def _odd_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    fifo = folder / "pipe.png"
    os.mkfifo(fifo)
    loop = folder / "loop.png"
    loop.symlink_to(loop)
    (folder / "dir.png").mkdir()
    return {"fifo": fifo, "loop": loop, "dir": folder / "dir.png"}


def test_regular_file_names_what_a_path_is(tmp_path: Path) -> None:
    odd = _odd_files(tmp_path)
    with pytest.raises(DataFormatError, match=r"pipe\.png is a named pipe \(FIFO\), not a regular file"):
        regular_file(odd["fifo"])
    with pytest.raises(DataFormatError, match=r"loop\.png is a symlink loop"):
        regular_file(odd["loop"])
    with pytest.raises(DataFormatError, match=r"dir\.png is a folder, not a regular file"):
        regular_file(odd["dir"])
    with pytest.raises(DataNotFoundError, match="no such file"):
        regular_file(tmp_path / "absent.png")
    for path in odd.values():
        with pytest.raises(DataFormatError):
            read_image(path)
        with pytest.raises(DataFormatError):
            read_audio(path)


def test_a_folder_dataset_with_a_fifo_and_a_loop_never_hangs(tmp_path: Path, shared_data: Path) -> None:
    root = tmp_path / "tree"
    for digit in ("0", "1"):
        (root / digit).mkdir(parents=True)
        for take in range(3):
            name = f"{digit}_george_{take}.wav"
            shutil.copy(shared_data / "fsdd" / "recordings" / name, root / digit / name)
    os.mkfifo(root / "0" / "pipe.wav")
    (root / "1" / "loop.wav").symlink_to(root / "1" / "loop.wav")
    with pytest.raises(DataFormatError, match=r"pipe\.wav is a named pipe"):
        load_folder_tree(root, "audio")
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable file\(s\)"):
        kept = load_folder_tree(root, "audio", on_error="skip")
    assert len(kept.labels) == 6 and not any(f.name in ("pipe.wav", "loop.wav") for f in kept.files)


def test_predict_on_a_fifo_answers_at_once(tmp_path: Path) -> None:
    from tiny_runs import tiny_run

    from dan.cli import main

    assert main(["train", "quickstart", *tiny_run({"train.epochs": 1}), f"output_dir={tmp_path}", "run_name=p"]) == 0
    odd = _odd_files(tmp_path / "odd")
    os.mkfifo(tmp_path / "odd" / "pipe.wav")
    for flag, path in (("--image", odd["fifo"]), ("--audio", tmp_path / "odd" / "pipe.wav"), ("--image", odd["loop"])):
        proc = subprocess.run(
            [sys.executable, "-m", "dan.cli", "predict", str(tmp_path / "p" / "best.pt"), flag, str(path)],
            capture_output=True, text=True, timeout=60,
        )
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert str(path) in proc.stderr and ("named pipe" in proc.stderr or "symlink loop" in proc.stderr), proc.stderr
