"""The AV-MNIST pair manifest hash is computed from file contents and the config alone: the same files give
the same, pinned hash in any folder, on any machine (no paths, no platform, no clock)."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import soundfile as sf

from dan.data.avmnist import build_avmnist

# sha256 of the pair manifest of the fixed input written by _write_root below. A change here means the same
# files would pair differently on this machine than on others: a reproducibility break, not a test to update.
PINNED = "02c3015ad36ff7e25d56c4a758e97ea867d7409da3c7f44717dedc6de5b11391"
SPLITS = {
    "train": {"mnist": "test[:30]", "fsdd": "train"},
    "test": {"mnist": "test[30:]", "fsdd": "test"},
}


def _idx(path: Path, magic_ndim: int, dims: list[int], body: bytes) -> None:
    header = struct.pack(">I", 0x0800 | magic_ndim) + b"".join(struct.pack(">I", d) for d in dims)
    path.write_bytes(gzip.compress(header + body, mtime=0))


def _write_root(root: Path) -> Path:
    """40 MNIST-format images (pixel values from a formula) and 60 FSDD-named tones, digits 0-9."""
    mnist = root / "mnist"
    mnist.mkdir(parents=True)
    n = 40
    pixels = bytes((i * 7 + j * 13) % 256 for i in range(n) for j in range(28 * 28))
    _idx(mnist / "t10k-images-idx3-ubyte.gz", 3, [n, 28, 28], pixels)
    _idx(mnist / "t10k-labels-idx1-ubyte.gz", 1, [n], bytes(i % 10 for i in range(n)))
    wavs = root / "fsdd" / "recordings"
    wavs.mkdir(parents=True)
    t = np.arange(4000) / 8000
    for digit in range(10):
        for speaker, index in (("ann", 0), ("ann", 6), ("bob", 1), ("bob", 7), ("cat", 2), ("cat", 8)):
            tone = 0.3 * np.sin(2 * math.pi * (200 + 50 * digit + 7 * index) * t)
            sf.write(wavs / f"{digit}_{speaker}_{index}.wav", tone.astype(np.float32), 8000, subtype="PCM_16")
    return root


def _hash(root: Path, cache: Path) -> str:
    splits = build_avmnist({"root": str(root), "cache_dir": str(cache), "splits": SPLITS, "use_cache": False})
    assert len(splits["train"]) == 30 and len(splits["test"]) == 10
    return splits["train"].manifest_hash


def test_manifest_hash_is_pinned_and_independent_of_paths(tmp_path: Path) -> None:
    first = _hash(_write_root(tmp_path / "a"), tmp_path / "cache-a")
    elsewhere = _hash(_write_root(tmp_path / "some" / "other place"), tmp_path / "cache-b")
    assert first == elsewhere
    assert first == PINNED


def test_manifest_hash_changes_when_the_pairing_changes(tmp_path: Path) -> None:
    root = _write_root(tmp_path / "a")
    before = _hash(root, tmp_path / "c")
    changed = root / "fsdd" / "recordings" / "3_ann_6.wav"
    changed.rename(changed.with_name("3_dan_6.wav"))  # another speaker: another pairing
    assert _hash(root, tmp_path / "c") != before
