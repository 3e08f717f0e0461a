"""``dan data verify``: MNIST md5s, every FSDD recording read, and any registered dataset built split by split;
a bad file is named and the exit status is 1."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from dan.cli import main


def _root(tmp_path: Path, shared_data: Path, speakers: tuple[str, ...] = ("george", "jackson"), takes: int = 1) -> Path:
    root = tmp_path / "data"
    (root / "fsdd" / "recordings").mkdir(parents=True)
    (root / "mnist").symlink_to(shared_data / "mnist")
    for speaker in speakers:
        for digit in range(10):
            for take in range(takes):
                name = f"{digit}_{speaker}_{take}.wav"
                shutil.copy(shared_data / "fsdd" / "recordings" / name, root / "fsdd" / "recordings" / name)
    return root


def test_verify_checks_mnist_and_every_recording(tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _root(tmp_path, shared_data)
    assert main(["data", "verify", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "ok  " + str(root / "mnist" / "t10k-images-idx3-ubyte.gz") + ": official" in out
    assert "speaker george: 10 readable recordings, digits 0-9" in out
    bad = root / "fsdd" / "recordings" / "3_george_0.wav"
    bad.write_bytes(bad.read_bytes()[:60])  # cut inside the data chunk
    assert main(["data", "verify", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"BAD {bad}: {bad} is truncated" in out and "speaker george: 9 readable recordings, digits 0-9 except [3]" in out
    assert out.rstrip().endswith("files absent") and " 2 failed, 2 files absent" in out


def test_verify_a_named_dataset_builds_its_splits(tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _root(tmp_path, shared_data, ("george", "jackson", "lucas"), takes=2)
    assert main(["data", "verify", "fsdd", "val_speakers=[george]", "test_speakers=[nobody]", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "BAD data.name=fsdd: data.test_speakers=['nobody'] must name speakers of the data" in out
    assert main(["data", "verify", "fsdd", "data.val_speakers=[george]", "test_speakers=[jackson]", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "ok  split train: 20 samples, 10 classes (fewest 2), audio in 20" in out
    assert "ok  split test: 20 samples" in out


def test_verify_a_manifest_names_its_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = ["vector,label,split"]
    for i in range(12):
        np.save(tmp_path / f"v{i}.npy", np.full(4, float(i % 2), dtype=np.float32))
        rows.append(f"v{i}.npy,{i % 2},{('train', 'val', 'test')[i % 3]}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    args = ["data", "verify", "manifest", f"path={tmp_path / 'm.csv'}", "modalities.vector={reader: tensor, column: vector}"]
    assert main(args) == 0
    assert "ok  split train: 4 samples, 2 classes (fewest 2), vector in 4" in capsys.readouterr().out
    (tmp_path / "v5.npy").write_text("not an array")
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "BAD data.name=manifest" in out and "v5.npy" in out
